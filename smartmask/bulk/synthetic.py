"""A bulk catalog over a synthetic dataset version's held-out images: for the demo, the benchmark and the tests.

Each row inserts one held-out object back into its scene: the image, the ground-truth layout under the object
(`layout_from` = DATASET@VERSION:IMAGE_ID:K), the object's label, the scene's caption, and a guidance that
cycles through box (the object's tight box), point (its centre), and none. With more rows than held-out objects
the rows repeat objects with new seeds, so every row is a distinct item.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from smartmask.boxes import mask_box
from smartmask.lake.paths import dataset_dir

GUIDANCE = ("box", "point", "none")


def heldout_rows(lake: Path, dataset: str, version: str, n: int, *, seed: int = 0, n_suggestions: int | None = None,
                 min_area_frac: float = 0.01) -> list[dict]:
    """`n` catalog rows (dicts with the catalog's columns) over the held-out split of `dataset@version`."""
    from smartmask.evaluation.heldout import heldout_targets

    targets = heldout_targets(lake, dataset, version, 10_000, min_area_frac=min_area_frac, seed=seed, per_image=4)
    if not targets:
        raise ValueError(f"dataset {dataset}@{version} has no held-out objects to build a catalog from")
    uris = dict(zip(*pq.read_table(dataset_dir(lake, dataset, version) / "images",
                                   columns=["image_id", "uri"]).to_pydict().values(), strict=True))
    rows = []
    for i in range(n):
        t = targets[i % len(targets)]
        kind = GUIDANCE[i % len(GUIDANCE)]
        x0, y0, x1, y1 = mask_box(t["mask"])
        row = {"item_id": f"{t['image_id']}-k{t['k']}-{i}", "image_uri": uris[t["image_id"]], "object": t["label"],
               "context": t["caption"], "seed": seed + i // len(targets),
               "layout_from": f"{dataset}@{version}:{t['image_id']}:{t['k']}"}
        if kind == "box":
            row["bbox"] = [x0, y0, x1, y1]
        elif kind == "point":
            row["point"] = [(x0 + x1) / 2, (y0 + y1) / 2]
        if n_suggestions is not None:
            row["n_suggestions"] = n_suggestions
        rows.append(row)
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)
    return path
