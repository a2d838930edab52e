"""`smartmask demo` end to end with a fixed number of training steps — the paper's core claim in miniature.

The flow runs in this process (the same function `smartmask demo` calls) and the test reads its returned result:
every stage ran (dataset, model registered after exactly STEPS steps, the held-out checks through the pipeline
object, an insert bit-identical outside its dilated mask), and box-guided masks beat the tight box at both
resolutions by at least the margins below. A fixed step count, not the CLI's time budget, so the model and its
margins are the same on any machine; the margins are what this step count reached on every recorded run
(docs/experiments.md), with room for the run-to-run spread of two-worker training.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smartmask.lake.query import run_query

STEPS = 400
# Margins over the box at STEPS steps (IoU points): model resolution (32×32 in the model's frame, the box's window,
# every held-out sample) and image resolution (`suggest --bbox`, rank-1 of 4). With the focus view this test's
# 400-step run reached +0.196 and +0.163 (2026-12-02), a 482-step demo +0.217 and +0.192 (docs/experiments.md).
MARGIN_GRID = 0.12
MARGIN_IMAGE = 0.08
BULK_ITEMS = 24  # the CLI's demo runs 100; the stage's machinery is the same

pytestmark = pytest.mark.slow


def test_demo_end_to_end_learns_to_beat_the_box(tmp_path, prefect_harness):
    from flows.demo import demo

    lake = tmp_path / "lake"
    out = demo(lake=str(lake), train_steps=STEPS, bulk_items=BULK_ITEMS)
    print(out["report"])
    dataset_version, model_version = out["dataset_version"], out["model_version"]
    assert out["last_id"] == model_version
    t = run_query(lake, "SELECT count(*) AS n, count(DISTINCT label) AS labels FROM layers WHERE version = ?",
                  [dataset_version]).to_pylist()[0]
    assert t["n"] > 200 * 15 and t["labels"] >= 20
    m = run_query(lake, "SELECT dataset_version, steps FROM models WHERE version = ?", [model_version]).to_pylist()
    assert m == [{"dataset_version": dataset_version, "steps": STEPS}]

    grid, path, ins = out["heldout"], out["product_path"], out["insert"]
    assert grid is not None and path is not None and ins is not None, "a held-out stage did not run"
    assert grid["samples"] >= 64 and path["box_items"] >= 10
    assert path["maskfree_pairwise_iou"] < 0.9  # mask-free suggestions differ across seeds
    assert abs(path["dpm20_iou"] - path["ddim50_iou"]) <= 0.01  # both solvers solve the same ODE
    assert ins["identical_outside"] and ins["changed_inside"] > 0

    # A layout of >= 6 objects designed from scratch with the prior planner, stored, rendered by the world's renderer.
    design = out["design"]
    assert design is not None and len(design["placed"]) >= 6, design
    assert (Path(design["folder"]) / "layout.png").is_file() and Path(design["rendered"]).is_file()
    assert f"rendered: {design['rendered']}" in out["report"]

    bulk = out["bulk"]
    assert bulk is not None and bulk["status"] == "complete" and bulk["in"] == BULK_ITEMS
    assert bulk["inserted"] + bulk["rejected"] == BULK_ITEMS and bulk["inserted"] >= BULK_ITEMS - 2
    rows = run_query(lake, "SELECT count(*) AS n, sum(changed_outside) AS outside FROM insert_items WHERE run = ?",
                     [bulk["run"]]).to_pylist()[0]
    assert rows == {"n": BULK_ITEMS, "outside": 0}

    grid_margin = grid["model_iou"] - grid["box_iou"]
    image_margin = path["bbox_iou"] - path["box_iou"]
    print(f"margin over the box after {STEPS} steps: {grid_margin:+.3f} at 32x32 ({grid['model_iou']:.3f} vs "
          f"{grid['box_iou']:.3f}, {grid['samples']} samples), {image_margin:+.3f} at image size "
          f"({path['bbox_iou']:.3f} vs {path['box_iou']:.3f}, {path['box_items']} targets)")
    assert grid_margin >= MARGIN_GRID, f"32x32: {grid['model_iou']:.3f} vs the box {grid['box_iou']:.3f}"
    assert image_margin >= MARGIN_IMAGE, f"image size: {path['bbox_iou']:.3f} vs the box {path['box_iou']:.3f}"

    # The evaluation stage (the train flow scored the new model on the default eval set): the tiny SmartMask, the
    # box baseline and the oracle side by side, every metric with its interval, for every guidance type.
    assert out["eval_run"], "the evaluation stage did not run"
    agg = run_query(lake, "SELECT model_version, guidance, metric, value, low, high, n FROM eval_summary WHERE run = ? "
                    "AND stat = 'aggregate' AND class = '*' AND size_bin = '*'", [out["eval_run"]]).to_pylist()
    got = {(r["model_version"], r["guidance"], r["metric"]) for r in agg}
    for g in ("box", "point", "scribble"):
        for who in (model_version, "baseline:box", "baseline:oracle"):
            for metric in ("iou", "boundary_f", "l2_bg", "clip_score", "local_fid"):
                assert (who, g, metric) in got, (who, g, metric)
    for metric in ("iou", "best_of_n_iou", "diversity", "plausibility", "l2_bg", "local_fid"):
        assert (model_version, "none", metric) in got, metric
    assert all(r["low"] <= r["value"] <= r["high"] and r["n"] >= 10 for r in agg if r["metric"] != "plausibility")
    for text in (model_version, "baseline:box", "baseline:oracle", "Table 1 style", "Table 2 style",
                 "Margin over the box by object size", "quality, box guidance at image resolution",
                 "of the box → oracle gap closed"):
        assert text in out["report"]
    # The margin over the box by object size, each with its interval, and the quality lines that print them.
    sizes = run_query(lake, "SELECT size_bin, value, low, high FROM eval_summary WHERE run = ? AND stat = 'paired' "
                      "AND guidance = 'box' AND metric = 'iou' AND against = 'baseline:box' AND size_bin <> '*'",
                      [out["eval_run"]]).to_pylist()
    assert {r["size_bin"] for r in sizes} >= {"<1%", "1-5%"}
    assert all(r["low"] <= r["value"] <= r["high"] for r in sizes)
    assert grid["oracle_iou"] > grid["box_iou"] and "global_model_iou" in grid
    # The demo ends by writing the dashboard and printing its path.
    assert out["dashboard"] == str(lake / "dashboard.html") and f"dashboard: {out['dashboard']}" in out["report"]
