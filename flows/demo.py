"""Flow `demo`: every stage that exists, on the embedded synthetic world. Each issue adds its stage.

Now: synth → rebuild (ingest, validate, order, template captions, card, publish) → DuckDB summary → train the tiny
preset on 2 Ray workers for a time budget (or a fixed step count) → register the model → evaluate it on the
dataset version's default eval set (flow `evaluate`, Ray Data: the tiny SmartMask, the box baseline and the
class-shape oracle side by side, every metric with its interval; the report is printed) → held-out checks through
the pipeline object: IoU of box-guided masks vs the box at 32×32
→ the product path on held-out scenes (`suggest` with a box, mask-free diversity, DPM-Solver 20 vs DDIM 50, at
image resolution) → one `insert` with the `synthetic` inpainter (the world's own renderer, not a generative model),
whose output must equal the input outside the dilated mask → a layout of seven objects designed from scratch with
the prior planner (`smartmask.design`), stored in the lake and rendered by the synthetic renderer → a bulk insertion
run (flow `bulk_insert`, Ray Data)
over `bulk_items` held-out items with their ground-truth layouts and the `synthetic` inpainter, its summary printed.

The synthetic world is generated under `<lake>/raw/synth-seed<S>-n<N>/` (the images the dataset's rows point
at must outlive the run) and skipped when already there; the rebuild of unchanged inputs is a no-op.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.rebuild_dataset import rebuild_dataset
from smartmask.config import SynthConfig
from smartmask.lake.paths import lake_root
from smartmask.lake.query import format_table, run_query


@task(name="synth-world", cache_policy=NO_CACHE)
def synth_task(out: Path, scenes: int, seed: int) -> Path:
    from smartmask.synth import generate

    ann = out / "annotations.json"
    if ann.exists():
        return ann
    return generate(out, scenes, seed, SynthConfig(), workers=2)


SUMMARY = [
    ("layers per class", "SELECT label, count(*) AS instances, round(avg(occlusion_rate), 3) AS mean_occlusion "
                         "FROM layers WHERE version = ? GROUP BY label ORDER BY instances DESC"),
    ("images", "SELECT count(*) AS images, round(avg(n_layers), 1) AS layers_per_image, "
               "sum(cycles_broken) AS cycles_broken FROM images WHERE version = ?"),
    ("rejects by reason", "SELECT reason, count(*) AS n FROM rejects WHERE version = ? GROUP BY reason ORDER BY n DESC"),
    ("captions (first 3)", "SELECT image_id, captioner, caption FROM captions WHERE version = ? "
                           "ORDER BY image_id LIMIT 3"),
]


# The demo's evaluation: 4 suggestions per item (best-of-N and diversity need several) of 10 DPM steps: the whole
# default eval set in about a minute on 2 cores (20 steps: twice that).
DEMO_EVAL = {"eval_n_suggestions": 4, "eval_steps": 10}


@task(name="heldout-checks", cache_policy=NO_CACHE)
def heldout_task(root: Path, model_version: str, dataset: str, dataset_version: str) -> tuple[dict, dict] | None:
    """Both held-out checks through the pipeline: every held-out sample at 32×32 (91 in the default world; at most
    128), and the suggest path at image size (the box claim on up to 40 targets, the rest on 10)."""
    import json

    from smartmask import presets
    from smartmask.evaluation.heldout import grid_check, product_path_check
    from smartmask.evaluation.oracle import ClassShapes
    from smartmask.inference.pipeline import SmartMaskPipeline
    from smartmask.lake.paths import model_dir
    from smartmask.training.samples import SampleConfig

    pipe = SmartMaskPipeline.from_lake(root, model_version)
    sample = json.loads((model_dir(root, model_version) / "training.json").read_text())["sample"]
    try:
        shapes = ClassShapes.fit(root, dataset, dataset_version, split="train")
        # The 32×32 check keeps one population whatever the preset trains on: targets of at least 1% of the image.
        floor = presets.target_floor_area(root, dataset, dataset_version, 0.01)
        grid = grid_check(pipe, dataset, dataset_version, SampleConfig(**sample | {"min_target_area": floor}),
                          n_samples=128, shapes=shapes)
        path = product_path_check(pipe, dataset, dataset_version, n_items=10, box_items=40)
    except ValueError:  # too few scenes for a held-out split
        return None
    return grid, path


def _gap(model: float, box: float, oracle: float) -> str:
    return f"{(model - box) / (oracle - box):.0%}" if oracle - box > 1e-9 else "n/a"


def quality_lines(eval_folder: str | None, grid: dict | None) -> list[str]:
    """The model's margin over the box at image resolution (default eval set, with intervals, all objects and by
    size) and the share of the box → oracle gap it closes at model resolution (32×32)."""
    from smartmask.evaluation.store import read_summary

    out = []
    if eval_folder:
        rows = [r for r in read_summary(Path(eval_folder)) if r["method"] == "smartmask" and r["guidance"] == "box"]
        paired = {r["size_bin"]: r for r in rows if r["stat"] == "paired" and r["against"] == "baseline:box"
                  and r["metric"] == "iou"}
        gap = {r["size_bin"]: r for r in rows if r["stat"] == "gap"}
        parts = [f"{'all' if s == '*' else s} ({paired[s]['n']}): {paired[s]['value']:+.3f} "
                 f"[{paired[s]['low']:+.3f}, {paired[s]['high']:+.3f}]" for s in ("*", "<1%", "1-5%", ">5%")
                 if s in paired]
        if parts:
            g = gap.get("*")
            closed = f"; gap to the oracle closed {g['value']:.0%} [{g['low']:.0%}, {g['high']:.0%}]" if g else ""
            out.append("quality, box guidance at image resolution (default eval set, model − box IoU, 95% "
                       f"interval): {'; '.join(parts)}{closed}")
    if grid and "oracle_iou" in grid:
        line = (f"quality at 32x32, {grid['samples']} held-out samples: model {grid['model_iou']:.3f}, box "
                f"{grid['box_iou']:.3f}, class-mean oracle {grid['oracle_iou']:.3f}: "
                f"{_gap(grid['model_iou'], grid['box_iou'], grid['oracle_iou'])} of the box → oracle gap closed")
        if "global_model_iou" in grid:
            line += (" in the model's frame (the box's window); on the global 32x32 grid model "
                     f"{grid['global_model_iou']:.3f}, box {grid['global_box_iou']:.3f}, oracle "
                     f"{grid['global_oracle_iou']:.3f}: "
                     f"{_gap(grid['global_model_iou'], grid['global_box_iou'], grid['global_oracle_iou'])}")
        out.append(line)
    return out


@task(name="insert-one", cache_policy=NO_CACHE)
def insert_task(root: Path, model_version: str, dataset: str, dataset_version: str) -> dict | None:
    """`smartmask insert` on one held-out scene: box-guided suggestion → synthetic inpainter → paste-back."""
    import numpy as np
    import pyarrow.parquet as pq

    from smartmask.boxes import mask_box
    from smartmask.evaluation.heldout import heldout_targets
    from smartmask.inference.images import load_image
    from smartmask.inference.pipeline import SmartMaskPipeline
    from smartmask.inference.suggest import Control, SuggestConfig
    from smartmask.lake.paths import dataset_dir, run_dir

    items = heldout_targets(root, dataset, dataset_version, 1, min_area_frac=0.02, seed=7)
    if not items:
        return None
    it = items[0]
    uri = pq.read_table(dataset_dir(root, dataset, dataset_version) / "images", columns=["uri"],
                        filters=[("image_id", "=", it["image_id"])]).column("uri")[0].as_py()
    image = load_image(uri)
    pipe = SmartMaskPipeline.from_lake(root, model_version, inpainter="synthetic")
    control = Control("box", box=tuple(float(v) for v in mask_box(it["mask"])))
    done = pipe.insert(it["label"], it["caption"], image=image, control=control, config=SuggestConfig(n=4),
                       layout_from=f"{dataset}@{dataset_version}:{it['image_id']}:{it['k']}")
    out = run_dir(root, "insert", f"demo-{model_version}-{it['image_id']}")
    done.write(out)
    outside = ~done.dilated
    return {"image_id": it["image_id"], "object": it["label"], "out": str(out),
            "changed_inside": int(np.any(done.image != image, axis=2).sum()),
            "identical_outside": bool(np.array_equal(done.image[outside], image[outside]))}


@task(name="bulk-catalog", cache_policy=NO_CACHE)
def bulk_catalog_task(root: Path, raw: Path, dataset_version: str, model_version: str, n: int) -> Path | None:
    """A JSONL catalog of `n` held-out items (box / point / no guidance in turn), beside the world's images."""
    from smartmask.bulk.synthetic import heldout_rows, write_jsonl

    try:
        rows = heldout_rows(root, "synth", dataset_version, n)
    except ValueError:  # too few scenes for a held-out split
        return None
    return write_jsonl(rows, raw / f"bulk-catalog-{model_version}-n{n}.jsonl")


