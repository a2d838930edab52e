"""The bulk stages in one process (`run_inline`, no Ray): the segmenter path, a model failure on one item, and the
`bulk-insert` command's one-line refusals before anything starts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from bulk_catalogs import write_catalog
from PIL import Image
from test_segment import build_tiny_mask2former
from tiny_models import register_tiny_smartmask
from typer.testing import CliRunner

from flows.cli import app
from smartmask.bulk.config import BulkConfig
from smartmask.bulk.stages import LayoutStage, SuggestStage, decode_rows, read_catalog, run_inline
from smartmask.bulk.store import Committer, run_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def lake(synthetic_lake_copy, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("bulk-stage-model")
    mv = register_tiny_smartmask(synthetic_lake_copy["lake"], synthetic_lake_copy["version"], work, "bulk-stages")
    return synthetic_lake_copy | {"model": mv}


def _cat(tmp_path: Path, rows: list[dict]) -> Path:
    p = tmp_path / "cat.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_segmenter_layout_path_inline(lake, tmp_path):
    """Rows without layout_from get the segmenter's layout (built once per stage object) and are inserted."""
    seg = build_tiny_mask2former(tmp_path / "m2f")
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8)).save(img)
    rows = [{"image_uri": "photo.png", "object": "person", "context": "a person on a street", "bbox": [20, 10, 70, 90],
             "seed": s, "n_suggestions": 2} for s in range(3)]
    cat = _cat(tmp_path, rows)
    cfg = BulkConfig.for_tests(lake["model"], segmenter=str(seg), steps=2)
    out = tmp_path / "run"
    c = Committer(out)
    batches = list(run_inline(read_catalog(cat, cfg, set()), lake["lake"], cfg, str(tmp_path), out, "seg"))
    for b in batches:
        c.add(b)
    c.close()
    got = [r for b in batches for r in b]
    assert [r["status"] for r in got] == ["inserted"] * 3, [r["reject_detail"] for r in got]
    assert all(r["segmenter"] == str(seg) and r["t_layout_s"] is not None for r in got)
    assert run_counts(out)["inserted"] == 3
    # the box bounds every chosen mask (fit_box); different seeds, one image
    assert all(r["mask_bbox"][0] >= 20 and r["mask_bbox"][2] <= 70 for r in got)


def test_a_model_failure_on_one_item_is_that_items_reject(lake, tmp_path):
    cat, _ = write_catalog(lake["lake"], lake["version"], 3, tmp_path)
    cfg = BulkConfig.for_tests(lake["model"], n_suggestions=1, steps=1, allow_roots=(str(lake["world"]),))
    d = cfg.to_dict()
    rows = decode_rows(next(read_catalog(cat, cfg, set())), cfg, str(tmp_path))
    rows = LayoutStage(str(lake["lake"]), d)(rows)
    assert all(r["status"] == "ok" for r in rows)
    layout = json.loads(rows[1]["layout"])
    layout["regions"][0]["rle"] = "not an RLE"  # what a broken upstream stage could hand over
    rows[1]["layout"] = json.dumps(layout)
    rows = SuggestStage(str(lake["lake"]), d)(rows)
    assert [r["status"] for r in rows] == ["ok", "rejected", "ok"]
    assert rows[1]["stage"] == "suggest" and rows[1]["reason"] == "model_failed" and rows[1]["detail"]
    assert rows[1]["image"] is None  # a reject carries no pixels on


@pytest.mark.parametrize("args, flag", [
    (["{cat_missing}", "--out", "r1"], "CATALOG:"),
    (["{cat_unknown}", "--out", "r1"], "unknown column 'colour'"),
    (["{cat}", "--out", "../escape"], "--out:"),
    (["{cat}", "--out", "r1", "--model", "no-such-version"], "--model:"),
    (["{cat}", "--out", "r1", "--stage", "suggest:colour=2"], "--stage:"),
    (["{cat}", "--out", "r1", "--stage", "suggest:concurrency=0"], "--stage"),
    (["{cat}", "--out", "r1", "--allow-root", "{missing_dir}"], "--allow-root:"),
    (["{cat}", "--out", "r1", "--inpainter", "no-such-kind:x"], "--inpainter:"),
    (["{cat}", "--out", "r1", "--segmenter", "{missing_dir}"], "--segmenter:"),
])
def test_bulk_insert_refuses_bad_arguments_in_one_line(lake, tmp_path, args, flag):
    (tmp_path / "cat.jsonl").write_text(json.dumps({"image_uri": "a.png", "object": "a cat"}) + "\n")
    (tmp_path / "unknown.jsonl").write_text(json.dumps({"image_uri": "a.png", "object": "a", "colour": 1}) + "\n")
    subs = {"{cat}": str(tmp_path / "cat.jsonl"), "{cat_missing}": str(tmp_path / "nope.jsonl"),
            "{cat_unknown}": str(tmp_path / "unknown.jsonl"), "{missing_dir}": str(tmp_path / "no-dir")}
    argv = ["bulk-insert", *[subs.get(a, a) for a in args], "--lake", str(lake["lake"]), "--inpainter", "synthetic"]
    if "--inpainter" in args:
        argv = argv[:-2]
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], r.output
    assert not (lake["lake"] / "runs" / "kind=bulk_insert" / "run=r1").exists()


def test_stage_option_parsing():
    from flows.cli_bulk import parse_stage_options

    st = parse_stage_options(["suggest:concurrency=3", "insert:num_gpus=0.5", "write:batch_size=2"], workers=2)
    assert st["suggest"].concurrency == 3 and st["insert"].num_gpus == 0.5 and st["write"].batch_size == 2
    assert st["layout"].concurrency == 2  # --workers for the rest
    assert sys.modules["flows.cli_bulk"]  # the command module is what `smartmask` registers
