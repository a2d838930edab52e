"""KINS (Qi et al. 2019) → SourceImage, both the original and the 2020 update.

Original: COCO-style `annotations`, one per instance, amodal `segmentation` + visible `inmodal_seg`; no order.
KINS-2020: `a_segm` (amodal), `i_segm` (inmodal), `oco_id` (cluster of mutually overlapping instances) and
`ico_id` (occlusion rank inside the cluster: 0 = overlaps nothing, 1 = front, larger = further back).
`ico_id` only orders instances of the same cluster, so it becomes pairwise constraints, not a total rank.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from smartmask.sources.base import ParsedSource, SourceError, SourceRegion, image_records, reject


def parse_kins(doc: Any, source: str) -> ParsedSource:
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list) or "images" not in doc:
        raise SourceError(f"{source}: not a KINS file (needs top-level 'images' and 'annotations' lists)")
    counts: Counter = Counter()
    rejects: list[dict] = []
    images = image_records(source, doc["images"], counts, rejects)
    cats = {c.get("id"): c.get("name") for c in doc.get("categories") or [] if isinstance(c, dict)}
    seen: set[str] = set()
    clusters: dict[str, dict[Any, list[tuple[int, Any]]]] = defaultdict(lambda: defaultdict(list))
    for ann in doc["annotations"]:
        counts["region"] += 1
        if not isinstance(ann, dict) or ann.get("id") is None:
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
        if ann.get("category_id") not in cats:
            rejects.append(reject(source, "region", key, "unknown_category",
                                  f"category_id {ann.get('category_id')!r} not in 'categories'", ann, image_id=iid))
            continue
        v2020 = "a_segm" in ann
        img = images[iid]
        img.regions.append(SourceRegion(
            key=key, label=cats[ann["category_id"]],
            segmentation=ann.get("a_segm") if v2020 else ann.get("segmentation"),
            visible=ann.get("i_segm") if v2020 else ann.get("inmodal_seg"), raw=ann,
        ))
        if v2020:
            img.order_kind = "source:ico_id"
            ico = ann.get("ico_id")
            if isinstance(ico, int) and ico > 0:
                clusters[iid][ann.get("oco_id")].append((len(img.regions) - 1, ico))
    for iid, by_cluster in clusters.items():
        for members in by_cluster.values():
            for i, ico_i in members:
                for j, ico_j in members:
                    if ico_i < ico_j:  # smaller ico_id = occluded fewer times = in front
                        images[iid].pairs.append((i, j, "source:ico_id"))
    return ParsedSource(source=source, images=list(images.values()), rejects=rejects, counts_in=dict(counts))
