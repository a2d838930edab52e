"""Our own JSONL source: one image per line, for data that comes from neither COCOA nor KINS.

    {"image_id": "a1", "file_name": "a1.jpg", "width": 640, "height": 480, "caption": "optional",
     "layers": [{"id": "a1-0", "label": "sky", "segmentation": <polygon(s) or RLE>,
                 "visible": <polygon(s) or RLE, optional>, "is_stuff": true, "z": 0}, ...]}

`z` is optional; when every layer of a line has a distinct integer `z`, it is the order (0 = back-most),
otherwise order is inferred from occlusion evidence. Blank lines are skipped; every other line is a record.
Lines end at "\n" only: U+2028 and the other characters `str.splitlines` also splits on may stand raw inside a
JSON string. A line nesting deeper than `limits.MAX_JSON_DEPTH` is rejected (`json_too_deep`) unparsed.
"""

from __future__ import annotations

from collections import Counter

from smartmask.sources import limits
from smartmask.sources.base import ParsedSource, SourceImage, SourceRegion, reject


def parse_jsonl(data: bytes, source: str) -> ParsedSource:
    counts: Counter = Counter()
    rejects: list[dict] = []
    images: dict[str, SourceImage] = {}
    region_keys: set[str] = set()
    # Undecodable bytes become U+FFFD and fail only their own line.
    for lineno, line in enumerate(data.decode("utf-8", errors="replace").split("\n"), 1):
        if not line.strip():
            continue
        counts["image"] += 1
        if limits.too_deep(line):
            rejects.append(reject(source, "image", f"line {lineno}", "json_too_deep",
                                  f"the line nests deeper than {limits.MAX_JSON_DEPTH} levels", line[:2000]))
            continue
        try:
            rec = limits.loads(line)
        except ValueError as e:  # JSONDecodeError, or an integer with more digits than Python converts
            rejects.append(reject(source, "image", f"line {lineno}", "malformed_json", " ".join(str(e).split()),
                                  line[:2000]))
            continue
        if not isinstance(rec, dict) or rec.get("image_id") is None or not isinstance(rec.get("layers"), list):
            rejects.append(reject(source, "image", f"line {lineno}", "malformed_record",
                                  "line needs 'image_id' and a 'layers' list", rec))
            continue
        iid = str(rec["image_id"])
        layers = rec["layers"]
        counts["region"] += len(layers)
        if iid in images:
            rejects.append(reject(source, "image", iid, "duplicate_image_id", f"image id {iid} seen before",
                                  {"image_id": iid, "line": lineno}, image_id=iid))
            for i, lay in enumerate(layers):
                rejects.append(reject(source, "region", f"{iid}:{i}", "duplicate_image_id",
                                      f"image id {iid} seen before", lay, image_id=iid))
            continue
        img = SourceImage(image_id=iid, file_name=rec.get("file_name"), width=rec.get("width"),
                          height=rec.get("height"), caption=rec.get("caption"), raw=rec)
        images[iid] = img
        zs = [lay.get("z") if isinstance(lay, dict) else None for lay in layers]
        total = all(isinstance(z, int) and not isinstance(z, bool) for z in zs) and len(set(zs)) == len(zs)
        img.order_kind = "source:z" if total else "none"
        for i, lay in enumerate(layers):
            if not isinstance(lay, dict):
                img.regions.append(SourceRegion(key=f"{iid}:{i}", label=None, segmentation=None, raw=lay,
                                                defect=("malformed_record", "layer is not an object")))
                continue
            key = str(lay.get("id", f"{iid}:{i}"))
            if key in region_keys:
                img.regions.append(SourceRegion(key=key, label=lay.get("label"), segmentation=None, raw=lay,
                                                defect=("duplicate_region_id", f"layer id {key} seen before")))
                continue
            region_keys.add(key)
            # z counts from the back; `rank` counts from the front like COCOA's `order`.
            rank = (len(layers) - zs[i]) if total else None
            img.regions.append(SourceRegion(key=key, label=lay.get("label"), segmentation=lay.get("segmentation"),
                                            visible=lay.get("visible"), is_stuff=bool(lay.get("is_stuff", False)),
                                            rank=rank, raw=lay))
    return ParsedSource(source=source, images=list(images.values()), rejects=rejects, counts_in=dict(counts))
