"""`smartmask train` on Ray Train: 2 CPU workers register a model; SIGKILL + rerun resumes; a lost worker recovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smartmask.config import RebuildConfig, SynthConfig
from smartmask.lake.query import run_query
from smartmask.rebuild import rebuild
from smartmask.synth import generate

STEPS = 30


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    generate(tmp / "w", 30, seed=2, config=SynthConfig(width=160, height=120, min_things=4, max_things=8), workers=2)
    rebuild(f"cocoa:{tmp / 'w' / 'annotations.json'}", tmp / "w" / "images", "synth", tmp / "lake", RebuildConfig.tiny())
    return tmp / "lake"


def _train(lake: Path, run_id: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows", "train", "--dataset", "synth", "--lake", str(lake), "--workers", "2",
         "--steps", str(STEPS), "--batch-size", "8", "--checkpoint-every", "5", "--run-id", run_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_checkpoint(lake: Path, run_id: str, proc: subprocess.Popen, n: int = 2) -> None:
    parts = lake / "runs" / "kind=train" / f"run={run_id}" / "metrics"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(parts.glob("part-*.parquet"))) < n:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)


def _starts(lake: Path, run_id: str) -> list[int]:
    return json.loads((lake / "runs" / "kind=train" / f"run={run_id}" / "starts.json").read_text())


def _ray_train_workers() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "RayTrainWorker" in line and "ps -eo" not in line]


def test_sigkill_then_same_run_id_resumes_from_last_checkpoint(lake):
    proc = _train(lake, "resume")
    _wait_for_checkpoint(lake, "resume", proc, n=2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pid in _ray_train_workers():  # workers orphaned by the killed driver
        os.kill(pid, signal.SIGKILL)
    done = sorted(int(p.stem.split("-")[1]) for p in lake.glob("runs/kind=train/run=resume/metrics/part-*.parquet"))
    assert done and done[-1] < STEPS
    out, err = _train(lake, "resume").communicate(timeout=600)
    version = out.strip().splitlines()[-1]
    starts = _starts(lake, "resume")
    assert starts[0] == 0 and len(starts) == 2
    # Continued from its last checkpoint, not from zero: at most one checkpoint interval behind the last
    # loss-curve part (the kill can land while that checkpoint is still being registered with Ray Train).
    assert starts[1] > 0 and starts[1] % 5 == 0 and starts[1] >= done[-1] - 5, (starts, done)
    row = run_query(lake, "SELECT run_id, steps, dataset FROM models WHERE version = ?", [version]).to_pylist()
    assert row == [{"run_id": "resume", "steps": STEPS, "dataset": "synth"}], err[-2000:]
    steps = run_query(lake, "SELECT step FROM train_metrics WHERE run = 'resume' ORDER BY step").column("step")
    assert steps.to_pylist()[-1] == STEPS


def test_a_killed_worker_is_replaced_and_training_completes(lake):
    proc = _train(lake, "workerloss")
    _wait_for_checkpoint(lake, "workerloss", proc, n=2)  # part 2 is written after checkpoint 1 is reported
    workers = _ray_train_workers()
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    starts = _starts(lake, "workerloss")
    assert len(starts) >= 2 and starts[-1] > 0  # the restarted worker group resumed from a checkpoint
    version = out.strip().splitlines()[-1]
    assert run_query(lake, "SELECT steps FROM models WHERE version = ?", [version]).to_pylist() == [{"steps": STEPS}]