def bulk_stage(root: Path, raw: Path, dataset_version: str, model_version: str, n: int) -> dict | None:
    from flows.bulk_insert import bulk_insert
    from smartmask.bulk.config import BulkConfig

    catalog = bulk_catalog_task(root, raw, dataset_version, model_version, n)
    if catalog is None:
        return None
    # 2 suggestions of 10 DPM steps, a worker per core (at most 2): the bulk stage shows the machinery in about a
    # minute on 2 cores.
    import os

    from smartmask.bulk.config import default_stages

    cfg = BulkConfig(model_version=model_version, inpainter="synthetic", n_suggestions=2, steps=10,
                     allow_roots=(str(raw / "images"),), stages=default_stages(min(2, os.cpu_count() or 1)))
    return bulk_insert(str(catalog), f"demo-{model_version}-n{n}", cfg, str(root))


# The demo's design (paper Fig. 7): seven synthetic-world objects from an empty canvas with the prior planner, 4
# suggestions of 10 steps per box: a few seconds on 2 cores.
DEMO_DESIGN = {"objects": ("tree", "house", "car", "bench", "person", "dog", "bird"), "canvas": (320, 240),
               "context": "a park with a lake: a house behind a tree, a car, a person with a dog by a bench, a "
                          "bird in the sky", "planner": "prior", "n_boxes": 4, "steps": 10, "n_suggestions": 4}


