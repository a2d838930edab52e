"""`smartmask train` on Ray Train: 2 CPU workers register a model; SIGKILL + rerun resumes; a lost worker recovers.

Each test ends only the processes it started: the `flows train` driver it launched and that driver's descendants
(Ray's GCS, raylet, workers...), found through the process tree and identified by PID and creation time, never by a
name search over the machine. Afterwards it checks that none of them is left running."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest
from hygiene import _running as _alive  # same PID and creation time; a zombie counts as gone

from smartmask.config import RebuildConfig, SynthConfig
from smartmask.lake.query import run_query
from smartmask.rebuild import rebuild
from smartmask.synth import generate

STEPS = 30
# Each test's run id carries a suffix of its own, so its per-run scratch (`smartmask-ckpt-<run id>-rank*` in the temp
# dir) cannot be confused with that of another test session running on the same machine.
SUFFIX = uuid.uuid4().hex[:8]
# Ray Train workers may retitle themselves (`ray::RayTrainWorker.run_train_fn`): both the cmdline and the name count.
TRAIN_WORKER = "RayTrainWorker"
EXIT_TIMEOUT_S = 30  # for every launched process to be gone once its run ended (Ray's shutdown is asynchronous)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    generate(tmp / "w", 30, seed=2, config=SynthConfig(width=160, height=120, min_things=4, max_things=8), workers=2)
    rebuild(f"cocoa:{tmp / 'w' / 'annotations.json'}", tmp / "w" / "images", "synth", tmp / "lake", RebuildConfig.for_tests())
    return tmp / "lake"


def _train(lake: Path, run_id: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows", "train", "--dataset", "synth", "--lake", str(lake), "--workers", "2",
         "--steps", str(STEPS), "--batch-size", "8", "--checkpoint-every", "5", "--run-id", run_id, "--no-eval"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # Prefect's ephemeral API server (a child of the driver) gets 20 s to start by default: not always enough
        # on 2 shared cores under a parallel test run. Ray Train's file locks go to $RAY_TMPDIR/_ray_lockfiles
        # (default /tmp, where they stay): here, a dir of this module's, beside the lake.
        env={"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **os.environ,
             "RAY_TMPDIR": str(_ray_system_tmp(lake))})


def _ray_system_tmp(lake: Path) -> Path:
    d = lake.parent / "ray-system-tmp"
    d.mkdir(exist_ok=True)
    return d


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline()).strip() or p.name()}"[:300]
    except psutil.Error:
        return f"{p.pid} (gone)"


class LaunchedRun:
    """A `flows train` driver this test launched, and every descendant of it ever seen.

    A descendant is remembered as a `psutil.Process` (PID + creation time), so it can still be found, and told apart
    from a later process that reuses its PID, after the driver died and it was reparented; its command line is kept
    from when it was first seen. The tree is rescanned by `scan()`, and every 0.25 s inside `watching()`, so
    replacements Ray starts during the run are seen as well. As a context manager, it ends what is left of the run
    when the block raises (a failed test); on success it ends nothing, so `_assert_all_ended` sees what lingers.
    """

    def __init__(self, lake: Path, run_id: str):
        self.popen = _train(lake, run_id)
        self.driver = psutil.Process(self.popen.pid)
        self.seen: dict[tuple[int, float], psutil.Process] = {}
        self.cmdlines: dict[tuple[int, float], str] = {}
        self._lock = threading.Lock()
        self.scan()

    def __enter__(self) -> LaunchedRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.kill()
        if self.popen.returncode is None:  # the test moved on without waiting for it: not expected
            self.kill()
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()

    def scan(self) -> None:
        if self.popen.returncode is not None:  # reaped: its PID may already belong to another process
            return
        try:
            found = self.driver.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        with self._lock:
            for p in found:
                with suppress(psutil.Error):
                    key = (p.pid, p.create_time())
                    if key not in self.seen:
                        self.seen[key] = p
                        self.cmdlines[key] = " ".join(p.cmdline()).strip()

    @contextmanager
    def watching(self, every: float = 0.25) -> Iterator[None]:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every):
                self.scan()

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
            self.scan()

    def processes(self) -> list[psutil.Process]:
        with self._lock:
            return [self.driver, *self.seen.values()]

    def train_workers(self) -> list[psutil.Process]:
        """This run's live Ray Train workers (never another run's: only the driver's descendants are looked at)."""
        self.scan()
        out = []
        for p in self.driver.children(recursive=True):
            try:
                if TRAIN_WORKER in p.name() or any(TRAIN_WORKER in a for a in p.cmdline()):
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    def freeze(self) -> None:
        """SIGSTOP the driver and its descendants, rescanning until no new one appears: a stopped process cannot
        start another, so afterwards the snapshot holds every process of the run."""
        stopped: set[tuple[int, float]] = set()
        while True:
            self.scan()
            todo = [p for p in self.processes() if (p.pid, p.create_time()) not in stopped]
            if not todo:
                return
            for p in todo:
                stopped.add((p.pid, p.create_time()))
                if _alive(p):
                    with suppress(psutil.NoSuchProcess):  # psutil refuses a reused PID (creation time differs)
                        p.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL the driver's process group, then every remembered descendant still alive (and only those)."""
        if self.popen.returncode is None:
            with suppress(ProcessLookupError):  # its own session and group (start_new_session)
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        for p in self.processes()[1:]:
            if _alive(p):
                with suppress(psutil.NoSuchProcess):
                    p.kill()

    def survivors(self, timeout: float = EXIT_TIMEOUT_S) -> list[psutil.Process]:
        """The launched processes still alive after waiting up to `timeout` seconds for them to exit."""
        procs = self.processes()
        _, alive = psutil.wait_procs([p for p in procs if _alive(p)], timeout=timeout)
        return [p for p in alive if _alive(p)]

    def session_dirs(self) -> set[Path]:
        """The `smartmask-ray-*` session dir(s) of THIS run's Ray, read from its processes' command lines as first
        seen (Ray's GCS, raylet, log monitor... are started with --temp-dir / --session-dir options under it)."""
        with self._lock:
            args = list(self.cmdlines.values())
        return {Path(m) for a in args for m in re.findall(r"(/[^\s=:'\"]*?/smartmask-ray-[A-Za-z0-9_]+)", a)}


