"""The LLaVA planner's text: the prompts of both training stages, the box answer format, its strict parser.

A box answer is the next object's box B_{k+1}, normalised to the image (x / width, y / height), as
`[x0, y0, x1, y1]` with 3 decimals, e.g. `[0.125, 0.400, 0.560, 0.975]`. `parse_box` accepts exactly four
numbers in [0, 1] with x0 < x1 and y0 < y1, in brackets, and nothing else (None otherwise, never an
exception): a model's answer either is a box or it is resampled (`smartmask.planner.llava`).

The grammar of `format_box`'s output is also what constrained decoding follows: `viable_prefix(text)` says
whether `text` can still be completed to a valid answer (right characters in the right places, and numbers
that can still end with x0 < x1 and y0 < y1), so a decoder that only ever emits tokens keeping it true cannot
produce anything `parse_box` refuses, whatever the weights.

Prompts follow llava-1.5's chat format, `USER: <image>\\n{question} ASSISTANT:`; the answer follows after one
space. Stage 1 (feature alignment, paper Eq. 6) asks which labels the layout S_k shows; stage 2 (instruction
tuning, Eq. 7) asks for the box of object T_obj given S_k and the caption T_context.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

IMAGE_TOKEN = "<image>"
DECIMALS = 3
_SCALE = 10**DECIMALS
# The exact shape `format_box` writes: D a digit. Constrained decoding walks it character by character.
TEMPLATE = "[D.DDD, D.DDD, D.DDD, D.DDD]"
_NUMBER_STARTS = tuple(1 + 7 * i for i in range(4))  # where each number's first digit sits in TEMPLATE
_DIGITS = frozenset("0123456789")
# What parse_box reads: decimal numbers only (no sign, exponent, nan or inf), commas, optional spaces.
_NUM = r"(\d+(?:\.\d+)?)"
_BOX_RE = re.compile(rf"\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]")
LABELS_PREFIX = "labels:"
NO_LABELS = "nothing"


# ---- the box answer ----------------------------------------------------------------------------------------


def format_box(box: Sequence[float]) -> str:
    """`box` (x0, y0, x1, y1) normalised to [0, 1] as the answer text. Values are clipped to [0, 1] and
    rounded to 3 decimals; a side that rounding would make empty is widened by 0.001, so the text always
    parses."""
    if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
        raise ValueError(f"a box needs four finite numbers, got {box!r}")
    x0, y0, x1, y1 = (min(max(round(float(v) * _SCALE), 0), _SCALE) for v in box)
    x0, x1 = _nonempty(*sorted((x0, x1)))
    y0, y1 = _nonempty(*sorted((y0, y1)))
    return "[" + ", ".join(f"{v // _SCALE}.{v % _SCALE:03d}" for v in (x0, y0, x1, y1)) + "]"


def _nonempty(lo: int, hi: int) -> tuple[int, int]:
    if hi > lo:
        return lo, hi
    return (lo, lo + 1) if lo < _SCALE else (lo - 1, lo)


def parse_box(text: object) -> tuple[float, float, float, float] | None:
    """The normalised box in `text`, or None. Strict: surrounding whitespace aside, `text` must be exactly
    `[a, b, c, d]` with four decimal numbers in [0, 1], a < c and b < d. Never raises."""
    if not isinstance(text, str):
        return None
    m = _BOX_RE.fullmatch(text.strip())
    if m is None:
        return None
    try:
        x0, y0, x1, y1 = (float(g) for g in m.groups())
    except ValueError:  # pragma: no cover - the regex admits only decimal literals
        return None
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)) or not (x0 < x1 and y0 < y1):
        return None
    return x0, y0, x1, y1


def _interval(number: str) -> tuple[int, int]:
    """The values (in thousandths, within [0, 1000]) that a number written so far as `number` ("0", "0.4",
    ...) can still take; (1, 0) when none."""
    digits = number.replace(".", "")
    lo = int((digits + "0000")[:4])
    hi = min(int((digits + "9999")[:4]), _SCALE)
    return (lo, hi) if lo <= hi else (1, 0)


def viable_prefix(text: str) -> bool:
    """True when `text` (optionally after one leading space) is a prefix of some answer `format_box` could
    write for a valid box: each character as TEMPLATE says, each number still within [0, 1], and x0 < x1 and
    y0 < y1 still reachable."""
    body = text[1:] if text.startswith(" ") else text
    if len(body) > len(TEMPLATE):
        return False
    for ch, want in zip(body, TEMPLATE, strict=False):
        if (want == "D" and ch not in _DIGITS) or (want != "D" and ch != want):
            return False
    bounds = []
    for start in _NUMBER_STARTS:
        lo, hi = _interval(body[start : start + 5])
        if lo > hi:
            return False
        bounds.append((lo, hi))
    (x0, _), (y0, _), (_, x1), (_, y1) = bounds
    return x0 < x1 and y0 < y1  # the smallest x0 still below the largest x1, same for y


def is_complete(text: str) -> bool:
    """True when `text` is a whole answer in the TEMPLATE shape (then `parse_box` accepts it)."""
    return len(text.removeprefix(" ")) == len(TEMPLATE) and viable_prefix(text)


# ---- prompts -----------------------------------------------------------------------------------------------


def chat(question: str) -> str:
    """llava-1.5's single-turn format; the image's placeholder comes first, as that model was trained."""
    return f"USER: {IMAGE_TOKEN}\n{question} ASSISTANT:"


def _clean(text: str) -> str:
    """One line, no stray placeholder: a caption or label must not smuggle in an image token or a new turn."""
    return " ".join(str(text).replace(IMAGE_TOKEN, " ").split())


def align_prompt() -> str:
    """Stage 1 (Eq. 6): name what the layout image shows."""
    return chat("which objects are painted in this layout?")


def align_answer(labels: Iterable[str]) -> str:
    """`labels: sky, grass, dog`: the labels visible in S_k, back to front, each once."""
    names = [_clean(lab) for lab in dict.fromkeys(labels) if _clean(lab)]
    return f"{LABELS_PREFIX} {', '.join(names) if names else NO_LABELS}"


def instruct_prompt(obj: str, context: str) -> str:
    """Stage 2 (Eq. 7) and inference: where the next object T_obj goes, given S_k and caption T_context."""
    caption = _clean(context)
    scene = f"caption: {caption}. " if caption else ""
    return chat(f"{scene}where should a {_clean(obj)} go next? answer as box [x0, y0, x1, y1], normalised.")