def design_step(root: Path, model_version: str, seed: int = 0) -> dict:
    """Design a layout from scratch, store it, render it with the synthetic renderer beside it."""
    from smartmask.design.designer import DesignConfig, Designer
    from smartmask.design.render import render_layout
    from smartmask.design.store import layout_dir, save_layout, save_render, version_ref

    cfg = DesignConfig(model=model_version, seed=seed, **DEMO_DESIGN)
    designer = Designer.from_lake(root, cfg)
    result = designer.design(cfg)
    stored = save_layout(root, result.layout, vocabulary=f"model:{model_version}", operation={
        "op": "design", "planner": designer.planner.id, "model_version": model_version, "seed": seed,
        "placed": list(result.placed), "failed": list(result.failed)})
    folder = layout_dir(root, stored.layout_id, stored.version)
    rendered = save_render(root, stored, render_layout(stored, "synthetic", seed=seed, lake=root),
                           renderer="synthetic", seed=seed)
    plausible = [s.plausibility["plausible"] for s in result.steps if s.plausibility is not None]
    return {"ref": version_ref(stored), "folder": str(folder), "rendered": str(rendered / "image.png"), "placed": list(result.placed),
            "failed": list(result.failed), "objects": len(result.steps), "plausible": sum(plausible),
            "judged": len(plausible), "planner": designer.planner.id, "lines": [s.line() for s in result.steps]}


@task(name="design", cache_policy=NO_CACHE)
def design_task(root: Path, model_version: str, seed: int = 0) -> dict | None:
    """`design_step`; a design that fails is logged and skipped: it must not end the demo."""
    try:
        return design_step(root, model_version, seed)
    except Exception as e:  # noqa: BLE001 - any failure of this step is reported, the demo goes on
        from prefect import get_run_logger

        get_run_logger().warning("design step failed: %s: %s", type(e).__name__, " ".join(str(e).split()))
        return None