def _wait_for_checkpoint(lake: Path, run_id: str, run: LaunchedRun, n: int = 2) -> int:
    """Wait until `n` loss-curve parts exist AND Ray Train's controller has registered a checkpoint; its step.

    A worker's `report` is only collected when the controller next polls it (every 2 s by default), so a loss-curve
    part on disk does not yet mean Ray would restore from that checkpoint; its snapshot file says so.
    """
    parts = lake / "runs" / "kind=train" / f"run={run_id}" / "metrics"
    snapshot = lake / "_ray" / "train" / run_id / "checkpoint_manager_snapshot.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        assert run.popen.poll() is None, run.popen.communicate()[1][-3000:]
        registered = _registered_step(snapshot)
        if len(list(parts.glob("part-*.parquet"))) >= n and registered:
            return registered
        time.sleep(0.05)
    raise AssertionError(f"no registered checkpoint for {run_id} within 300 s")


def _registered_step(snapshot: Path) -> int | None:
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return None
    return int(latest["metrics"]["step"]) if latest else None


def _starts(lake: Path, run_id: str) -> list[int]:
    return json.loads((lake / "runs" / "kind=train" / f"run={run_id}" / "starts.json").read_text())


def _assert_all_ended(*runs: LaunchedRun) -> None:
    """None of the runs' processes is alive (after EXIT_TIMEOUT_S for them to exit); any that is gets ended."""
    left = [p for run in runs for p in run.survivors()]
    report = "\n".join(map(_describe, left))
    for run in runs:
        run.kill()
    assert not left, "launched processes still running:\n" + report


