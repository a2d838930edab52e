"""The LLaVA planner (paper §3.3, A.1): layout S_k as an image, T_obj and caption as text → boxes as text.

    planner = LlavaPlanner.load("1a2b3c4d5e6f7a8b", lake=lake)    # a registered version, a folder, a hub id
    boxes = planner.propose(scene, "dog", "a park with a bench", n=4, seed=0)

`propose` paints S_k exactly as SmartMask's training does (`smartmask.inference.layout.layout_image`, with the
vocabulary the planner was trained on), asks `box_text.instruct_prompt(obj, context)` once per candidate with
its own sampling seed, and parses each answer strictly (`box_text.parse_box`).

Decoding is constrained to the box grammar (`box_text.viable_prefix`): at every step only tokens that keep the
answer a prefix of a valid box may be sampled, and end-of-text only once it is complete, so even a random
model answers boxes that parse. A malformed answer can still happen (a tokenizer that cannot spell the grammar
turns the constraint off; a subclass may answer differently); it is counted (`malformed`, `last_stats`) and
resampled with the next seed, at most `tries_per_box` × n answers per call; only when none parsed is it a
`PlannerError`.

Candidates are ranked by the model's mean log-probability of the answer's tokens (teacher-forced, without the
constraint: the model's own confidence in that box).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from smartmask.conditioning.vocabulary import Vocabulary
from smartmask.inference.layout import SceneLayout, layout_image
from smartmask.planner.base import BoxProposal, PlannerError, clip_box
from smartmask.planner.box_text import TEMPLATE, instruct_prompt, is_complete, parse_box, viable_prefix
from smartmask.planner.store import planner_dir, read_planner_meta
from smartmask.pretrained import ModelNotFound, load_pretrained, model_revision

log = logging.getLogger(__name__)
_BOX_CHARS = frozenset("0123456789.,[] ")
IGNORE = -100  # label of tokens that carry no loss (prompt, padding)


@dataclass(frozen=True, kw_only=True, slots=True)
class Encoded:
    """One prompt (+ answer) as the model reads it: token ids with the image placeholder expanded, how many of
    them are the prompt, and the image's pixel values."""

    ids: list[int]
    n_prompt: int
    pixel_values: torch.Tensor  # (3, H, W)


