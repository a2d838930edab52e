"""Held-out checks of a model version, both through `SmartMaskPipeline`: the paper's core claim in miniature (with a
box as guidance, the predicted mask beats the box itself) at the model's resolution and at the image's.

`grid_check` — model resolution: held-out training-style samples (the sampler's guided S~ with the target's box),
one mask each, IoU against the target on the R×R grid vs the box's own cells (`box_on_grid`, the tight box).

`product_path_check` — image resolution, what `smartmask suggest` gives. For held-out (val split) images of a
dataset version and a target layer k (a thing, never stuff), the scene's ground-truth layout of layers 0..k-1 goes
through the pipeline's `suggest`, as the CLI's request does, and the suggestions are compared with the target's amodal mask at the image's own resolution:

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
from smartmask.boxes import box_mask, mask_box
from smartmask.conditioning.focus import box_in_window, box_on_window, window_to_grid
from smartmask.evaluation.oracle import ClassShapes
from smartmask.inference.pipeline import SmartMaskPipeline
from smartmask.inference.suggest import Control, SuggestConfig
from smartmask.lake.paths import dataset_dir
from smartmask.masks import mask_iou
from smartmask.training.samples import LayerIndex, SampleConfig, TrainingSampler


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


def grid_check(pipe: SmartMaskPipeline, dataset: str, version: str, sample_cfg: SampleConfig, *,
               n_samples: int = 64, steps: int = 20, batch: int = 32, seed: int = 0,
               shapes: ClassShapes | None = None) -> dict:
    """Box-guided masks vs the box itself (and, given the class `shapes`, vs the class-mean shape fitted to the box:
    the oracle) on up to `n_samples` held-out samples, at the model's resolution, in the model's own frame: with
    the focus view (conditioning/focus.py) that is the window around the box, and the same masks are also compared
    on the global R×R grid (`global_*`), where the earlier single-view models drew."""
    cfg = dataclasses.replace(sample_cfg, guidance_mix=(0.0, 1.0, 0.0, 0.0), split="val")
    sampler = TrainingSampler(LayerIndex.from_lake(pipe.lake, dataset, version, split="val"), cfg, seed=seed + 99)
    n = min(n_samples, len(sampler))
    if n == 0:
        raise ValueError(f"dataset {dataset}@{version} has no held-out (val) samples")
    ious: dict[str, list[float]] = {}
    for s in range(0, n, batch):
        b = sampler.batch(list(range(s, min(n, s + batch))))
        found = pipe.masks_on_grid(b["layout"], b["obj"], b["context"], n=1,
                                   config=SuggestConfig(n=1, steps=steps, seed=seed + s))
        found = found[:, 0].cpu().numpy()
        r = b["target"].shape[-1]
        for i in range(len(b["obj"])):
            # The box as a user would give it (normalised image coordinates), on the model's grid by the same rule
            # `suggest` uses: the cells whose centres it covers.
            # Windows in normalised image coordinates: the whole image is (0, 0, 1, 1).
            box, image = tuple(np.asarray(b["box"][i], np.float64).tolist()), (0.0, 0.0, 1.0, 1.0)
            if "window" in b:
                window = tuple(np.asarray(b["window"][i], np.float64).tolist())
                frames = [("", window, found[i], b["target"][i]),
                          ("global_", image, window_to_grid(found[i], window, 1, 1), b["target_global"][i])]
            else:
                frames = [("", image, found[i], b["target"][i])]
            for prefix, frame, mask, target in frames:
                oracle = (shapes.fit_to_box(b["obj"][i], box_in_window(box, frame, r), r, r)
                          if shapes is not None else None)
                if shapes is not None and oracle is None:
                    continue  # a class without a training shape: left out, so all three means share their samples
                ious.setdefault(f"{prefix}model_iou", []).append(mask_iou(mask, target))
                ious.setdefault(f"{prefix}box_iou", []).append(mask_iou(box_on_window(box, frame, r), target))
                if oracle is not None:
                    ious.setdefault(f"{prefix}oracle_iou", []).append(mask_iou(oracle, target))
    if not ious:
        raise ValueError(f"no held-out sample of {dataset}@{version} has a class with a training shape")
    return {"samples": len(ious["model_iou"]), **{k: float(np.mean(v)) for k, v in ious.items()}}


def product_path_check(pipe: SmartMaskPipeline, dataset: str, version: str, *, n_items: int = 12,
                       box_items: int | None = None, n: int = 4, seed: int = 0, per_image: int = 2) -> dict:
    """The three checks of the module docstring; all numbers at image resolution.

    The box check runs on the first `box_items` targets (default `n_items`), the costlier mask-free and solver checks
    on the first `n_items`: the box check's mean is the noisy one (one rank-1 mask per target), so it gets more.
    """
    box_items = n_items if box_items is None else box_items
    lake = pipe.lake
    items = heldout_targets(lake, dataset, version, max(n_items, box_items), seed=seed, per_image=per_image)
    if not items:
        raise ValueError(f"dataset {dataset}@{version} has no held-out thing targets")
    # dedupe_iou=None keeps every sample, exact copies too (diversity and the solver comparison are measured on all
    # of them; 1.0 would still drop two seeds that give the same mask, and then a seed would be missing); the
    # rank-1 suggestion is the same with or without de-duplication (it only drops lower-ranked ones).
    dpm_cfg = SuggestConfig(n=n, steps=20, scheduler="dpm", seed=seed, dedupe_iou=None)
    ddim_cfg = dataclasses.replace(dpm_cfg, n=min(n, 2), steps=50, scheduler="ddim")  # its seeds: the first two
    ours, boxes, pairwise, dpm_gt, ddim_gt, between = [], [], [], [], [], []
    for i, it in enumerate(items):
        scene = pipe.layout(layout_from=f"{dataset}@{version}:{it['image_id']}:{it['k']}")
        H, W = it["mask"].shape
        b = mask_box(it["mask"])
        control = Control("box", box=tuple(float(v) for v in b))
        dpm = pipe.suggest(it["label"], it["caption"], scene=scene, control=control, config=dpm_cfg).result
        if i < box_items:
            ours.append(mask_iou(dpm.suggestions[0].mask_HW, it["mask"]))
            boxes.append(mask_iou(box_mask(b, H, W), it["mask"]))
        if i >= n_items:
            continue
        ddim = pipe.suggest(it["label"], it["caption"], scene=scene, control=control, config=ddim_cfg).result
        by_seed = {s.seed: s.mask_HW for s in dpm.suggestions}
        for s in ddim.suggestions:
            dpm_gt.append(mask_iou(by_seed[s.seed], it["mask"]))
            ddim_gt.append(mask_iou(s.mask_HW, it["mask"]))
            between.append(mask_iou(by_seed[s.seed], s.mask_HW))
        free = pipe.suggest(it["label"], it["caption"], scene=scene, control=Control("none"),
                            config=dataclasses.replace(dpm_cfg, n=max(2, n - 1))).result
        pairwise += [mask_iou(a.mask_HW, c.mask_HW) for a, c in itertools.combinations(free.suggestions, 2)]
    return {"items": min(len(items), n_items), "box_items": len(ours), "suggestions": n,
            "bbox_iou": float(np.mean(ours)), "box_iou": float(np.mean(boxes)),
            "maskfree_pairwise_iou": float(np.mean(pairwise)), "dpm20_iou": float(np.mean(dpm_gt)),
            "ddim50_iou": float(np.mean(ddim_gt)), "dpm_vs_ddim_iou": float(np.mean(between))}
