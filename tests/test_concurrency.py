"""One writer per dataset version: the lake lock, its stale-lock takeover, and concurrent CLI rebuilds of one input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from smartmask.config import RebuildConfig, SynthConfig
from smartmask.lake.locks import LockHeld, lake_lock, lock_path
from smartmask.lake.paths import dataset_dir
from smartmask.rebuild import plan_rebuild, rebuild
from smartmask.synth import generate

REPO = Path(__file__).resolve().parents[1]

# A child that takes the lock, says so, and sleeps until it is killed.
_HOLDER = """
import sys, time
from pathlib import Path
from smartmask.lake.locks import lake_lock
with lake_lock(Path(sys.argv[1]), sys.argv[2], sys.argv[3]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(out, 12, seed=5, config=SynthConfig.small(), workers=1)
    return out


def _hold(lake: Path, kind: str, key: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lake), kind, key], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _end(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    proc.wait(timeout=30)
    if proc.stdout:
        proc.stdout.close()


def test_held_lock_names_its_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    proc = _hold(tmp_path, "rebuild", "d@v1")
    try:
        with pytest.raises(LockHeld) as e, lake_lock(tmp_path, "rebuild", "d@v1", wait_s=0.3, poll_s=0.05):
            pass
        assert f"pid {proc.pid}" in str(e.value) and "\n" not in str(e.value)
        # Another key is independent.
        with lake_lock(tmp_path, "rebuild", "d@v2") as stale:
            assert stale == {}
    finally:
        _end(proc)  # SIGKILL: no cleanup ran, the lock file still names the dead holder
    assert lock_path(tmp_path, "rebuild", "d@v1").exists()
    with lake_lock(tmp_path, "rebuild", "d@v1") as stale:
        assert stale["pid"] == proc.pid  # detected as stale and taken over
    assert not lock_path(tmp_path, "rebuild", "d@v1").exists()  # released cleanly: nothing left behind


def test_a_waiting_run_gets_the_lock_when_the_holder_ends(tmp_path):
    proc = _hold(tmp_path, "rebuild", "d@v")
    t0 = time.monotonic()
    killer = subprocess.Popen([sys.executable, "-c", f"import os, signal, time; time.sleep(1.0); "
                                                     f"os.killpg({proc.pid}, signal.SIGTERM)"])
    try:
        with lake_lock(tmp_path, "rebuild", "d@v", wait_s=60, poll_s=0.05) as stale:
            assert time.monotonic() - t0 >= 0.9
            assert stale["pid"] == proc.pid
    finally:
        killer.wait(timeout=30)
        _end(proc)


def test_rebuild_refuses_a_version_another_run_holds_and_writes_nothing(world, tmp_path):
    lake = tmp_path / "lake"
    spec = f"cocoa:{world / 'annotations.json'}"
    plan = plan_rebuild(spec, world / "images", "w", lake, RebuildConfig.for_tests())
    proc = _hold(lake, "rebuild", plan.lock_key)
    try:
        with pytest.raises(LockHeld, match=f"dataset w version {plan.version} is locked by pid {proc.pid}"):
            rebuild(spec, world / "images", "w", lake, RebuildConfig.for_tests())
        assert not (lake / "_staging").exists() and not (lake / "datasets").exists()
    finally:
        _end(proc)
    m = rebuild(spec, world / "images", "w", lake, RebuildConfig.for_tests())  # the killed holder's lock is stale
    assert m["version"] == plan.version and m["counts"]["image"]["accepted"] == 12


def _cli(world: Path, lake: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows", "rebuild", "--source", f"cocoa:{world / 'annotations.json'}",
         "--images", str(world / "images"), "--name", "w", "--lake", str(lake), "--shard-size", "2",
         "--workers", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def _check_outcome(procs: list[subprocess.Popen], lake: Path, n_images: int) -> list[int]:
    codes = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        codes.append(p.returncode)
        assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
        if p.returncode == 2:
            lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
            assert len(lines) == 1 and "is locked by pid" in lines[0], err[-2000:]
    assert set(codes) <= {0, 2} and 0 in codes, codes
    versions = list((lake / "datasets" / "name=w").glob("version=*"))
    assert len(versions) == 1
    d = versions[0]
    images = set(pq.read_table(d / "images", columns=["image_id"]).column(0).to_pylist())
    captions = set(pq.read_table(d / "captions", columns=["image_id"]).column(0).to_pylist())
    assert len(images) == n_images and captions == images  # complete, captions included
    assert not (lake / "_staging").exists()  # nothing half-written by a loser of the race
    assert not any((lake / "_locks").rglob("*.lock"))
    return codes


@pytest.mark.slow
def test_ten_pairs_of_concurrent_cli_rebuilds_end_with_one_complete_version(world, tmp_path, prefect_harness):
    """Two rebuilds of one input into one lake at once, 10 times: exit 0 or 2, never a traceback or a partial
    caption set. Both use the test harness's Prefect API (the start-up race is the next test's)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}  # the harness's server, shared by all 20 runs
    assert env["PREFECT_API_URL"]
    outcomes = []
    for k in range(10):
        lake = tmp_path / f"lake{k}"
        first = _cli(world, lake, env)
        time.sleep(0.3 * (k % 4))  # vary the overlap: same moment, during planning, during shards
        second = _cli(world, lake, env)
        outcomes.append(_check_outcome([first, second], lake, 12))
    assert any(2 in c for c in outcomes)  # the lock was actually contended, not just run in turn


@pytest.mark.slow
def test_concurrent_rebuilds_each_starting_prefect_do_not_race(world, tmp_path):
    """Without PREFECT_API_URL each CLI starts Prefect's temporary server on one shared database; two starting at
    once used to leave one timing out with a traceback."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    lake = tmp_path / "lake"
    _check_outcome([_cli(world, lake, env), _cli(world, lake, env)], lake, 12)
    assert dataset_dir(lake, "w", next((lake / "datasets" / "name=w").glob("version=*")).name[8:]).exists()


# slow: with the Prefect test harness it needs (started once per session, ~25 s) it costs more than 20 s.
@pytest.mark.slow
def test_a_second_training_of_the_same_run_id_exits_2_naming_the_holder(synthetic_lake_copy, tmp_path, prefect_harness):
    from typer.testing import CliRunner

    from flows.cli import app

    lake = synthetic_lake_copy["lake"]
    proc = _hold(lake, "train", "run-a")
    try:
        r = CliRunner().invoke(app, ["train", "--dataset", "synth", "--lake", str(lake), "--run-id", "run-a",
                                     "--steps", "1"])
    finally:
        _end(proc)
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [ln for ln in r.stderr.splitlines() if ln.strip() and "error" in ln.lower()] and len(errors) == 1
    assert errors[0].startswith(f"error: --run-id: training run run-a is locked by pid {proc.pid}")
    assert not (lake / "runs" / "kind=train" / "run=run-a").exists()
