"""The record shape every adapter produces, and the reject row for what an adapter cannot restructure.

An adapter only restructures: it never decodes masks or opens images. Anything it cannot even restructure
(a record that is not an object, an unknown image id, a duplicate id) becomes a reject row here, with a
stable reason code; everything else is judged by `smartmask.validate` so all formats share one set of rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from smartmask.lake.schemas import REJECTS


class SourceError(ValueError):
    """The whole source is unusable (missing file, not JSON, wrong top-level shape). CLI exit 2."""


@dataclass(slots=True)
class SourceRegion:
    key: str  # unique within the source: the annotation id, or "<ann id>:<index>" for COCOA regions
    label: Any  # raw label as the source spells it
    segmentation: Any  # amodal: flat polygon, list of polygons, or RLE (compressed or not)
    visible: Any = None  # visible (inmodal) segmentation when the source has one
    is_stuff: bool = False
    rank: Any = None  # COCOA `order` (1 = front-most); None when the source has no total order
    raw: Any = None  # the source record, for reject rows
    defect: tuple[str, str] | None = None  # (reason, detail) the adapter already found; validation rejects it


@dataclass(slots=True)
class SourceImage:
    image_id: str
    file_name: Any
    width: Any
    height: Any
    caption: str | None = None
    regions: list[SourceRegion] = field(default_factory=list)
    # Source pairwise order: (front_index, back_index, provenance) into `regions`.
    pairs: list[tuple[int, int, str]] = field(default_factory=list)
    order_kind: str = "none"  # how `rank` / `pairs` were obtained, e.g. "source:order"
    raw: Any = None


@dataclass(slots=True)
class ParsedSource:
    source: str  # "cocoa:/abs/path.json"
    images: list[SourceImage]
    rejects: list[dict]
    counts_in: dict[str, int]  # record kind → records seen in the input
    sha256: str = ""  # of the annotation file's bytes


def reject(source: str, kind: str, key: Any, reason: str, detail: str = "", record: Any = None,
           image_id: Any = None, stage: str = "parse") -> dict:
    """One reject row (schema: `smartmask.lake.schemas.REJECTS`)."""
    try:
        rec = json.dumps(record, default=str)[:2000] if record is not None else None
    except (TypeError, ValueError):
        rec = repr(record)[:2000]
    row = {
        "source": source, "record_kind": kind, "record_key": None if key is None else str(key),
        "image_id": None if image_id is None else str(image_id), "stage": stage, "reason": reason,
        "detail": detail[:500], "record": rec,
    }
    assert set(row) == set(REJECTS.names)
    return row


def image_records(source: str, images: Any, counts: dict, rejects: list) -> dict[str, SourceImage]:
    """COCO-style `images` list → {image_id: SourceImage}; shared by COCOA and KINS."""
    if not isinstance(images, list):
        raise SourceError(f"{source}: top-level 'images' must be a list")
    out: dict[str, SourceImage] = {}
    for rec in images:
        counts["image"] += 1
        if not isinstance(rec, dict) or rec.get("id") is None or isinstance(rec.get("id"), (dict, list)):
            rejects.append(reject(source, "image", None, "malformed_record", "image record needs an 'id'", rec))
            continue
        iid = str(rec["id"])
        if iid in out:
            rejects.append(reject(source, "image", iid, "duplicate_image_id", f"image id {iid} seen before", rec,
                                  image_id=iid))
            continue
        out[iid] = SourceImage(image_id=iid, file_name=rec.get("file_name"), width=rec.get("width"),
                               height=rec.get("height"), caption=rec.get("caption"), raw=rec)
    return out