@pytest.mark.slow
def test_sigkill_then_same_run_id_resumes_from_last_checkpoint(lake):
    run_id = f"resume-{SUFFIX}"
    with LaunchedRun(lake, run_id) as first:
        with first.watching():
            registered = _wait_for_checkpoint(lake, run_id, first, n=2)
        # Snapshot the whole tree before the kill: once the driver is dead its orphans cannot be found through it.
        first.freeze()
        first.kill()  # the driver's group, then the orphaned workers, GCS, raylet... of this run only
        dead = first.survivors()
        assert not dead, "killed processes still running:\n" + "\n".join(map(_describe, dead))
    # A SIGKILLed driver cannot remove its Ray session dir; this run's one (and only it) is removed here.
    ray_dirs = first.session_dirs()
    assert len(ray_dirs) == 1 and all(d.is_dir() for d in ray_dirs), ray_dirs
    for d in ray_dirs:
        shutil.rmtree(d)
    done = sorted(int(p.stem.split("-")[1]) for p in lake.glob(f"runs/kind=train/run={run_id}/metrics/part-*.parquet"))
    assert done and done[-1] < STEPS
    with LaunchedRun(lake, run_id) as second:
        with second.watching():
            out, err = second.popen.communicate(timeout=600)
        assert second.popen.returncode == 0, err[-3000:]
        version = out.strip().splitlines()[-1]
        starts = _starts(lake, run_id)
        assert starts[0] == 0 and len(starts) == 2
        # Continued from the last checkpoint Ray Train had registered (at least the one seen before the kill), not
        # from zero; a later one written but not yet registered when the kill landed is legitimately redone.
        assert starts[1] % 5 == 0 and registered <= starts[1] <= done[-1], (starts, registered, done)
        row = run_query(lake, "SELECT run_id, steps, dataset FROM models WHERE version = ?", [version]).to_pylist()
        assert row == [{"run_id": run_id, "steps": STEPS, "dataset": "synth"}], err[-2000:]
        steps = run_query(lake, "SELECT step FROM train_metrics WHERE run = ? ORDER BY step", [run_id]).column("step")
        assert steps.to_pylist()[-1] == STEPS
        _assert_all_ended(first, second)
    _assert_clean_exit_removed_its_session_dir(second)


def _assert_clean_exit_removed_its_session_dir(run: LaunchedRun) -> None:
    dirs = run.session_dirs()
    assert len(dirs) == 1 and not any(d.exists() for d in dirs), dirs


def _scratch_dirs(run_id: str) -> set[str]:
    tmp = Path(tempfile.gettempdir())
    return {p.name for p in [*tmp.glob(f"smartmask-ckpt-{run_id}-*"), *tmp.glob("checkpoint_tmp_*")]}


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_training_completes(lake):
    run_id = f"workerloss-{SUFFIX}"
    scratch_before = _scratch_dirs(run_id)
    with LaunchedRun(lake, run_id) as run:
        with run.watching():
            registered = _wait_for_checkpoint(lake, run_id, run, n=2)
            workers = run.train_workers()
            assert len(workers) == 2, [_describe(p) for p in workers]
            workers[1].kill()  # one of this run's own two workers (psutil: the very process found above)
            out, err = run.popen.communicate(timeout=600)
        assert run.popen.returncode == 0, err[-3000:]
        starts = _starts(lake, run_id)
        assert len(starts) >= 2 and starts[-1] >= registered > 0, (starts, registered)  # resumed, not from zero
        version = out.strip().splitlines()[-1]
        assert run_query(lake, "SELECT steps FROM models WHERE version = ?", [version]).to_pylist() == [
            {"steps": STEPS}]
        # Local checkpoint scratch is gone, the killed worker's included (its replacement cleared and removed it).
        assert _scratch_dirs(run_id) - scratch_before == set()
        _assert_all_ended(run)
    _assert_clean_exit_removed_its_session_dir(run)
