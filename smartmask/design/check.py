"""Placement plausibility of designed layouts: the planner's boxes against random boxes, design after design.

`smartmask.planner.check` judges a planner on the held-out scenes' own layouts S_k; this judges it where it is
used, on layouts it designs itself from an empty canvas. For each of `n_scenes` held-out images the design brief
is the image's caption and its thing classes, back to front (the scene's own object list, so the mix of classes is
the dataset's); the background comes from `plan_background` (as `smartmask design` lays it). Two designs are made
of every brief from the same background:

- planner: each object goes into the planner's top box on the design so far;
- random: each object goes into a random box, a size drawn from the class's training boxes and a position uniform
  inside the canvas (the class's size is given to the baseline, so only where it puts things differs).

In both, the object's mask is the class's mean amodal shape fitted to the box (`ClassShapes`: the same shape in
every box, so the comparison is of the boxes), judged by `placement_check` on the design so far and then added as
its new top layer. Later objects therefore meet what the earlier boxes built (a lamp needs a table that was put
somewhere plausible), which is what separates a planner from chance in a design. Deterministic given `seed`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from smartmask.conditioning.vocabulary import Vocabulary
from smartmask.design.background import StuffStats, plan_background
from smartmask.design.layered import DesignLayer, LayeredLayout
from smartmask.evaluation.oracle import ClassShapes
from smartmask.evaluation.plausibility import placement_check, plausibility_rate
from smartmask.lake.paths import dataset_dir
from smartmask.planner.base import Planner, PlannerError
from smartmask.planner.check import captions_by_image, random_box, train_boxes


def _briefs(d: Path, images: list[dict], n_scenes: int, max_objects: int, seed: int) -> list[dict]:
    """Up to `n_scenes` val images with >= 2 thing layers: size, caption, thing labels back to front."""
    val = {r["image_id"]: r for r in images if r["split"] == "val"}
    if not val:
        return []
    layers = pq.read_table(d / "layers", columns=["image_id", "layer", "label", "is_stuff"],
                           filters=[("image_id", "in", list(val))]).to_pylist()
    things: dict[str, list[tuple[int, str]]] = {}
    for r in layers:
        if not r["is_stuff"]:
            things.setdefault(r["image_id"], []).append((r["layer"], r["label"]))
    captions = captions_by_image(d)
    ids = sorted(i for i, t in things.items() if len(t) >= 2)
    pick = np.random.default_rng(seed).permutation(len(ids))[:n_scenes]
    return [{"image_id": ids[i], "height": val[ids[i]]["height"], "width": val[ids[i]]["width"],
             "context": captions.get(ids[i], ""), "objects": [lab for _, lab in sorted(things[ids[i]])][:max_objects]}
            for i in sorted(pick.tolist())]


def design_check(lake: str | Path, dataset: str, version: str, planner: Planner, *, n_scenes: int = 40,
                 max_objects: int = 8, seed: int = 0, shapes: ClassShapes | None = None) -> dict:
    """The check of the module docstring. Returns `plausibility_planner` / `plausibility_random` (shares of the
    judged placements), `judged_*`, `ratio` (planner / random), `scenes` (0, with no numbers, when no held-out
    image holds two things), `placements`, `planner_errors`."""
    lake = Path(lake)
    d = dataset_dir(lake, dataset, version)
    images = pq.read_table(d / "images", columns=["image_id", "split", "height", "width"]).to_pylist()
    briefs = _briefs(d, images, n_scenes, max_objects, seed)
    if not briefs:  # nothing to design from: an answer with no numbers, not an error
        return {"dataset": dataset, "version": version, "planner": planner.id, "seed": seed, "scenes": 0,
                "placements": 0, "planner_errors": 0, "ratio": None, "plausibility_planner": None,
                "plausibility_random": None, "judged_planner": 0, "judged_random": 0}
    class_boxes, pooled = train_boxes(d, {r["image_id"]: (r["height"], r["width"])
                                          for r in images if r["split"] == "train"})
    shapes = shapes or ClassShapes.fit(lake, dataset, version, split="train", seed=seed)
    vocab = Vocabulary.read(d / "vocabulary")
    stats = StuffStats.from_lake(lake, dataset, version)
    rng = np.random.default_rng([seed, 2])
    verdicts: dict[str, list] = {"planner": [], "random": []}
    errors = placements = 0
    for b, brief in enumerate(briefs):
        H, W = brief["height"], brief["width"]
        plan = plan_background(brief["context"], brief["objects"], vocab.labels, seed=seed + b, stats=stats)
        background = plan.layers(W, H, seed + b) if plan else []
        for arm in ("planner", "random"):
            design = LayeredLayout(width=W, height=H, context=brief["context"], layers=tuple(background))
            for i, obj in enumerate(brief["objects"]):
                scene = design.scene()
                if arm == "planner":
                    try:
                        box = planner.propose(scene, obj, brief["context"], n=1, seed=seed + i)[0].box
                    except PlannerError:
                        errors += 1
                        continue
                else:
                    box = random_box(class_boxes.get(obj, pooled), rng, W, H)
                mask = shapes.fit_to_box(obj, tuple(float(c) for c in box), H, W)
                if mask is None or not mask.any():
                    continue
                verdicts[arm].append(placement_check(mask, obj, scene))
                placements += arm == "planner"
                design = design.with_layers((*design.layers, DesignLayer(label=obj, mask_HW=mask)))
    rates = {arm: plausibility_rate(vs) for arm, vs in verdicts.items()}
    ratio = rates["planner"] / rates["random"] if rates["planner"] is not None and rates["random"] else None
    return {"dataset": dataset, "version": version, "planner": planner.id, "seed": seed, "scenes": len(briefs),
            "placements": placements, "planner_errors": errors, "ratio": ratio,
            **{f"plausibility_{arm}": r for arm, r in rates.items()},
            **{f"judged_{arm}": sum(v is not None for v in vs) for arm, vs in verdicts.items()}}
