"""The held-out check of a planner: does its top box land where the held-out scenes' next object really is, and
is it a plausible place for that object?

For targets (image, k) of a dataset version's val split (a thing at layer k >= 1 with at least `min_area` amodal
pixels; `n_items` of them drawn with `seed`), the planner sees S_k (the ground-truth layers 0..k-1), the class of
layer k and the image's caption, and its top box is compared with the box of layer k:

- location: mean box IoU of the top box with the ground-truth box, vs the class-agnostic baseline, the class's
  mean normalised box over the train split scaled to the image (what a planner that ignores the layout would say);
- placement plausibility (`smartmask.evaluation.plausibility`, mask-free, judged on S_k): of the class's mean
  amodal shape (`ClassShapes`, fitted on the train split) drawn in the planner's top box, vs in `random_boxes`
  random boxes per target (a size drawn from the class's training boxes, a position uniform inside the image).
  The same shape goes in every box, so the comparison is of the boxes alone. The class-mean box and the
  ground-truth box get the same treatment, for reference (the latter is the metric's ceiling with these shapes).

Everything is deterministic given `seed` (and the planner's own determinism per seed).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from smartmask import masks
from smartmask.evaluation.oracle import ClassShapes
from smartmask.evaluation.plausibility import PlacementVerdict, placement_check, plausibility_rate
from smartmask.inference.layout import Region, SceneLayout
from smartmask.lake.paths import dataset_dir
from smartmask.planner.base import Planner, PlannerError


def box_iou(a, b) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _xyxy(bbox, W: int, H: int) -> np.ndarray:
    """COCO xywh in pixels → normalised x0 y0 x1 y1."""
    x, y, w, h = (float(v) for v in bbox)
    return np.array([x / W, y / H, (x + w) / W, (y + h) / H])


def train_boxes(d: Path, train: dict[str, tuple[int, int]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Normalised training boxes (n, 4) per class, and those of every thing class pooled (the fallback)."""
    if not train:
        raise ValueError(f"{d} has no train images")
    t = pq.read_table(d / "layers", columns=["image_id", "label", "is_stuff", "bbox"],
                      filters=[("image_id", "in", list(train))]).to_pylist()
    by_class: dict[str, list] = {}
    pooled = []
    for r in t:
        H, W = train[r["image_id"]]
        b = _xyxy(r["bbox"], W, H)
        if b[2] > b[0] and b[3] > b[1]:
            by_class.setdefault(r["label"], []).append(b)
            if not r["is_stuff"]:
                pooled.append(b)
    if not pooled:
        raise ValueError(f"{d} has no thing boxes in its train split")
    return {k: np.asarray(v) for k, v in by_class.items()}, np.asarray(pooled).reshape(-1, 4)


def captions_by_image(d: Path) -> dict[str, str]:
    """Each image's caption in a dataset version folder, a model captioner's before a template one."""
    captions: dict[str, str] = {}
    if (d / "captions").exists():
        for r in sorted(pq.read_table(d / "captions", columns=["image_id", "captioner", "caption"]).to_pylist(),
                        key=lambda r: (r["captioner"] or "").startswith("template@")):
            captions.setdefault(r["image_id"], r["caption"] or "")
    return captions


def random_box(boxes_N4: np.ndarray, rng: np.random.Generator, W: int, H: int) -> np.ndarray:
    """A box (pixels) of the size of one of `boxes_N4` (normalised, drawn at random) at a position uniform inside
    the W × H image: the random-box baseline, which knows the class's sizes but not where things go."""
    wh = boxes_N4[rng.integers(len(boxes_N4))]
    w, h = wh[2] - wh[0], wh[3] - wh[1]
    x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
    return np.array([x0, y0, x0 + w, y0 + h]) * np.array([W, H, W, H], np.float64)


def _targets(rows: list[dict], n_items: int, min_area: int, seed: int) -> list[dict]:
    cands = [r for r in rows if not r["is_stuff"] and r["layer"] >= 1 and r["area"] >= min_area]
    cands.sort(key=lambda r: (r["image_id"], r["layer"]))
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(cands))[:n_items]
    return [cands[i] for i in sorted(pick.tolist())]  # sorted: each image's masks are decoded once


def _judge(shapes: ClassShapes, label: str, box, scene: SceneLayout) -> PlacementVerdict | None:
    """The plausibility of the class's mean shape fitted to `box` (pixels) in `scene`; None when not judged."""
    mask = shapes.fit_to_box(label, tuple(float(v) for v in box), scene.height, scene.width)
    return None if mask is None else placement_check(mask, label, scene)


