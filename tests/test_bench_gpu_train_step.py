"""bench/gpu_train_step.py runs end to end (`--cpu-smoke`: tiny random sd15-layout components on the CPU, ~15 s),
takes diffusers from the bundled wheel, runs a SmartMask training step and the InstructPix2Pix-style baseline step,
and records nothing (a smoke run is not a measurement)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_gpu_train_step_cpu_smoke():
    results = REPO / "bench" / "results"
    before = set(results.glob("gpu_train_step-*.json")) if results.exists() else set()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_train_step.py"), "--cpu-smoke"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "bench/wheels/diffusers-" in out  # the bundled wheel wins over any installed diffusers
    assert "ours:" in out and "samples/s" in out and "TFLOP/step" in out
    assert "baseline:" in out and "ratio ours/baseline throughput:" in out
    assert "(smoke, not a measurement" in out
    after = set(results.glob("gpu_train_step-*.json")) if results.exists() else set()
    assert after == before
