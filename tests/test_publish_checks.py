"""What publish refuses (incomplete shards or captions), what it stores when nothing is accepted, and what the
card escapes. All in-process through `smartmask.rebuild` (no Prefect), on a small synthetic world."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from smartmask.config import RebuildConfig, SynthConfig
from smartmask.lake.io import write_parquet_atomic
from smartmask.lake.paths import dataset_dir
from smartmask.lake.query import run_query
from smartmask.publish import NoAcceptedRecords, PublishRefused, publish
from smartmask.rebuild import caption_template, plan_rebuild, process_shard, rebuild
from smartmask.registry import NotFound, resolve_dataset
from smartmask.synth import generate

REPO = Path(__file__).resolve().parents[1]
CFG = RebuildConfig.for_tests()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(out, 10, seed=11, config=SynthConfig.small(), workers=1)
    return out


def _staged(world: Path, lake: Path):
    plan = plan_rebuild(f"cocoa:{world / 'annotations.json'}", world / "images", "w", lake, CFG)
    for job in plan.jobs:
        process_shard(job)
    caption_template(plan)
    return plan


def test_publish_refuses_captions_for_part_of_the_images_and_a_rerun_repairs_it(world, tmp_path):
    lake = tmp_path / "lake"
    plan = _staged(world, lake)
    part = plan.staging / "captions" / "part-00000.parquet"
    t = pq.read_table(part)
    write_parquet_atomic(t.slice(0, 4), part)  # what a racing run left: captions for 4 of 10 images
    with pytest.raises(PublishRefused, match="captions cover 4 of 10 accepted images"):
        publish(plan)
    assert not plan.published and not (plan.staging / "_captions_done.json").exists()
    m = rebuild(f"cocoa:{world / 'annotations.json'}", world / "images", "w", lake, CFG)
    d = dataset_dir(lake, "w", m["version"])
    assert pq.read_table(d / "captions").num_rows == pq.read_table(d / "images").num_rows == 10


def test_publish_refuses_a_shard_whose_parts_do_not_match_its_marker(world, tmp_path):
    lake = tmp_path / "lake"
    plan = _staged(world, lake)
    part = plan.staging / "layers" / "part-00001.parquet"
    write_parquet_atomic(pq.read_table(part).slice(0, 1), part)
    with pytest.raises(PublishRefused, match="shard 1's layers part has 1 rows"):
        publish(plan)
    assert [j.index for j in plan.pending()] == [1]  # its marker is gone: a rerun redoes exactly that shard
    m = rebuild(f"cocoa:{world / 'annotations.json'}", world / "images", "w", lake, CFG)
    assert pq.read_table(dataset_dir(lake, "w", m["version"]) / "layers").num_rows == m["counts"]["region"]["accepted"]


def test_a_source_with_every_record_rejected_keeps_its_rejects_and_fails_with_one_line(world, tmp_path):
    images = tmp_path / "no-images"
    images.mkdir()  # every file missing: every image and region rejected
    lake = tmp_path / "lake"
    spec = f"cocoa:{world / 'annotations.json'}"
    with pytest.raises(NoAcceptedRecords) as e:
        rebuild(spec, images, "w", lake, CFG)
    msg = str(e.value)
    assert "\n" not in msg and "10 in" in msg and "image_missing x10" in msg
    rows = run_query(lake, "SELECT record_kind, reason, count(*) AS n FROM rejects GROUP BY ALL ORDER BY ALL").to_pylist()
    assert {(r["record_kind"], r["reason"]) for r in rows} >= {("image", "image_missing"), ("region", "image_rejected")}
    assert sum(r["n"] for r in rows if r["record_kind"] == "image") == 10
    with pytest.raises(NotFound, match="no published version"):
        resolve_dataset(lake, "w")  # never trained on
    with pytest.raises(NoAcceptedRecords):  # a rerun says the same, without redoing anything
        rebuild(spec, images, "w", lake, CFG)
    card = next(lake.glob("datasets/name=w/version=*/CARD.md")).read_text()
    assert "No record of the source was accepted" in card and "image_missing" in card


# slow: with the Prefect test harness it needs (started once per session, ~25 s) it costs more than 20 s.
@pytest.mark.slow
def test_the_cli_reports_an_all_rejected_source_in_one_line(world, tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    images = tmp_path / "no-images"
    images.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "flows", "rebuild", "--source", f"cocoa:{world / 'annotations.json'}", "--images",
         str(images), "--name", "w", "--lake", str(tmp_path / "lake"), "--workers", "1"], cwd=REPO,
        env={**__import__("os").environ, "PREFECT_API_URL": PREFECT_API_URL.value()}, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "image_missing x10" in errors[0]


def test_a_lake_path_with_a_quote_and_a_script_label_in_the_card(world, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(world, src)
    doc = json.loads((src / "annotations.json").read_text())
    for ann in doc["annotations"]:
        for r in ann["regions"]:
            if r["name"].strip() == "person":
                r["name"] = "<script>alert(1)</script>"
            elif r["name"].strip() == "tree":
                r["name"] = "![x](https://evil.example/p.png) [click](javascript:alert(1)) **b** _i_ # h | c"
    (src / "annotations.json").write_text(json.dumps(doc))
    lake = tmp_path / "o'brien; DROP TABLE x; -- [2] *" / "lake"  # SQL text and DuckDB glob characters
    m = rebuild(f"cocoa:{src / 'annotations.json'}", src / "images", "w", lake, CFG)
    d = dataset_dir(lake, "w", m["version"])
    card = (d / "CARD.md").read_text()
    assert "<script>" not in card and "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in card
    assert ("\\!\\[x\\]\\(https://evil.example/p.png\\) \\[click\\]\\(javascript:alert\\(1\\)\\) \\*\\*b\\*\\* \\_i\\_ "
            "\\# h \\| c") in card  # every Markdown construct shown as text
    stats = pq.read_table(d / "stats").to_pylist()
    assert any(r["section"] == "class" and r["key"] == "<script>alert(1)</script>" for r in stats)  # data as is
    assert run_query(lake, "SELECT count(*) AS n FROM images").to_pylist() == [{"n": 10}]


@pytest.mark.parametrize("kind, content", [
    ("jsonl", "[1, 2]\n[3]\n"),  # every line malformed: no image at all
    ("cocoa", '{"images": [], "annotations": []}'),  # nothing in it
])
def test_a_source_without_any_image_record_ends_in_one_line_too(kind, content, tmp_path):
    src = tmp_path / "src.json"
    src.write_text(content)
    (tmp_path / "images").mkdir()
    with pytest.raises(NoAcceptedRecords) as e:
        rebuild(f"{kind}:{src}", tmp_path / "images", "w", tmp_path / "lake", CFG)
    assert "\n" not in str(e.value)
    n = run_query(tmp_path / "lake", "SELECT count(*) AS n FROM rejects").to_pylist()[0]["n"]
    assert n == (2 if kind == "jsonl" else 0)


def test_a_rejects_only_version_is_listed_but_never_newest(world, tmp_path):
    from smartmask.lake.catalog import list_datasets

    lake = tmp_path / "lake"
    good = rebuild(f"cocoa:{world / 'annotations.json'}", world / "images", "w", lake, CFG)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoAcceptedRecords):
        rebuild(f"cocoa:{world / 'annotations.json'}", tmp_path / "empty", "w", lake, CFG)  # newer, rejects only
    rows = {r["version"]: r for r in list_datasets(lake).to_pylist()}
    assert len(rows) == 2 and rows[good["version"]]["newest"] and rows[good["version"]]["status"] == "published"
    bad = next(r for v, r in rows.items() if v != good["version"])
    assert not bad["newest"] and bad["status"] == "no_accepted_records" and bad["images_accepted"] == 0
    assert resolve_dataset(lake, "w") == ("w", good["version"])
