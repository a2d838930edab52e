"""The evaluation suite end to end: frozen eval sets, the evaluator through the product path, the summary with its
intervals and paired differences, the report, the `evaluate` flow on Ray Data and the CLI's refusals.

Models are tiny random-init SmartMasks registered in a copy of the session's synthetic lake; the inpainter is the
synthetic world's renderer; Local-FID uses the offline random-conv extractor and CLIP-Score a tiny random CLIP (both
recorded in every row)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny_models import register_tiny_smartmask

from smartmask.evaluation.config import EvalConfig, EvalConfigError
from smartmask.evaluation.eval_set import (
    EvalSetConfig,
    EvalSetError,
    EvalSetExists,
    build_eval_set,
    eval_set_dir,
    load_eval_set,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
OFFLINE = {"fid_extractor": "random-conv:0", "clip": "tiny-random:0", "inpainter": "synthetic"}


@pytest.fixture(scope="module")
def lake(synthetic_lake_copy, tmp_path_factory) -> dict:
    root = synthetic_lake_copy["lake"]
    versions = []
    for i in range(2):
        work = tmp_path_factory.mktemp(f"eval-model-{i}")
        import torch

        torch.manual_seed(100 + i)  # two different random models: two model versions
        versions.append(register_tiny_smartmask(root, synthetic_lake_copy["version"], work, f"eval-tests-{i}"))
    assert versions[0] != versions[1]
    es = build_eval_set(root, "small", "synth", synthetic_lake_copy["version"], EvalSetConfig(n_items=6))
    return synthetic_lake_copy | {"models": versions, "eval_set": es}


def test_eval_set_is_frozen(lake):
    root, version = lake["lake"], lake["version"]
    es = lake["eval_set"]
    assert 1 <= len(es.items) <= 6
    item = es.items[0]
    assert {"bbox", "point", "scribble_rle", "gt_rle", "seed", "layout_from", "size_bin"} <= set(item)
    x0, y0, x1, y1 = item["bbox"]
    assert 0 <= x0 < x1 <= item["width"] and 0 <= y0 < y1 <= item["height"]
    before = (eval_set_dir(root, "small") / "manifest.parquet").read_bytes()
    # The same content again: a no-op returning the same set.
    again = build_eval_set(root, "small", "synth", version, EvalSetConfig(n_items=6))
    assert again.meta["content_hash"] == es.meta["content_hash"]
    # Other content under the same name: refused, and the manifest is untouched.
    with pytest.raises(EvalSetExists, match="never change"):
        build_eval_set(root, "small", "synth", version, EvalSetConfig(n_items=6, seed=1))
    assert (eval_set_dir(root, "small") / "manifest.parquet").read_bytes() == before
    with pytest.raises(EvalSetError, match="no eval set 'nope'"):
        load_eval_set(root, "nope")


def test_edited_eval_set_is_refused(lake, tmp_path):
    import shutil

    src = eval_set_dir(lake["lake"], "small")
    fake_lake = tmp_path / "lake"
    dst = eval_set_dir(fake_lake, "small")
    shutil.copytree(src, dst)
    t = pq.read_table(dst / "manifest.parquet")
    pq.write_table(t.slice(1), dst / "manifest.parquet")  # one item dropped by hand
    with pytest.raises(EvalSetError, match="modified after it was written"):
        load_eval_set(fake_lake, "small")


def test_config_refuses_bad_settings():
    with pytest.raises(EvalConfigError, match="unknown baseline"):
        EvalConfig(baselines=("magic",))
    with pytest.raises(EvalConfigError, match="unknown guidance"):
        EvalConfig(guidance=("lasso",))
    with pytest.raises(EvalConfigError, match="needs a segmenter"):
        EvalConfig(baselines=("inpaint-segment",))
    assert EvalConfig().config_hash() != EvalConfig(steps=10).config_hash()
    assert EvalConfig().config_hash() == EvalConfig(device="cpu").config_hash()


@pytest.fixture(scope="module")
def scored(lake):
    """Every item of the small set scored in-process (no Ray) by the first model, twice."""
    from smartmask.evaluation.evaluator import Evaluator

    cfg = EvalConfig.for_tests(model_version=lake["models"][0], **OFFLINE)
    ev = Evaluator(lake["lake"], "small", cfg)
    rows = [r for it in lake["eval_set"].items for r in ev.evaluate(it)]
    again = [r for r in ev.evaluate(lake["eval_set"].items[0])]
    return {"cfg": cfg, "rows": rows, "again": again, "evaluator": ev}


def test_evaluator_rows_cover_every_method_and_guidance(scored, lake):
    rows, cfg = scored["rows"], scored["cfg"]
    items = lake["eval_set"].items
    keys = {(r["item_id"], r["method"], r["guidance"]) for r in rows}
    assert len(keys) == len(rows) == len(items) * (4 + 2 * 3)  # smartmask × 4 guidance, box & oracle × 3
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == len(rows), [r["error"] for r in rows if r["status"] != "ok"]
    for r in ok:
        assert 0.0 <= r["iou"] <= 1.0 and 0.0 <= r["boundary_f"] <= 1.0
        assert r["fid_extractor"].startswith("random-conv") and r["clip_backbone"].startswith("tiny-random")
        if not r["empty"]:
            assert r["l2_bg"] >= 0.0 and len(r["fake_feat"]) == len(r["real_feat"]) > 0
    model = [r for r in ok if r["method"] == "smartmask"]
    assert all(r["n_masks"] == cfg.n_suggestions and r["best_of_n_iou"] >= r["iou"] - 1e-12 for r in model)
    assert all(r["plausibility"] is not None for r in model if r["guidance"] == "none" and not r["empty"])
    # The box baseline's mask is the box: IoU with the object = its area / the box's area, never 1 for a
    # non-rectangular object, and the oracle's mask lies inside the box.
    box = {r["item_id"]: r for r in ok if r["method"] == "box" and r["guidance"] == "box"}
    assert all(0 < r["iou"] < 1 for r in box.values())


def test_evaluator_is_deterministic(scored):
    first = [r for r in scored["rows"] if r["item_id"] == scored["again"][0]["item_id"]]
    strip = ("seconds_inference", "seconds_metrics")
    assert [{k: v for k, v in r.items() if k not in strip} for r in first] == \
        [{k: v for k, v in r.items() if k not in strip} for r in scored["again"]]


def test_summary_and_report(scored, lake):
    from smartmask.evaluation.report import render
    from smartmask.evaluation.summary import aggregate_rows, compare_versions

    summary = aggregate_rows(scored["rows"], n_boot=200)
    agg = [r for r in summary if r["stat"] == "aggregate" and r["class"] == "*" and r["size_bin"] == "*"]
    got = {(r["model_version"], r["guidance"], r["metric"]) for r in agg}
    mv = lake["models"][0]
    for g in ("box", "point", "scribble"):
        for who in (mv, "baseline:box", "baseline:oracle"):
            for metric in ("iou", "boundary_f", "l2_bg", "clip_score", "local_fid"):
                assert (who, g, metric) in got, (who, g, metric)
    assert (mv, "none", "plausibility") in got
    for r in agg:
        assert r["low"] <= r["value"] <= r["high"] or math.isnan(r["value"]), r
    paired = [r for r in summary if r["stat"] == "paired"]
    assert {r["against"] for r in paired} == {"baseline:box", "baseline:oracle"}
    assert any(r["stat"] == "gap" for r in summary)
    # Against the box, per size bin too: the paired difference on that bin's items only, with its gap row.
    box_rows = [r for r in scored["rows"] if r["method"] == "smartmask" and r["guidance"] == "box"]
    for size in {r["size_bin"] for r in box_rows}:
        mine = {r["item_id"]: r["iou"] for r in box_rows if r["size_bin"] == size}
        theirs = {r["item_id"]: r["iou"] for r in scored["rows"] if r["model_version"] == "baseline:box"
                  and r["guidance"] == "box" and r["item_id"] in mine}
        row = next(r for r in paired if r["guidance"] == "box" and r["size_bin"] == size and r["metric"] == "iou"
                   and r["against"] == "baseline:box")
        assert row["n"] == len(mine) and row["value"] == pytest.approx(
            sum(mine[i] - theirs[i] for i in mine) / len(mine))
        gap = any(r["stat"] == "gap" and r["guidance"] == "box" and r["size_bin"] == size for r in summary)
        assert gap == (len(mine) >= 2)  # a share of a gap needs two items to resample
    # The same rows twice: identical numbers (deterministic bootstrap).
    assert aggregate_rows(scored["rows"], n_boot=200) == summary
    # A version against itself: every difference is exactly 0 and not significant.
    self_pairs = compare_versions(scored["rows"], scored["rows"], n_boot=100)
    assert self_pairs and all(r["value"] == 0 and not r["significant"] for r in self_pairs)
    report = render({"run": "r", "eval_set": "small", "model_version": mv, "config": scored["cfg"].to_dict()},
                    summary, {"items": len(lake["eval_set"].items)})
    for text in ("Table 1 style", "Table 2 style", mv, "baseline:box", "baseline:oracle", "Local-FID",
                 "Quoted from the paper", "19.21", "["):
        assert text in report


@pytest.mark.slow
def test_evaluate_flow_reproduces_and_pairs_versions(lake, prefect_harness):
    """Two model versions on the same frozen set through the flow (Ray Data, 2 actors): complete runs, a
    re-evaluation under another run name reproduces every row, and the second version's summary holds the paired
    difference against the first."""
    from flows.evaluate import evaluate
    from smartmask.evaluation.store import read_items, read_summary
    from smartmask.lake.query import run_query

    root = str(lake["lake"])
    a, b = lake["models"]
    cfg_a = EvalConfig.for_tests(model_version=a, **OFFLINE)
    first = evaluate(cfg_a, "small", root, workers=2)
    assert first["status"] == "complete" and first["failed_rows"] == 0
    assert first["dashboard"] and Path(first["dashboard"]).stat().st_size > 0  # the flow rewrote the dashboard
    again = evaluate(cfg_a, "small", root, run="small-again", workers=2)
    strip = ("seconds_inference", "seconds_metrics")

    def rows(folder):
        return sorted(({k: v for k, v in r.items() if k not in strip} for r in read_items(Path(folder))),
                      key=lambda r: (r["item_id"], r["method"], r["guidance"]))

    assert rows(first["folder"]) == rows(again["folder"])
    assert read_summary(Path(first["folder"])) == read_summary(Path(again["folder"]))
    second = evaluate(EvalConfig.for_tests(model_version=b, **OFFLINE), "small", root, workers=2)
    pairs = run_query(lake["lake"], "SELECT metric, guidance, value, low, high FROM eval_summary WHERE run = ? AND "
                      "stat = 'paired' AND against = ?", [second["run"], a]).to_pylist()
    assert {p["guidance"] for p in pairs} == {"none", "box", "point", "scribble"}
    assert all(p["low"] <= p["value"] <= p["high"] for p in pairs)
    assert f"| {b} | {a} |" in second["report"]
    # A complete run evaluated again is found, not redone.
    assert evaluate(cfg_a, "small", root, workers=2)["attempts"][-1]["items"] == 0
    n = run_query(lake["lake"], "SELECT count(*) AS n FROM eval_items WHERE run = ?", [first["run"]]).to_pylist()
    assert n[0]["n"] == len(lake["eval_set"].items) * 10


@pytest.mark.parametrize("args, flag", [
    (["evaluate", "--model", "nope"], "--model"),
    (["evaluate", "--baselines", "magic"], "--baselines"),
    (["evaluate", "--guidance", "lasso"], "--guidance"),
    (["evaluate", "--eval-set", "missing"], "--eval-set"),
    (["evaluate", "--inpainter", "warp-drive"], "--inpainter"),
    (["evaluate", "--compare", "nope"], "--compare"),
    (["evaluate", "--fid-extractor", "warp"], "--fid-extractor"),
    (["evaluate", "--clip", "/no/such/clip"], "--clip"),
    (["evaluate", "--baselines", "box,sd-inpaint:/no/such/pipeline"], "--baselines"),
])
def test_cli_refuses_bad_jobs(lake, args, flag):
    """In-process (the same Typer app `smartmask` runs): exit 2, one line naming the flag, before Prefect or Ray."""
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, [*args, "--lake", str(lake["lake"])])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}"), result.stderr


def test_cli_eval_set_is_immutable(lake):
    from typer.testing import CliRunner

    from flows.cli import app

    def cli(*args):
        return CliRunner().invoke(app, [*args, "--lake", str(lake["lake"])])

    ok = cli("eval-set", "small", "--dataset", f"synth@{lake['version']}", "--items", "6")
    assert ok.exit_code == 0, (ok.output, ok.exception)
    assert ok.stdout.strip().splitlines()[-1] == "small"
    refused = cli("eval-set", "small", "--dataset", "synth", "--items", "6", "--seed", "1")
    assert refused.exit_code == 2 and "never change" in refused.stderr
    meta = json.loads((eval_set_dir(lake["lake"], "small") / "eval_set.json").read_text())
    assert meta["items"] == len(lake["eval_set"].items)


def test_without_inpainter_only_mask_metrics(lake):
    """`--inpainter none` (what `auto` becomes on a dataset the synthetic renderer cannot draw): mask metrics, no
    insertion metrics; `auto` on the synthetic world is its renderer."""
    from flows.evaluate import pin_specs
    from smartmask.evaluation.evaluator import Evaluator

    cfg = EvalConfig.for_tests(model_version=lake["models"][0], **(OFFLINE | {"inpainter": "auto"}))
    assert pin_specs(cfg, lake["eval_set"]).inpainter == "synthetic"
    ev = Evaluator(lake["lake"], "small", EvalConfig.for_tests(model_version=lake["models"][0],
                                                               **(OFFLINE | {"inpainter": "none"})))
    rows = ev.evaluate(lake["eval_set"].items[0])
    assert rows and all(r["status"] == "ok" for r in rows)
    assert all(r["iou"] is not None and r.get("l2_bg") is None and r.get("fake_feat") is None for r in rows)
