"""The product path checked on held-out synthetic scenes: what `smartmask suggest` gives, measured at image size.

For held-out (val split) images of a dataset version and a target layer k (a thing, never stuff), the scene's
ground-truth layout of layers 0..k-1 goes through the same calls the CLI makes (`layout_image`, `Control`,
`suggest`), and the suggestions are compared with the target's amodal mask at the image's own resolution:

- box:        rank-1 suggestion with `--bbox` = the target's box, vs the box itself used as the mask (IoU);
- mask-free:  N suggestions from N seeds without guidance: mean pairwise IoU (diversity is 1 minus it);
- solvers:    box-guided suggestions of the same seeds with 20-step DPM-Solver++ and 50-step DDIM: mean IoU of each
              with the ground truth, and of the two solvers' masks with each other.

Targets are chosen deterministically (seeded), up to `per_image` per held-out image, among thing layers (k ≥ 1)
whose amodal mask covers at least `min_area_frac` of the image, so a tiny model's 32×32 grid can represent them.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from smartmask import masks
from smartmask.inference.layout import layout_from_lake, layout_image
from smartmask.inference.paste import box_mask
from smartmask.inference.suggest import Control, SuggestConfig, suggest
from smartmask.lake.layout import dataset_dir
from smartmask.masks import mask_iou
from smartmask.training.guidance import mask_box


def heldout_targets(lake: Path, dataset: str, version: str, n: int, min_area_frac: float = 0.02,
                    seed: int = 0, per_image: int = 1) -> list[dict]:
    """Up to `n` (image_id, k, label, caption, mask) held-out targets, ≤ `per_image` per image, chosen with `seed`."""
    d = dataset_dir(lake, dataset, version)
    images = pq.read_table(d / "images", columns=["image_id", "split", "height", "width"]).to_pylist()
    val = {r["image_id"]: r for r in images if r["split"] == "val"}
    layers = pq.read_table(d / "layers", columns=["image_id", "layer", "label", "is_stuff", "rle", "area"],
                           filters=[("image_id", "in", list(val))]).to_pylist()
    captions = {}
    if (d / "captions").exists():
        captions = {r["image_id"]: r["caption"] for r in pq.read_table(d / "captions").to_pylist()}
    rng = np.random.default_rng(seed)
    by_image: dict[str, list[dict]] = {}
    for r in layers:
        img = val[r["image_id"]]
        if not r["is_stuff"] and r["layer"] > 0 and r["area"] >= min_area_frac * img["height"] * img["width"]:
            by_image.setdefault(r["image_id"], []).append(r)
    out = []
    for image_id in sorted(by_image, key=lambda i: (len(i), i)):
        cands = sorted(by_image[image_id], key=lambda r: r["layer"])
        picks = rng.choice(len(cands), size=min(per_image, len(cands)), replace=False)
        img = val[image_id]
        for j in sorted(int(p) for p in picks):
            r = cands[j]
            mask = masks.decode({"size": [img["height"], img["width"]], "counts": r["rle"]}).astype(bool)
            out.append({"image_id": image_id, "k": int(r["layer"]), "label": r["label"],
                        "caption": captions.get(image_id, ""), "mask": mask})
        if len(out) >= n:
            break
    return out[:n]


def product_path_check(model, lake: Path, dataset: str, version: str, *, alpha: float, n_items: int = 12,
                       box_items: int | None = None, n: int = 4, seed: int = 0, per_image: int = 2) -> dict:
    """The three checks of the module docstring; all numbers at image resolution.

    The box check runs on the first `box_items` targets (default `n_items`), the costlier mask-free and solver checks
    on the first `n_items`: the box check's mean is the noisy one (one rank-1 mask per target), so it gets more.
    """
    box_items = n_items if box_items is None else box_items
    items = heldout_targets(lake, dataset, version, max(n_items, box_items), seed=seed, per_image=per_image)
    if not items:
        raise ValueError(f"dataset {dataset}@{version} has no held-out thing targets")
    R = model.config.resolution
    # dedupe_iou=None keeps every sample, exact copies too (diversity and the solver comparison are measured on all
    # of them; 1.0 would still drop two seeds that give the same mask, and then a seed would be missing); the
    # rank-1 suggestion is the same with or without de-duplication (it only drops lower-ranked ones).
    dpm_cfg = SuggestConfig(n=n, steps=20, scheduler="dpm", seed=seed, dedupe_iou=None)
    ddim_cfg = dataclasses.replace(dpm_cfg, n=min(n, 2), steps=50, scheduler="ddim")  # its seeds: the first two
    ours, boxes, pairwise, dpm_gt, ddim_gt, between = [], [], [], [], [], []
    for i, it in enumerate(items):
        scene, vocab = layout_from_lake(lake, f"{dataset}@{version}", it["image_id"], it["k"])
        H, W = it["mask"].shape
        layout = layout_image(scene, vocab, R)
        b = mask_box(it["mask"])
        control = Control("box", box=tuple(float(v) for v in b))
        dpm = suggest(model, layout, control, it["label"], it["caption"], H, W, dpm_cfg, alpha=alpha)
        if i < box_items:
            ours.append(mask_iou(dpm.suggestions[0].mask_HW, it["mask"]))
            boxes.append(mask_iou(box_mask(b, H, W), it["mask"]))
        if i >= n_items:
            continue
        ddim = suggest(model, layout, control, it["label"], it["caption"], H, W, ddim_cfg, alpha=alpha)
        by_seed = {s.seed: s.mask_HW for s in dpm.suggestions}
        for s in ddim.suggestions:
            dpm_gt.append(mask_iou(by_seed[s.seed], it["mask"]))
            ddim_gt.append(mask_iou(s.mask_HW, it["mask"]))
            between.append(mask_iou(by_seed[s.seed], s.mask_HW))
        free = suggest(model, layout, Control("none"), it["label"], it["caption"], H, W,
                       dataclasses.replace(dpm_cfg, n=max(2, n - 1)), alpha=alpha)
        pairwise += [mask_iou(a.mask_HW, c.mask_HW) for a, c in itertools.combinations(free.suggestions, 2)]
    return {"items": min(len(items), n_items), "box_items": len(ours), "suggestions": n, "bbox_iou": float(np.mean(ours)), "box_iou": float(np.mean(boxes)),
            "maskfree_pairwise_iou": float(np.mean(pairwise)), "dpm20_iou": float(np.mean(dpm_gt)),
            "ddim50_iou": float(np.mean(ddim_gt)), "dpm_vs_ddim_iou": float(np.mean(between))}
