"""Offline settings before anything imports Prefect/Ray/HF, the shared synthetic lake, and small builders."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"  # Prefect's client-side telemetry
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# Prefect's temporary server gets 20 s to start by default; a loaded 2-core machine can need more (a hang guard).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
if "PREFECT_HOME" not in os.environ:  # a throwaway Prefect home (its SQLite database), removed at exit
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="smartmask-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], True)
os.environ.pop("SMARTMASK_LAKE", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The session fails if a process it started is still running at the end or it left anything in the temp dir.
pytest_plugins = ["hygiene"]


def write_images(root: Path, names: list[str], w: int = 64, h: int = 48) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(names):
        Image.fromarray(np.full((h, w, 3), 20 + 7 * k, np.uint8)).save(root / n)


def rect(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="session")
def synthetic_lake(tmp_path_factory) -> dict:
    """One small synthetic world (30 scenes, 160×120, 4-8 things, seed 0) rebuilt once for the whole session into a
    lake as dataset `synth`. READ ONLY: a test that writes into a lake (trains, registers) takes
    `synthetic_lake_copy`. Keys: lake, version, world (the world's folder: annotations.json, images/)."""
    from smartmask.config import RebuildConfig, SynthConfig
    from smartmask.rebuild import rebuild
    from smartmask.synth import generate

    root = tmp_path_factory.mktemp("synthetic-lake")
    world, lake = root / "world", root / "lake"
    generate(world, 30, seed=0, config=SynthConfig(width=160, height=120, min_things=4, max_things=8), workers=1)
    m = rebuild(f"cocoa:{world / 'annotations.json'}", world / "images", "synth", lake, RebuildConfig.for_tests())
    return {"lake": lake, "version": m["version"], "world": world}


@pytest.fixture(scope="module")
def synthetic_lake_copy(synthetic_lake, tmp_path_factory) -> dict:
    """A private copy of `synthetic_lake` for a module that writes into its lake (the images stay shared)."""
    lake = tmp_path_factory.mktemp("lake-copy") / "lake"
    shutil.copytree(synthetic_lake["lake"], lake)
    return synthetic_lake | {"lake": lake}


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    import tempfile as tf

    from prefect.testing.utilities import prefect_test_harness

    # The harness keeps its database in a mkdtemp() dir removed only at interpreter exit: make that dir inside
    # pytest's own base temp, not the machine's temp dir.
    before, tf.tempdir = tf.tempdir, str(tmp_path_factory.mktemp("prefect-harness"))
    try:
        harness = prefect_test_harness(server_startup_timeout=60)
        harness.__enter__()
    finally:
        tf.tempdir = before
    try:
        yield
    finally:
        harness.__exit__(None, None, None)


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): they are all
    overhead, and on this project's 2 shared cores torch's intra-op thread pool made a tiny pipeline call ~10x
    slower under load (1.2 s vs 0.1 s). Restored afterwards for the other modules."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_bench_smoke(script: str) -> str:
    """Run `bench/<script> --cpu-smoke` on the CPU; assert it exits 0, takes diffusers from the bundled wheel and
    records no result file (a smoke run is not a measurement). Returns its stdout."""
    import subprocess
    import sys

    results = REPO / "bench" / "results"
    stem = script.removesuffix(".py")
    before = set(results.glob(f"{stem}-*.json")) if results.exists() else set()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--cpu-smoke"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bench/wheels/diffusers-" in proc.stdout  # the bundled wheel wins over any installed diffusers
    assert "(smoke, not a measurement" in proc.stdout
    assert (set(results.glob(f"{stem}-*.json")) if results.exists() else set()) == before
    return proc.stdout


def pytest_collection_modifyitems(config, items):
    """`gpu` tests are skipped without CUDA, also when `-m` on the command line replaces pyproject's `not gpu`."""
    gpu = [i for i in items if i.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
