"""Limits on hostile annotation input, all enforced without recursion.

An annotation file comes from outside, so before any parser sees it we bound what can blow up later:

- `MAX_ANNOTATION_BYTES`: a file larger than this is refused before it is read (a SourceError). Parsed JSON
  takes several times its size in memory; beyond this, convert the source to JSONL shards.
- `MAX_JSON_DEPTH`: nesting of arrays/objects. orjson stops at 1024 levels, but its stdlib fallback, `repr`,
  `json.dumps` and numpy all recurse, and legitimate amodal annotations nest fewer than 10 levels. The depth is
  measured by a numpy scan of the raw bytes (`json_depth`), never by walking parsed objects.
- `bounded_json`: the reject row's `record` text, rendered by an explicit stack and stopped at a character
  budget, so a deep or huge record costs neither a RecursionError nor a multi-GB string.
- `loads`: orjson, else stdlib json (NaN/Infinity tokens, integers beyond 64 bits); lone UTF-16 surrogates,
  which only that fallback lets through and which no Parquet string column accepts, become U+FFFD, the same
  policy as undecodable bytes in JSONL.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

MAX_ANNOTATION_BYTES = 4 * 1024**3
MAX_JSON_DEPTH = 128

_CHUNK = 1 << 22  # bytes per numpy pass: bounds the scan's scratch memory to tens of MB on any file size
_STEP = np.zeros(256, np.int8)  # +1 for [ and {, -1 for ] and }
_STEP[[0x5B, 0x7B]], _STEP[[0x5D, 0x7D]] = 1, -1
_QUOTE, _BACKSLASH = 0x22, 0x5C
# A surrogate can only come from a \uD800-\uDFFF escape or (stdlib json decodes bytes with "surrogatepass")
# from the raw UTF-8 bytes ED A0..BF; the repair walk runs only when one of these is present.
_SURROGATE_SRC = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE_SRC_STR = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_depth(data: bytes | memoryview, limit: int | None = None) -> tuple[int, int]:
    """(deepest nesting of arrays/objects, byte offset where `limit` was first exceeded, or -1).

    Brackets inside strings do not count: a quote toggles "inside a string" unless an odd run of backslashes
    precedes it. State (depth, inside-string, trailing backslashes) carries across chunks. Stops early once the
    limit is exceeded. Malformed JSON may give a meaningless depth; the parser rejects it afterwards anyway.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    depth = deepest = 0
    in_str = 0
    carry = 0  # backslashes that end the previous chunk
    for start in range(0, buf.size, _CHUNK):
        c = buf[start : start + _CHUNK]
        q = np.flatnonzero(c == _QUOTE)
        is_bs = c == _BACKSLASH
        run_starts = None
        if carry or is_bs.any():  # rare outside strings with escapes: only then find backslash runs
            run_starts = np.flatnonzero(np.diff(is_bs.view(np.int8), prepend=np.int8(0)) == 1)
            cand = q[q > 0]
            cand = cand[is_bs[cand - 1]]  # quotes right after a backslash
            s = run_starts[np.searchsorted(run_starts, cand - 1, side="right") - 1]
            escaped = cand[((cand - s + np.where(s == 0, carry, 0)) & 1) == 1]
            if carry & 1 and q.size and q[0] == 0:
                escaped = np.concatenate(([0], escaped))
            q = np.setdiff1d(q, escaped, assume_unique=True)
        step_all = _STEP[c]
        br = np.flatnonzero(step_all)
        if br.size:
            br = br[((np.searchsorted(q, br) + in_str) & 1) == 0]  # outside strings
            d = depth + np.cumsum(step_all[br], dtype=np.int64)
            if d.size:
                top = int(d.max())
                if limit is not None and top > limit:
                    return top, start + int(br[np.argmax(d > limit)])
                deepest, depth = max(deepest, top), int(d[-1])
        in_str ^= q.size & 1
        if c[-1] == _BACKSLASH:
            last = int(run_starts[-1])
            carry = c.size - last + (carry if last == 0 else 0)
        else:
            carry = 0
    return deepest, -1


def too_deep(text: str, limit: int | None = None) -> bool:
    """Whether one JSON text (a JSONL line) nests deeper than the limit; counting brackets first keeps the
    common case to two `str.count` calls."""
    limit = MAX_JSON_DEPTH if limit is None else limit
    if text.count("[") + text.count("{") <= limit:
        return False
    return json_depth(text.encode("utf-8", "surrogatepass"), limit)[1] >= 0


def loads(data: bytes | str) -> Any:
    """Parse one JSON text. Raises ValueError (JSONDecodeError, or the int-digits limit) when it does not parse.

    The caller has checked the depth first: the stdlib fallback recurses."""
    import orjson  # ~3x faster than json on large annotation files (a Prefect dependency already)

    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    doc = json.loads(data)  # also accepts the NaN / Infinity tokens that Python's json.dump writes
    pattern = _SURROGATE_SRC if isinstance(data, (bytes, bytearray, memoryview)) else _SURROGATE_SRC_STR
    if pattern.search(data):
        doc = _replace_surrogates(doc)
    return doc


def _fix(s: str) -> str:
    return _SURROGATE.sub("\ufffd", s) if not s.isascii() else s


def _replace_surrogates(doc: Any) -> Any:
    if isinstance(doc, str):
        return _fix(doc)
    stack = [doc] if isinstance(doc, (list, dict)) else []
    while stack:
        c = stack.pop()
        if isinstance(c, list):
            for i, v in enumerate(c):
                if isinstance(v, str):
                    c[i] = _fix(v)
                elif isinstance(v, (list, dict)):
                    stack.append(v)
            continue
        for k in list(c):
            v = c[k]
            if isinstance(v, str):
                c[k] = v = _fix(v)
            elif isinstance(v, (list, dict)):
                stack.append(v)
            if (nk := _fix(k)) != k:
                c[nk] = c.pop(k)
    return doc


class _Val:
    __slots__ = ("v",)

    def __init__(self, v: Any):
        self.v = v


def _pieces(v: list | tuple | dict):
    if isinstance(v, dict):
        yield "{"
        for i, (k, x) in enumerate(v.items()):
            yield (", " if i else "") + _scalar(k if isinstance(k, str) else str(k)) + ": "
            yield _Val(x)
        yield "}"
    else:
        yield "["
        for i, x in enumerate(v):
            if i:
                yield ", "
            yield _Val(x)
        yield "]"


def _scalar(v: Any, budget: int = 2000) -> str:
    if v is None or isinstance(v, (bool, float)):
        return json.dumps(v)  # null / true / false / NaN / Infinity, as json.dumps writes them
    if isinstance(v, int):
        try:
            return str(v)
        except ValueError:  # more digits than Python will print
            return '"<integer too long>"'
    return json.dumps((v if isinstance(v, str) else str(v))[:budget])  # cut before escaping: O(budget)


def bounded_json(value: Any, limit: int = 2000) -> str:
    """`json.dumps(value, default=str)` cut to `limit` characters, without recursion or building the whole text."""
    out: list[str] = []
    size = 0
    stack: list = [iter((_Val(value),))]
    while stack and size < limit:
        piece = next(stack[-1], None)
        if piece is None:
            stack.pop()
            continue
        if isinstance(piece, _Val):
            if isinstance(piece.v, (list, tuple, dict)):
                stack.append(_pieces(piece.v))
                continue
            piece = _scalar(piece.v, limit)
        out.append(piece)
        size += len(piece)
    return "".join(out)[:limit]
