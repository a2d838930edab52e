"""KINS (Qi et al. 2019) → SourceImage, both the original and the 2020 update.

Original: COCO-style `annotations`, one per instance, amodal `segmentation` + visible `inmodal_seg`; no order.
KINS-2020: `a_segm` (amodal), `i_segm` (inmodal), `oco_id` (cluster of mutually overlapping instances) and
`ico_id` (occlusion rank inside the cluster: 0 = overlaps nothing, 1 = front, larger = further back).
`ico_id` only orders instances of the same cluster, so it becomes pairwise constraints, not a total rank.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from smartmask.sources.base import (
    ParsedSource,
    SourceError,
    SourceRegion,
    categories,
    image_records,
    instance_annotations,
)


def parse_kins(doc: Any, source: str) -> ParsedSource:
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list) or "images" not in doc:
        raise SourceError(f"{source}: not a KINS file (needs top-level 'images' and 'annotations' lists)")
    counts: Counter = Counter()
    rejects: list[dict] = []
    images = image_records(source, doc["images"], counts, rejects)
    cats = categories(source, doc)
    clusters: dict[str, dict[Any, list[tuple[int, Any]]]] = defaultdict(lambda: defaultdict(list))
    for key, img, ann, cat in instance_annotations(source, doc["annotations"], images, cats, counts, rejects):
        v2020 = "a_segm" in ann
        img.regions.append(SourceRegion(
            key=key, label=cat.get("name"),
            segmentation=ann.get("a_segm") if v2020 else ann.get("segmentation"),
            visible=ann.get("i_segm") if v2020 else ann.get("inmodal_seg"), raw=ann,
        ))
        if v2020:
            img.order_kind = "source:ico_id"
            ico, oco = ann.get("ico_id"), ann.get("oco_id")
            # Only scalar cluster ids group instances (a list would be unhashable; it orders nothing).
            scalar_cluster = oco is None or isinstance(oco, (int, str))
            if isinstance(ico, int) and not isinstance(ico, bool) and ico > 0 and scalar_cluster:
                clusters[img.image_id][oco].append((len(img.regions) - 1, ico))
    for iid, by_cluster in clusters.items():
        for members in by_cluster.values():
            for i, ico_i in members:
                for j, ico_j in members:
                    if ico_i < ico_j:  # smaller ico_id = occluded fewer times = in front
                        images[iid].pairs.append((i, j, "source:ico_id"))
    return ParsedSource(source=source, images=list(images.values()), rejects=rejects, counts_in=dict(counts))