def planner_check(lake: str | Path, dataset: str, version: str, planner: Planner, *, n_items: int = 200,
                  seed: int = 0, min_area: int = 16, random_boxes: int = 4,
                  shapes: ClassShapes | None = None) -> dict:
    """The check of the module docstring on up to `n_items` held-out targets. Returns the numbers with their
    counts: `iou_planner` / `iou_class_mean` (means over `items`), `plausibility_*` (shares of the judged
    placements, None when nothing could be judged: a class the plausibility rules do not know), `judged_*`,
    `planner_errors` (targets the planner could not answer: IoU 0, judged implausible) and `ms_per_propose`."""
    lake = Path(lake)
    if n_items < 1 or random_boxes < 1:
        raise ValueError(f"n_items and random_boxes must be >= 1, got {n_items} and {random_boxes}")
    d = dataset_dir(lake, dataset, version)
    images = pq.read_table(d / "images", columns=["image_id", "split", "height", "width"]).to_pylist()
    train = {r["image_id"]: (r["height"], r["width"]) for r in images if r["split"] == "train"}
    val = {r["image_id"]: (r["height"], r["width"]) for r in images if r["split"] == "val"}
    if not val:
        raise ValueError(f"dataset {dataset}@{version} has no held-out (val) images")
    rows = pq.read_table(d / "layers", columns=["image_id", "layer", "label", "label_raw", "is_stuff", "bbox",
                                                "area", "rle"], filters=[("image_id", "in", list(val))])
    rows = rows.to_pylist()
    items = _targets(rows, n_items, min_area, seed)
    if not items:
        raise ValueError(f"dataset {dataset}@{version} has no held-out thing targets of >= {min_area} px")
    captions = captions_by_image(d)
    class_boxes, pooled = train_boxes(d, train)
    shapes = shapes or ClassShapes.fit(lake, dataset, version, split="train", seed=seed)
    layers: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["image_id"], r["layer"])):
        layers.setdefault(r["image_id"], []).append(r)

    rng = np.random.default_rng([seed, 1])
    iou_p, iou_m, errors, seconds = [], [], 0, 0.0
    verdicts: dict[str, list] = {"planner": [], "random": [], "class_mean": [], "ground_truth": []}
    decoded: tuple[str, list[np.ndarray]] | None = None
    for it in items:
        image_id, k, label = it["image_id"], it["layer"], it["label"]
        H, W = val[image_id]
        if decoded is None or decoded[0] != image_id:
            decoded = (image_id, [masks.decode({"size": [H, W], "counts": r["rle"]}).astype(bool)
                                  for r in layers[image_id]])
        regions = tuple(Region(r["label"], r["label_raw"] or r["label"], m, bool(r["is_stuff"]), 1.0)
                        for r, m in zip(layers[image_id][:k], decoded[1][:k], strict=True))
        scene = SceneLayout(H, W, regions, f"ground-truth:{dataset}@{version}:{image_id}:{k}")
        scale = np.array([W, H, W, H], np.float64)
        gt = _xyxy(it["bbox"], W, H) * scale
        boxes = class_boxes.get(label, pooled)
        mean_box = boxes.mean(0) * scale
        t0 = time.perf_counter()
        try:
            top = np.asarray(planner.propose(scene, label, captions.get(image_id, ""), n=1, seed=seed)[0].box)
        except PlannerError:
            top = None
        seconds += time.perf_counter() - t0
        iou_m.append(box_iou(mean_box, gt))
        iou_p.append(box_iou(top, gt) if top is not None else 0.0)
        if top is None:
            errors += 1
            verdicts["planner"].append(PlacementVerdict(False, "none", 0.0, "the planner gave no box"))
        else:
            verdicts["planner"].append(_judge(shapes, label, top, scene))
        verdicts["class_mean"].append(_judge(shapes, label, mean_box, scene))
        verdicts["ground_truth"].append(_judge(shapes, label, gt, scene))
        for _ in range(random_boxes):
            verdicts["random"].append(_judge(shapes, label, random_box(boxes, rng, W, H), scene))

    out = {"dataset": dataset, "version": version, "planner": planner.id, "seed": seed, "items": len(items),
           "iou_planner": float(np.mean(iou_p)), "iou_class_mean": float(np.mean(iou_m)),
           "planner_errors": errors, "random_boxes": random_boxes,
           "ms_per_propose": 1000 * seconds / len(items)}
    for kind, vs in verdicts.items():
        out[f"plausibility_{kind}"] = plausibility_rate(vs)
        out[f"judged_{kind}"] = sum(v is not None for v in vs)
    return out
