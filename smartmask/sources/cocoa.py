"""COCOA (Zhu et al. 2017, "Semantic Amodal Segmentation") → SourceImage.

Public schema: top-level `images` (COCO image records) and `annotations`, one per image, each with
`regions`: amodal `segmentation` (a flat polygon), `name` (free text, trailing spaces and typos included),
`isStuff`, `occlude_rate`, `order` (1 = front-most), and `visible_mask` / `invisible_mask` (RLE) only when
the region is occluded. `depth_constraint` is "a-b,…" over 1-based region indices: region a occludes b.

A region without `visible_mask` is unoccluded, so its visible mask is its amodal mask; we pass
`visible=None` and let validation use the amodal mask in its place.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from smartmask.sources.base import ParsedSource, SourceError, SourceRegion, image_records, reject


def _pairs(depth_constraint: Any, n: int) -> list[tuple[int, int, str]]:
    # Malformed tokens are skipped: the constraint string is auxiliary to `order`, and an image whose
    # order then rests on occlusion evidence records that in its `order_source`.
    out = []
    if not isinstance(depth_constraint, str):
        return out
    for tok in depth_constraint.split(","):
        a, sep, b = tok.strip().partition("-")
        if sep and a.isdigit() and b.isdigit() and 1 <= int(a) <= n and 1 <= int(b) <= n and a != b:
            out.append((int(a) - 1, int(b) - 1, "source:depth_constraint"))
    return out


def parse_cocoa(doc: Any, source: str) -> ParsedSource:
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc:
        raise SourceError(f"{source}: not a COCOA file (needs top-level 'images' and 'annotations')")
    counts: Counter = Counter()
    rejects: list[dict] = []
    images = image_records(source, doc["images"], counts, rejects)
    anns = doc["annotations"]
    if not isinstance(anns, list):
        raise SourceError(f"{source}: top-level 'annotations' must be a list")
    annotated: set[str] = set()
    for ann in anns:
        counts["annotation"] += 1
        if not isinstance(ann, dict) or not isinstance(ann.get("regions"), list):
            rejects.append(reject(source, "annotation", ann.get("id") if isinstance(ann, dict) else None,
                                  "malformed_record", "annotation needs a 'regions' list", ann))
            continue
        iid = str(ann.get("image_id"))
        regions = ann["regions"]
        counts["region"] += len(regions)
        why = None
        if iid not in images:
            why = ("unknown_image_id", f"annotation refers to image id {iid}, not in 'images'")
        elif iid in annotated:
            why = ("duplicate_annotation", f"image {iid} already has an annotation")
        if why:
            rejects.append(reject(source, "annotation", ann.get("id"), why[0], why[1], {"id": ann.get("id")},
                                  image_id=iid))
            for i, r in enumerate(regions):
                rejects.append(reject(source, "region", f"{ann.get('id')}:{i}", why[0], why[1], r, image_id=iid))
            continue
        annotated.add(iid)
        img = images[iid]
        for i, r in enumerate(regions):
            key = f"{ann.get('id')}:{i}"
            if not isinstance(r, dict):
                img.regions.append(SourceRegion(key=key, label=None, segmentation=None, raw=r,
                                                defect=("malformed_record", "region is not an object")))
                continue
            img.regions.append(SourceRegion(
                key=key, label=r.get("name"), segmentation=r.get("segmentation"), visible=r.get("visible_mask"),
                is_stuff=bool(r.get("isStuff", 0)), rank=r.get("order"), raw=r,
            ))
        img.pairs = _pairs(ann.get("depth_constraint"), len(regions))
        img.order_kind = "source:order"
    return ParsedSource(source=source, images=list(images.values()), rejects=rejects, counts_in=dict(counts),
                        notes=_notes(doc.get("info")))


def _notes(info: Any) -> tuple[str, ...]:
    """The synthetic world's context rules from `info.context_rules` (strings, at most 20 of 500 characters);
    anything else there is ignored: `info` is free-form in other people's files."""
    rules = info.get("context_rules") if isinstance(info, dict) else None
    if not isinstance(rules, list):
        return ()
    return tuple(r[:500] for r in rules[:20] if isinstance(r, str) and r)
