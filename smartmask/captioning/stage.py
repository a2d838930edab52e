"""The caption stage of a rebuild, library side: template captions over a layers table, and the caption cache.

A model captioner (InstructBLIP) runs under Ray Data in `tasks/captions.py`; what it produces goes through the
cache here first, in small atomic parts, so a killed captioning job resumes where it stopped: images whose
(sha256, captioner id, prompt) is in the cache are never captioned again, in this version or any later one.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from smartmask.captioning.template import caption
from smartmask.lake.io import rows_to_table, write_parquet_atomic
from smartmask.lake.schemas import CAPTION_CACHE, CAPTIONS


def template_captions(layers: pa.Table, captioner: str) -> pa.Table:
    """Every image of a layers table → one caption row (CAPTIONS schema)."""
    layers = layers.sort_by([("image_id", "ascending"), ("layer", "ascending")])
    ids = layers.column("image_id").to_pylist()
    labels = layers.column("label").to_pylist()
    stuff = layers.column("is_stuff").to_pylist()
    occ = layers.column("occlusion_rate").to_numpy()
    boxes = np.asarray(pc.list_flatten(layers.column("bbox")).to_numpy()).reshape(-1, 4)
    counts = layers.column("rle").to_pylist()
    hh, ww = layers.column("height").to_numpy(), layers.column("width").to_numpy()
    rows = []
    start = 0
    n = len(ids)
    while start < n:
        end = start
        while end < n and ids[end] == ids[start]:
            end += 1
        size = [int(hh[start]), int(ww[start])]

        def rle(k: int, s0: int = start, size: list = size) -> dict:  # built only for the few candidates checked
            return {"size": size, "counts": counts[s0 + k]}

        text, rels = caption(labels[start:end], stuff[start:end], boxes[start:end], occ[start:end], rle)
        rows.append({"image_id": ids[start], "captioner": captioner, "prompt": None, "caption": text,
                     "relations": json.dumps([[r.subject, r.kind, r.object] for r in rels])})
        start = end
    return rows_to_table(rows, CAPTIONS)


def cache_dir(lake: Path, captioner: str, prompt: str) -> Path:
    key = hashlib.sha256(f"{captioner}\0{prompt}".encode()).hexdigest()[:16]
    return lake / "caption_cache" / f"captioner={key}"


def read_cache(directory: Path) -> dict[str, str]:
    """sha256 → caption, from every complete part (a part is complete once renamed into place)."""
    out: dict[str, str] = {}
    for part in sorted(directory.glob("part-*.parquet")):
        t = pq.read_table(part, columns=["sha256", "caption"])
        out.update(zip(t.column("sha256").to_pylist(), t.column("caption").to_pylist(), strict=True))
    return out


def write_cache_part(directory: Path, captioner: str, prompt: str, sha_caption: list[tuple[str, str]]) -> None:
    if not sha_caption:
        return
    rows = [{"sha256": s, "captioner": captioner, "prompt": prompt, "caption": c} for s, c in sha_caption]
    write_parquet_atomic(rows_to_table(rows, CAPTION_CACHE), directory / f"part-{uuid.uuid4().hex}.parquet")
