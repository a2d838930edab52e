"""The last stage of a bulk insertion: an item's files, then its `insert_items` row.

Files go to `<run>/outputs/<key[:2]>/<key>/` (inserted.png, mask.png, suggestion-<rank>.png), each written
atomically (temp name, then rename) and named by the item key, so a retried or resumed item overwrites its own
files with the same content and a kill leaves whole files or none. The row is returned to the driver, which
commits it only after this function returned: a row never points at a file that is not complete.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from smartmask import __version__, masks
from smartmask.bulk.rows import image_of, reject_row, unpack_bits

#: Bumped when a change alters what a bulk run writes; recorded in every row and the manifest.
BULK_CODE_VERSION = f"smartmask-{__version__}/bulk-1"


def item_dir(out_dir: Path, key: str) -> Path:
    return Path(out_dir) / "outputs" / key[:2] / key


def write_rows(rows: list[dict], run_dir: Path, run: str, config: dict) -> list[dict]:
    """Write each inserted item's PNGs; return one `insert_items` row (dict) per work row."""
    from smartmask.bulk.config import BulkConfig

    cfg = BulkConfig.from_dict(config)
    chash = cfg.config_hash()
    out = []
    for row in rows:
        t0 = time.perf_counter()
        files: dict = {}
        if row["status"] == "ok":
            try:
                files = _write_files(row, Path(run_dir))
            except (OSError, ValueError) as e:  # a full disk, a permission: this item's reject
                reject_row(row, "write", "write_failed", f"{type(e).__name__}: {e}")
        final = _final_row(row, cfg, chash, files)
        final["t_write_s"] = round(time.perf_counter() - t0, 6)
        out.append(final)
    return out


def _write_files(row: dict, run_dir: Path) -> dict:
    from smartmask.inference.images import save_png

    H, W = row["height"], row["width"]
    d = item_dir(run_dir, row["row_key"])
    image = image_of(row)
    inserted = np.frombuffer(row["inserted"], np.uint8).reshape(H, W, 3)
    dilated = unpack_bits(row["dilated"], H, W)
    sugg = json.loads(row["suggestions"])
    paths = []
    for s in sugg:
        m = masks.decode({"size": [H, W], "counts": s["rle"]}).astype(bool)
        paths.append(save_png(d / f"suggestion-{s['rank']}.png", m))
    chosen = sugg[row["chosen_rank"] - 1]
    mask = masks.decode({"size": [H, W], "counts": chosen["rle"]}).astype(bool)
    save_png(d / "mask.png", mask)
    rgba = inserted
    if row["inserted_alpha"] is not None:
        rgba = np.dstack((inserted, np.frombuffer(row["inserted_alpha"], np.uint8).reshape(H, W)))
    save_png(d / "inserted.png", rgba)  # last: its presence means the item's files are all there
    changed = np.any(inserted != image, axis=2)
    rel = d.relative_to(run_dir)
    return {"inserted_path": str(rel / "inserted.png"), "mask_path": str(rel / "mask.png"),
            "suggestion_paths": [str(rel / p.name) for p in paths], "mask_rle": chosen["rle"],
            "mask_bbox": chosen["bbox"], "mask_area": int(mask.sum()), "dilated_area": int(dilated.sum()),
            "dilated_rle": masks.encode(dilated)["counts"],
            "changed_pixels": int(changed.sum()), "changed_outside": int((changed & ~dilated).sum()),
            "scores": [s["score"] for s in sugg]}


def _final_row(row: dict, cfg, chash: str, files: dict) -> dict:
    item = json.loads(row["item"])
    timings = json.loads(row.get("timings") or "{}")
    ok = row["status"] == "ok"
    g = item.get("guidance")
    return {
        "item_key": row["row_key"], "line": row["line"], "item_id": item.get("item_id"),
        "image_uri": item.get("image_uri"), "object": item.get("object"), "context": item.get("context"),
        "guidance": None if g is None else json.dumps(g), "layout_from": item.get("layout_from"),
        "n_suggestions": item.get("n_suggestions"), "seed": item.get("seed"),
        "model_version": cfg.model_version, "config_hash": chash, "inpainter": cfg.inpainter,
        "segmenter": cfg.segmenter, "image_sha256": row.get("image_sha256"), "width": row.get("width"),
        "height": row.get("height"), "chosen_rank": row.get("chosen_rank") if ok else None,
        **{k: files.get(k) for k in ("scores", "mask_rle", "mask_bbox", "mask_area", "dilated_area", "dilated_rle",
                                     "changed_pixels", "changed_outside", "inserted_path", "mask_path",
                                     "suggestion_paths")},
        **{f"t_{s}_s": timings.get(s) for s in ("decode", "layout", "suggest", "insert")},
        "status": "inserted" if ok else "rejected", "reject_stage": None if ok else row["stage"],
        "reject_reason": None if ok else row["reason"], "reject_detail": None if ok else row["detail"],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "code_version": BULK_CODE_VERSION,
    }  # fmt: skip