@flow(name="demo")
def demo(lake: str | None = None, scenes: int = 200, seed: int = 0, train_budget_s: float = 180.0,
         train_steps: int | None = None, bulk_items: int = 100) -> dict:
    """Returns the versions, every check's numbers and the printed report (the CLI prints it, then the last id).

    Training runs for `train_budget_s` seconds (what a user gets on their machine), or exactly `train_steps` steps
    when given (what a test needs: the same model on any machine). 0 for either skips training."""
    root = lake_root(lake)
    raw = root / "raw" / f"synth-seed{seed}-n{scenes}"
    ann = synth_task(raw, scenes, seed)
    manifest = rebuild_dataset(f"cocoa:{ann}", str(raw / "images"), "synth", str(root))
    version = manifest["version"]
    c = manifest["counts"]
    report = [f"dataset synth@{version}: " + ", ".join(f"{k} {v['accepted']}/{v['in']} accepted" for k, v in c.items())]
    for title, sql in SUMMARY:
        width = 120 if title.startswith("captions") else 40
        report.append(f"-- {title}\n{format_table(run_query(root, sql, [version]), max_rows=30, max_width=width)}")
    report.append(f"dataset card: {root / 'datasets' / 'name=synth' / f'version={version}' / 'CARD.md'}")
    if (train_budget_s <= 0 and train_steps is None) or train_steps == 0:
        return {"dataset_version": version, "report": "\n".join(report), "last_id": version}
    from flows.train import TrainJob, train

    if train_steps is not None:
        job = TrainJob(dataset=f"synth@{version}", workers=2, lake=str(root), steps=train_steps, **DEMO_EVAL)
        how = "a fixed step count"
    else:
        job = TrainJob(dataset=f"synth@{version}", workers=2, lake=str(root), steps=100_000,
                       time_budget_s=train_budget_s, **DEMO_EVAL)
        how = f"a {train_budget_s:.0f} s budget"
    trained = train(job)
    mv = trained["model_version"]
    report.append(f"model {mv}: tiny preset, 2 Ray workers, {trained['metrics'].get('step')} steps ({how}), "
                  f"loss {trained['metrics'].get('loss'):.4f}, val loss {trained['metrics'].get('val_loss'):.4f}")
    if trained.get("eval_report"):  # the train flow scored the new model on the default eval set
        report.append(trained["eval_report"])
        report.append(f"evaluation run {trained['eval_run']}: {trained['eval_folder']} (query it: SELECT * FROM "
                      f"eval_summary WHERE run = '{trained['eval_run']}')")
    elif trained.get("eval_error"):
        report.append(f"evaluation skipped: {trained['eval_error']}")
    checks = heldout_task(root, mv, "synth", version)
    check, path = checks if checks else (None, None)
    if check:
        report.append(f"held-out, box guidance ({check['samples']} samples): mask IoU {check['model_iou']:.3f} "
                      f"vs the box itself {check['box_iou']:.3f}")
    report += quality_lines(trained.get("eval_folder"), check)
    if path:
        report.append(f"suggest --bbox, held-out, image resolution ({path['box_items']} targets, rank-1 of "
                      f"{path['suggestions']}): "
                      f"rank-1 IoU {path['bbox_iou']:.3f} vs the box itself {path['box_iou']:.3f}")
        report.append(f"mask-free suggestions: mean pairwise IoU {path['maskfree_pairwise_iou']:.3f} across seeds "
                      f"(diversity {1 - path['maskfree_pairwise_iou']:.3f})")
        report.append(f"solvers: DPM-Solver++ 20 steps IoU {path['dpm20_iou']:.3f} vs DDIM 50 steps "
                      f"{path['ddim50_iou']:.3f} (difference {abs(path['dpm20_iou'] - path['ddim50_iou']):.3f}; "
                      f"same-seed masks agree at IoU {path['dpm_vs_ddim_iou']:.3f})")
    ins = insert_task(root, mv, "synth", version)
    if ins:
        report.append(f"insert {ins['object']!r} into held-out image {ins['image_id']} (synthetic inpainter): "
                      f"{ins['changed_inside']} pixels changed, outside the dilated mask identical: "
                      f"{ins['identical_outside']} -> {ins['out']}")
    designed = design_task(root, mv, seed)
    if designed:
        report.append(f"design {designed['ref']} with {designed['planner']}: placed {len(designed['placed'])}/"
                      f"{designed['objects']} objects ({designed['plausible']}/{designed['judged']} plausible "
                      f"placements)")
        report.append(f"design: {designed['folder']}/ (layout.png, layout_legend.png); rendered: "
                      f"{designed['rendered']}")
    else:
        report.append("design: not written (see the log)")
    bulk = bulk_stage(root, raw, version, mv, bulk_items) if bulk_items > 0 else None
    if bulk:
        report.append(bulk["summary"])
        report.append(f"bulk insertion outputs: {bulk['folder']} (query them: SELECT * FROM insert_items WHERE run = "
                      f"'{bulk['run']}')")
    from tasks.dashboard import dashboard_task

    dash = dashboard_task(root)
    report.append(f"dashboard: {dash}" if dash else "dashboard: not written (see the log)")
    return {"dataset_version": version, "model_version": mv, "heldout": check, "dashboard": dash, "product_path": path, "insert": ins,
            "bulk": bulk, "design": designed, "eval_run": trained.get("eval_run"), "eval_folder": trained.get("eval_folder"), "report": "\n".join(report), "last_id": mv}


if __name__ == "__main__":
    out = demo()
    print(out["report"])
    print(out["dataset_version"])
