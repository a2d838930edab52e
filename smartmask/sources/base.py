"""The record shape every adapter produces, and the reject row for what an adapter cannot restructure.

An adapter only restructures: it never decodes masks or opens images. Anything it cannot even restructure
(a record that is not an object, an unknown image id, a duplicate id) becomes a reject row here, with a
stable reason code; everything else is judged by `smartmask.validate` so all formats share one set of rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from smartmask.lake.schemas import REJECTS
from smartmask.sources.limits import bounded_json


class SourceError(ValueError):
    """The whole source is unusable (missing file, not JSON, wrong top-level shape). CLI exit 2."""


@dataclass(slots=True)
class SourceRegion:
    key: str  # unique within the source: the annotation id, or "<ann id>:<index>" for COCOA regions
    label: Any  # raw label as the source spells it
    segmentation: Any  # amodal: flat polygon, list of polygons, or RLE (compressed or not)
    visible: Any = None  # visible (inmodal) segmentation when the source has one
    # The occluded part, used only when `visible` is absent: visible = amodal minus invisible (amodal COCO).
    invisible: Any = None
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
    source: str  # "cocoa:/abs/path.json" (for an `auto:` spec, the kind it resolved to)
    images: list[SourceImage]
    rejects: list[dict]
    counts_in: dict[str, int]  # record kind → records seen in the input
    sha256: str = ""  # of the annotation file's bytes
    detected: str | None = None  # `auto:` only: the layout found, e.g. "kins (2020: a_segm/i_segm)"
    notes: tuple[str, ...] = ()  # what the source says of itself worth a card line (the synthetic world's rules)


def reject(source: str, kind: str, key: Any, reason: str, detail: str = "", record: Any = None,
           image_id: Any = None, stage: str = "parse") -> dict:
    """One reject row (schema: `smartmask.lake.schemas.REJECTS`)."""
    # Rendered by an explicit stack under a character budget: a record may be 5,000 levels deep or 1 GB long.
    rec = bounded_json(record, 2000) if record is not None else None
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


_NO_KEY = object()


def _key(v: Any) -> Any:
    """An id usable as a dict key: JSON scalars only (a list id would raise TypeError: unhashable)."""
    return v if isinstance(v, (str, int, float, bool)) or v is None else _NO_KEY


def categories(source: str, doc: dict) -> dict[Any, dict]:
    """COCO `categories` → {id: category record}; shared by KINS and amodal COCO."""
    cats = doc.get("categories")
    if cats is None:
        return {}
    if not isinstance(cats, list):
        raise SourceError(f"{source}: top-level 'categories' must be a list")
    return {c["id"]: c for c in cats if isinstance(c, dict) and isinstance(c.get("id"), (int, str))}


def instance_annotations(source: str, anns: list, images: dict[str, SourceImage], cats: dict, counts: dict,
                         rejects: list) -> Iterator[tuple[str, SourceImage, dict, dict]]:
    """COCO instance annotations (one region each) → (key, image, annotation, category), rejecting records
    without an id, duplicate ids, unknown images and unknown categories. Shared by KINS and amodal COCO."""
    seen: set[str] = set()
    for ann in anns:
        counts["region"] += 1
        if not isinstance(ann, dict) or ann.get("id") is None or isinstance(ann.get("id"), (dict, list)):
            rejects.append(reject(source, "region", None, "malformed_record", "annotation needs an 'id'", ann))
            continue
        key, iid = str(ann["id"]), str(ann.get("image_id"))
        if key in seen:
            rejects.append(reject(source, "region", key, "duplicate_region_id", f"annotation id {key} seen before",
                                  ann, image_id=iid))
            continue
        seen.add(key)
        if iid not in images:
            rejects.append(reject(source, "region", key, "unknown_image_id",
                                  f"annotation refers to image id {iid}, not in 'images'", ann, image_id=iid))
            continue
        cat = cats.get(_key(ann.get("category_id")))
        if cat is None:
            rejects.append(reject(source, "region", key, "unknown_category",
                                  f"category_id {bounded_json(ann.get('category_id'), 80)} not in 'categories'",
                                  ann, image_id=iid))
            continue
        yield key, images[iid], ann, cat
