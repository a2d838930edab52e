"""`load_source("KIND:FILE")`: read an annotation file within the input limits, detect its layout for `auto:`,
and dispatch to its adapter.

Kinds: `cocoa`, `kins` (original and 2020), `amodal-coco`, `jsonl`, and `auto`, which detects one of them from
the parsed content (`detect`) and records what it chose: the ParsedSource's `source` names the resolved kind
(`kins:/abs/path`, so `auto:` and the explicit kind give the same dataset version) and `detected` says which
layout was recognised, for the CLI to print.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from smartmask.sources import limits
from smartmask.sources.amodal_coco import MARKERS, parse_amodal_coco
from smartmask.sources.base import ParsedSource, SourceError
from smartmask.sources.cocoa import parse_cocoa
from smartmask.sources.jsonl import parse_jsonl
from smartmask.sources.kins import parse_kins

KINDS = ("auto", "cocoa", "kins", "amodal-coco", "jsonl")
_ADAPTERS = {"cocoa": parse_cocoa, "kins": parse_kins, "amodal-coco": parse_amodal_coco}
_DESCRIBE = {
    "cocoa": "cocoa (annotations with 'regions')",
    "kins-2020": "kins (2020: a_segm/i_segm)",
    "kins-original": "kins (original: segmentation/inmodal_seg)",
    "kins-both": "kins (original and 2020 records)",
    "amodal-coco": "amodal-coco (visible_mask/invisible_mask per annotation)",
    "jsonl": "jsonl (one JSON object per line with 'layers')",
}
_LOOKED_FOR = ("looked for a JSON object with 'images' and 'annotations' whose annotations have 'regions' (cocoa), "
               "'a_segm' (kins 2020), 'inmodal_seg' (kins original) or 'visible_mask'/'invisible_mask' "
               "(amodal-coco), or JSON lines with 'layers' (jsonl)")
_NONBLANK = re.compile(rb"\S")
_HEAD_LINES = 5  # JSONL detection looks at most this many leading lines for one that parses


def read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise SourceError(f"annotation file not found: {path}")
    size = path.stat().st_size
    if size > limits.MAX_ANNOTATION_BYTES:
        raise SourceError(f"annotation file is {size:,} bytes, over the {limits.MAX_ANNOTATION_BYTES:,}-byte limit "
                          f"(MAX_ANNOTATION_BYTES; split it into JSONL): {path}")
    return path.read_bytes()


def parse_json(data: bytes, path: Path) -> Any:
    """One JSON document, refused (SourceError) when it nests deeper than `limits.MAX_JSON_DEPTH`."""
    _, at = limits.json_depth(data, limits.MAX_JSON_DEPTH)
    if at >= 0:
        raise SourceError(f"annotation file nests deeper than {limits.MAX_JSON_DEPTH} levels (MAX_JSON_DEPTH; "
                          f"first at byte {at:,}): {path}")
    try:
        return limits.loads(data)
    except ValueError as e:  # JSONDecodeError, or an integer with more digits than Python converts
        msg = " ".join(str(e).split())[:200]
        raise SourceError(f"annotation file is not valid JSON: {path} ({e.__class__.__name__}: {msg})") from None


def _jsonl_head(data: bytes) -> Any:
    """The first of the leading non-blank lines that parses within the depth limit, when the file has more than
    one line; else None."""
    pos, seen = 0, 0
    while seen < _HEAD_LINES and (m := _NONBLANK.search(data, pos)):
        end = data.find(b"\n", m.start())
        if seen == 0 and (end < 0 or _NONBLANK.search(data, end + 1) is None):
            return None  # a single line: a JSON document, or a one-line JSONL (the caller parses it whole, once)
        end = len(data) if end < 0 else end
        line = data[m.start() : end]
        pos, seen = end + 1, seen + 1
        if limits.json_depth(line, limits.MAX_JSON_DEPTH)[1] >= 0:
            continue
        try:
            return limits.loads(line)
        except ValueError:  # a pretty-printed JSON's first lines ("{", '"images": [') or a bad JSONL line
            continue
    return None


def detect(data: bytes, path: Path) -> tuple[str, str, Any]:
    """(kind, description, parsed document or None for jsonl) from the content alone. SourceError when no
    layout or more than one matches, saying what was looked for."""
    head = _jsonl_head(data)
    if isinstance(head, dict) and "layers" in head:
        return "jsonl", _DESCRIBE["jsonl"], None
    doc = parse_json(data, path)
    if isinstance(doc, dict) and "layers" in doc and "annotations" not in doc:
        return "jsonl", _DESCRIBE["jsonl"], None
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list) or "images" not in doc:
        raise SourceError(f"cannot detect the layout of {path}: {_LOOKED_FOR}")
    found: set[str] = set()
    for ann in doc["annotations"]:
        if not isinstance(ann, dict):
            continue
        if "regions" in ann:
            found.add("cocoa")
            continue
        if "a_segm" in ann:
            found.add("kins-2020")
        if "inmodal_seg" in ann:
            found.add("kins-original")
        if any(k in ann for k in MARKERS):
            found.add("amodal-coco")
    if {"kins-2020", "kins-original"} <= found:  # one adapter reads both, record by record
        found -= {"kins-2020", "kins-original"}
        found.add("kins-both")
    if len(found) == 1:
        (which,) = found
        return which.split("-")[0] if which.startswith("kins") else which, _DESCRIBE[which], doc
    if not found:
        raise SourceError(f"cannot detect the layout of {path}: {_LOOKED_FOR}")
    raise SourceError(f"ambiguous layout of {path}: annotations look like "
                      f"{' and '.join(_DESCRIBE[k] for k in sorted(found))}; name the kind instead of auto:")


_LAST: tuple[tuple, ParsedSource] | None = None


def load_source(spec: str) -> ParsedSource:
    """`kind:path` → ParsedSource. Raises SourceError for an unusable spec or file.

    The last result is kept (keyed on path, size and mtime), so the CLI's fail-fast check and the flow's plan
    parse a multi-GB annotation file once, not twice.
    """
    global _LAST
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise SourceError(f"source must look like KIND:FILE with KIND one of {', '.join(KINDS)}, got {spec!r}")
    if kind not in KINDS:
        raise SourceError(f"unknown source kind {kind!r}: expected {', '.join(KINDS)}")
    p = Path(path).expanduser().resolve()
    st = p.stat() if p.is_file() else None
    key = (kind, str(p), st and st.st_size, st and st.st_mtime_ns, limits.MAX_ANNOTATION_BYTES)
    if _LAST is not None and _LAST[0] == key:
        return _LAST[1]
    data = read_bytes(p)
    detected = None
    if kind == "auto":
        kind, detected, doc = detect(data, p)
    elif kind != "jsonl":
        doc = parse_json(data, p)
    label = f"{kind}:{p}"
    parsed = parse_jsonl(data, label) if kind == "jsonl" else _ADAPTERS[kind](doc, label)
    parsed.detected = detected
    parsed.sha256 = hashlib.sha256(data).hexdigest()
    _LAST = (key, parsed)
    return parsed
