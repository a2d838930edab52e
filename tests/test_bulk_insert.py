"""Bulk insertion on Ray Data end to end: exact counts with bad rows, exactly once across a killed driver and a
killed Ray worker, every output bit-identical to its input outside its dilated mask.

The model is the random-init tiny preset registered in a copy of the synthetic lake (1 suggestion, 1 DPM step per
item: the machinery is under test, not the masks); the inpainter is the synthetic world's renderer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from bulk_catalogs import MAX_PIXELS, write_catalog
from tiny_models import register_tiny_smartmask

from smartmask import masks
from smartmask.bulk.config import BulkConfig, default_stages
from smartmask.bulk.store import bulk_run_dir, part_files
from smartmask.inference.images import load_image
from smartmask.lake.query import run_query

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lake(synthetic_lake_copy, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("bulk-model")
    mv = register_tiny_smartmask(synthetic_lake_copy["lake"], synthetic_lake_copy["version"], work, "bulk-tests")
    return synthetic_lake_copy | {"model": mv}


def _config(lake: dict, work: Path, **kw) -> BulkConfig:
    roots = (str(lake["world"] / "images"), str(work / "allowed-extra"))
    return BulkConfig.for_tests(lake["model"], n_suggestions=1, steps=1, allow_roots=roots,
                                max_image_pixels=MAX_PIXELS, **kw)


def _rows(lake_dir: Path, run: str) -> list[dict]:
    return run_query(lake_dir, "SELECT * FROM insert_items WHERE run = ? ORDER BY line", [run]).to_pylist()


def _check_outputs(lake_dir: Path, run: str, rows: list[dict]) -> None:
    """Every inserted row's PNGs decode; the output equals the input outside the row's dilated mask, pixel for
    pixel, and the chosen mask lies inside it."""
    folder = bulk_run_dir(lake_dir, run)
    for r in rows:
        if r["status"] != "inserted":
            assert r["inserted_path"] is None and r["reject_reason"]
            continue
        src = np.asarray(load_image(r["image_uri"]))
        out = np.asarray(load_image(folder / r["inserted_path"]))
        mask = load_image(folder / r["mask_path"])[..., 0] > 127
        for p in r["suggestion_paths"]:
            assert load_image(folder / p).shape[:2] == src.shape[:2]
        H, W = src.shape[:2]
        dilated = masks.decode({"size": [H, W], "counts": r["dilated_rle"]}).astype(bool)
        assert np.array_equal(out[~dilated], src[~dilated]), f"line {r['line']}: changed outside the dilated mask"
        assert not (mask & ~dilated).any() and mask.sum() == r["mask_area"]
        assert r["changed_outside"] == 0 and r["changed_pixels"] == int(np.any(out != src, axis=2).sum())


def test_thousand_items_with_fifty_bad_rows(lake, tmp_path):
    from flows.bulk_insert import bulk_insert

    cat, expected = write_catalog(lake["lake"], lake["version"], 950, tmp_path, n_bad=50)
    assert len(expected) >= 8 and sum(expected.values()) == 50
    m = bulk_insert(str(cat), "thousand", _config(lake, tmp_path, stages=default_stages(2)), str(lake["lake"]))
    assert m["status"] == "complete" and m["in"] == 1000
    assert (m["inserted"], m["rejected"]) == (950, 50)
    assert m["rejects_by_reason"] == expected
    rows = _rows(lake["lake"], "thousand")
    assert len(rows) == 1000 and len({r["item_key"] for r in rows}) == 1000
    for r in rows:
        if r["status"] == "rejected":
            assert r["reject_stage"] and r["reject_detail"], r
    assert m["model_lineage"]["dataset_version"] == lake["version"] and m["code_version"]
    _check_outputs(lake["lake"], "thousand", rows)
    # A rerun of a complete run starts nothing and changes nothing.
    again = bulk_insert(str(cat), "thousand", _config(lake, tmp_path), str(lake["lake"]))
    assert again["attempts"][-1]["resumed_from"] == 1000 and len(_rows(lake["lake"], "thousand")) == 1000


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_driver_killed_midway_then_rerun_writes_every_item_once(lake, tmp_path):
    """SIGKILL the `smartmask bulk-insert` process once rows are committed; the rerun finishes the run."""
    import psutil

    cat, _ = write_catalog(lake["lake"], lake["version"], 90, tmp_path, n_bad=10)
    short = Path(tempfile.mkdtemp(prefix="smk-", dir="/tmp"))  # Ray's socket paths must stay short
    env = {**os.environ, "TMPDIR": str(short), "PREFECT_HOME": str(tmp_path / "prefect"), "SMARTMASK_PROGRESS": "lines"}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "flows", "bulk-insert", str(cat), "--out", "killed", "--lake", str(lake["lake"]),
           "--inpainter", "synthetic", "--n", "1", "--steps", "1", "--max-image-pixels", str(MAX_PIXELS),
           "--allow-root", str(lake["world"] / "images"), "--allow-root", str(tmp_path / "allowed-extra"),
           "--placement", "staged", "--stage", "write:batch_size=4"]
    folder = bulk_run_dir(lake["lake"], "killed")
    try:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        family = []
        try:
            deadline = time.monotonic() + 600
            while not part_files(folder) and proc.poll() is None and time.monotonic() < deadline:
                family = _descendants(proc.pid) or family
                time.sleep(0.2)
            family = _descendants(proc.pid) or family
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(60)
        finally:
            for p in family:  # what the killed driver started (Ray's processes), and only that
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            psutil.wait_procs(family, timeout=30)
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
        first = pq.read_table([str(p) for p in part_files(folder)]).num_rows if part_files(folder) else 0
        assert 0 < first < 100, first
        rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert rerun.stdout.strip().splitlines()[-1] == "killed"
    finally:
        shutil.rmtree(short, ignore_errors=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["in"] == 100
    assert manifest["attempts"][-1]["resumed_from"] == first
    rows = _rows(lake["lake"], "killed")
    assert len(rows) == 100 and len({r["item_key"] for r in rows}) == 100
    assert manifest["inserted"] == 90 and sum(r["status"] == "inserted" for r in rows) == 90
    _check_outputs(lake["lake"], "killed", rows)
    assert [p for p in folder.rglob("*") if ".tmp" in p.name] == []  # the rerun swept what the kill left half-written


@pytest.mark.parametrize("placement, actor", [("staged", "SuggestStage"), ("fused", "_Fused")])
def test_ray_worker_killed_midrun_every_item_written_once(lake, tmp_path, placement, actor):
    """SIGKILL a model actor's process while the run is going (the suggest actor when staged, the one pipeline
    actor when fused): Ray restarts it and retries its batch; the rows still come out exactly once."""
    import psutil

    from flows.bulk_insert import bulk_insert

    cat, _ = write_catalog(lake["lake"], lake["version"], 120, tmp_path)
    run = f"worker-killed-{placement}"
    folder = bulk_run_dir(lake["lake"], run)
    killed: list[int] = []
    done = threading.Event()

    def killer() -> None:
        while not done.is_set():
            if part_files(folder):
                for p in psutil.Process().children(recursive=True):  # this test's own Ray processes
                    try:
                        if actor in " ".join(p.cmdline()):
                            p.send_signal(signal.SIGKILL)
                            killed.append(p.pid)
                            return
                    except psutil.NoSuchProcess:
                        continue
            time.sleep(0.1)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        m = bulk_insert(str(cat), run, _config(lake, tmp_path, commit_every=8, placement=placement), str(lake["lake"]))
    finally:
        done.set()
        t.join(10)
    assert killed, f"no {actor} actor was found while the run was going"
    assert m["status"] == "complete" and (m["in"], m["inserted"], m["rejected"]) == (120, 120, 0)
    rows = _rows(lake["lake"], run)
    assert len(rows) == 120 and len({r["item_key"] for r in rows}) == 120
    _check_outputs(lake["lake"], run, rows)