def encode(processor, image: Image.Image, prompt: str, answer: str | None, *, eos: bool) -> Encoded:
    """`prompt` then ` answer` (and end-of-text) tokenized the way generation sees them: the answer's tokens
    are those of the whole text after the prompt's, so a tokenizer that merges a space into the next token
    (Llama's `▁[`) gives the tokens the model itself would emit after the prompt."""
    p = processor(images=[image], text=[prompt], return_tensors="pt")
    prompt_ids = p["input_ids"][0].tolist()
    if answer is None:
        return Encoded(ids=prompt_ids, n_prompt=len(prompt_ids), pixel_values=p["pixel_values"][0])
    tok = processor.tokenizer
    n_img = prompt_ids.count(processor.image_token_id)
    full = prompt.replace(processor.image_token, processor.image_token * n_img) + " " + answer
    ids = tok(full)["input_ids"]
    if ids[: len(prompt_ids)] != prompt_ids:  # the boundary moved: tokenize the answer on its own instead
        ids = prompt_ids + tok(" " + answer, add_special_tokens=False)["input_ids"]
    if eos:
        ids = ids + [tok.eos_token_id]
    return Encoded(ids=ids, n_prompt=len(prompt_ids), pixel_values=p["pixel_values"][0])


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels only on answer tokens (prompt and padding are IGNORE): the loss of both
    training stages, and the answer score."""
    width = max(len(e.ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for b, e in enumerate(items):
        ids[b, : len(e.ids)] = torch.tensor(e.ids)
        labels[b, e.n_prompt : len(e.ids)] = torch.tensor(e.ids[e.n_prompt :])
        mask[b, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "pixel_values": torch.stack([e.pixel_values for e in items])}


def processor_resolution(processor) -> int:
    """The side of the square image the vision tower sees: S_k is painted at it, so no resize changes it."""
    ip = processor.image_processor
    crop = getattr(ip, "crop_size", None) or {}
    size = getattr(ip, "size", None) or {}
    return int(crop.get("height") or size.get("height") or size.get("shortest_edge") or 336)


def box_pieces(tokenizer) -> dict[int, str]:
    """Token id → the text it adds when decoded after other text, for every token made only of box characters.

    Read by decoding after an anchor token (not from the token's name): `▁0`, `Ġ0` and `0` all come out
    right."""
    special = set(tokenizer.all_special_ids)
    anchor = tokenizer.encode("0", add_special_tokens=False)
    base = tokenizer.decode(anchor)
    names = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    out: dict[int, str] = {}
    for i, name in enumerate(names):
        rough = (name or "").replace("\u2581", " ").replace("\u0120", " ")
        if i in special or not rough or not set(rough) <= _BOX_CHARS:
            continue
        text = tokenizer.decode(anchor + [i])
        piece = text[len(base):] if text.startswith(base) else ""
        if piece and set(piece) <= _BOX_CHARS:
            out[i] = piece
    # The grammar needs every character of the template as a token of its own; else it could dead-end.
    singles = {p for p in out.values() if len(p) == 1}
    return out if set(TEMPLATE.replace("D", "0123456789")) <= singles else {}


class BoxConstraint:
    """A `generate` logits processor: only tokens keeping the answer a viable box prefix, then end-of-text."""

    def __init__(self, pieces: dict[int, str], eos_id: int, prompt_len: int):
        self.pieces, self.eos_id, self.prompt_len = pieces, eos_id, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, float("-inf"))
        for b in range(input_ids.shape[0]):
            text = "".join(self.pieces.get(int(t), "\x00") for t in input_ids[b, self.prompt_len :])
            allowed = ([] if is_complete(text) else
                       [i for i, p in self.pieces.items() if viable_prefix(text + p)])
            mask[b, allowed or [self.eos_id]] = 0.0  # a dead end (cannot happen) just ends a malformed answer
        return scores + mask


def _source_dir(source: str, lake: Path | None) -> tuple[str, str, Path | None]:
    """(what to load, planner id, its folder if local) for a version in `lake`, a folder or a hub id."""
    if lake is not None:
        d = planner_dir(lake, source)
        if (d / "lineage.json").is_file():
            return str(d), f"llava:{source}", d
    local = Path(source).expanduser()
    if local.is_dir():
        return str(local), f"llava:{local.resolve()}@{model_revision(local)}", local
    return source, f"llava:{source}@{model_revision(source)}", None


class LlavaPlanner:
    """`Planner` backed by a `LlavaForConditionalGeneration`. `malformed` counts unparseable answers since
    load; `last_stats` describes the last `propose` call (answers asked, malformed, duplicates)."""

    tries_per_box = 4
    max_new_tokens = len(TEMPLATE) + 8
    temperature = 1.0

    def __init__(self, model, processor, *, planner_id: str, vocabulary: Vocabulary | None, resolution: int,
                 constrained: bool = True):
        self.model, self.processor, self.id = model.eval(), processor, planner_id
        self.vocabulary, self.resolution = vocabulary, int(resolution)
        tok = processor.tokenizer
        self.eos_id = tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        self.pieces = box_pieces(tok) if constrained and self.eos_id is not None else {}
        if constrained and not self.pieces:
            log.warning("%s: its tokenizer cannot spell the box grammar; decoding is unconstrained",
                        planner_id)
        self.malformed = 0
        self.last_stats: dict = {}

    @classmethod
    def load(cls, source: str, lake: Path | None = None, device: str | None = None) -> LlavaPlanner:
        """From a registered planner version in `lake`, a local directory or a hub id (through
        `load_pretrained`: safetensors only, offline-aware). Anything that does not load is a one-line
        `PlannerError`."""
        from transformers import LlavaForConditionalGeneration, LlavaProcessor

        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        try:
            target, pid, folder = _source_dir(str(source), lake)
            model = load_pretrained(LlavaForConditionalGeneration, target, dtype=dtype).to(dev)
            processor = load_pretrained(LlavaProcessor, target)
        except ModelNotFound as e:
            where = f"a planner version in {lake}, " if lake is not None else ""
            raise PlannerError(f"llava planner {source!r} is not {where}a directory or an available hub id: "
                               f"{e}") from None
        meta = read_planner_meta(folder) if folder is not None else {}
        vocab_file = folder / "vocabulary.parquet" if folder is not None else None
        vocab = Vocabulary.read(vocab_file) if vocab_file is not None and vocab_file.is_file() else None
        resolution = meta.get("resolution") or processor_resolution(processor)
        return cls(model, processor, planner_id=pid, vocabulary=vocab, resolution=int(resolution))

    # -- the three steps: paint, answer, score

    def paint(self, scene: SceneLayout) -> Image.Image:
        """S_k as the model sees it. Labels outside the planner's vocabulary are painted grey ("unknown"); a
        planner without a vocabulary (a base model) colours the scene's own labels with the standard
        palette."""
        vocab = self.vocabulary or Vocabulary.build((r.label, r.is_stuff) for r in scene.regions
                                                    if not r.is_unknown)
        rgb = layout_image(scene.restricted_to(vocab), vocab, self.resolution)
        return Image.fromarray(np.round(rgb * 255.0).astype(np.uint8))

    def answer(self, image: Image.Image, prompt: str, seed: int) -> str:
        """One sampled answer (the text after the prompt), from `seed` alone; the caller's RNG is kept."""
        dev = self.model.device
        enc = self.processor(images=[image], text=[prompt], return_tensors="pt").to(dev)
        enc["pixel_values"] = enc["pixel_values"].to(self.model.dtype)
        n_prompt = enc["input_ids"].shape[1]
        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": True, "temperature": self.temperature,
                  "top_k": 0, "top_p": 1.0, "pad_token_id": self.pad_id, "eos_token_id": self.eos_id}
        if self.pieces:
            from transformers import LogitsProcessorList

            constraint = BoxConstraint(self.pieces, self.eos_id, n_prompt)
            kwargs["logits_processor"] = LogitsProcessorList([constraint])
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(seed)
            out = self.model.generate(**enc, **kwargs)
        return self.processor.tokenizer.decode(out[0, n_prompt:], skip_special_tokens=True)

    def score_answers(self, image: Image.Image, prompt: str, answers: list[str]) -> list[float]:
        """Mean log-probability of each answer's tokens given image and prompt (teacher-forced, one batch)."""
        items = [encode(self.processor, image, prompt, a.strip(), eos=False) for a in answers]
        batch = {k: v.to(self.model.device) for k, v in collate(items, self.pad_id).items()}
        labels = batch.pop("labels")
        batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            logits = self.model(**batch).logits[:, :-1].float()
        target = labels[:, 1:]
        keep = target != IGNORE
        logp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
        return ((logp * keep).sum(1) / keep.sum(1).clamp(min=1)).tolist()

    # -- the Planner protocol

    def propose(self, scene: SceneLayout, obj: str, context: str, *, n: int = 4,
                seed: int = 0) -> list[BoxProposal]:
        """Up to `n` distinct boxes in the scene's pixels, best first. Answer j uses seed + j; an unparseable
        or repeated answer is counted and replaced by the next seed, at most `tries_per_box` × n answers in
        all."""
        if n < 1:
            raise PlannerError(f"n must be >= 1, got {n}")
        image, prompt = self.paint(scene), instruct_prompt(obj, context)
        found: dict[tuple, str] = {}
        asked = malformed = repeated = 0
        last = ""
        while len(found) < n and asked < self.tries_per_box * n:
            last = self.answer(image, prompt, seed + asked)
            asked += 1
            box = parse_box(last)
            if box is None:
                malformed += 1
            elif box in found:
                repeated += 1
            else:
                found[box] = last
        self.malformed += malformed
        self.last_stats = {"answers": asked, "malformed": malformed, "duplicates": repeated,
                           "boxes": len(found)}
        if not found:
            shown = " ".join(last.split())[:80]
            raise PlannerError(f"{self.id}: no parseable box in {asked} answers ({malformed} malformed); "
                               f"last answer {shown!r}")
        scores = self.score_answers(image, prompt, list(found.values()))
        W, H = scene.width, scene.height
        ranked = sorted(zip(found, scores, strict=True), key=lambda bs: -bs[1])
        return [BoxProposal(box=clip_box((x0 * W, y0 * H, x1 * W, y1 * H), W, H), score=float(s),
                            planner=self.id) for (x0, y0, x1, y1), s in ranked]
