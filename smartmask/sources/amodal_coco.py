"""Flat amodal COCO (COCOA-cls, D2S amodal, AISFormer-style exports) → SourceImage.

The layout is COCO instance segmentation with the amodal mask in `segmentation`: top-level `images`,
`categories` and `annotations`, one annotation per instance with

    segmentation    the AMODAL mask: polygon(s) or RLE
    visible_mask    the visible part: polygon(s) or RLE; may be absent or null when the instance is unoccluded
    invisible_mask  the occluded part: polygon(s) or RLE; may be absent or null
    category_id, bbox, area, iscrowd, image_id, id

There is no depth order, so order is inferred from occlusion evidence like KINS-original (order_kind "none").
Without `visible_mask`, the region passes `invisible_mask` on and validation takes visible = amodal minus
invisible (an absent or empty invisible mask: visible = amodal, i.e. unoccluded). A category with `isthing: 0`
(panoptic-style categories) is stuff. `iscrowd: 1` marks a group of instances with one mask: it has no single
amodal extent or depth, so it is rejected (`crowd_region`) rather than ingested as one layer.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from smartmask.sources.base import (
    ParsedSource,
    SourceError,
    SourceRegion,
    categories,
    image_records,
    instance_annotations,
    reject,
)

# Keys that mark an annotation as amodal COCO rather than plain COCO (see `smartmask.sources.load.detect`).
MARKERS = ("visible_mask", "invisible_mask")


def parse_amodal_coco(doc: Any, source: str) -> ParsedSource:
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list) or "images" not in doc:
        raise SourceError(f"{source}: not an amodal COCO file (needs top-level 'images' and 'annotations' lists)")
    counts: Counter = Counter()
    rejects: list[dict] = []
    images = image_records(source, doc["images"], counts, rejects)
    cats = categories(source, doc)
    for key, img, ann, cat in instance_annotations(source, doc["annotations"], images, cats, counts, rejects):
        if ann.get("iscrowd") in (1, True):
            rejects.append(reject(source, "region", key, "crowd_region",
                                  "iscrowd annotations group several instances under one mask", ann,
                                  image_id=img.image_id))
            continue
        visible = ann.get("visible_mask")
        img.regions.append(SourceRegion(
            key=key, label=cat.get("name"), segmentation=ann.get("segmentation"), visible=visible,
            invisible=ann.get("invisible_mask") if visible is None else None,
            is_stuff=cat.get("isthing") in (0, False), raw=ann,
        ))
    return ParsedSource(source=source, images=list(images.values()), rejects=rejects, counts_in=dict(counts))
