"""bench/gpu_suggest.py runs end to end (`--cpu-smoke`: tiny random components on the CPU, ~15 s), takes diffusers
from the bundled wheel, exercises both the SmartMask sampler and StableDiffusionInpaintPipeline, and records
nothing (a smoke run is not a measurement)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_gpu_suggest_cpu_smoke():
    results = REPO / "bench" / "results"
    before = set(results.glob("gpu_suggest-*.json")) if results.exists() else set()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_suggest.py"), "--cpu-smoke"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "bench/wheels/diffusers-" in out  # the bundled wheel wins over any installed diffusers
    assert "ours:" in out and "U-Net calls x batch [12]" in out  # 3 CFG branches x 4 suggestions in one call
    assert "baseline:" in out and "U-Net calls x batch [8]" in out  # the pipeline's CFG x 4 images
    assert "(smoke, not a measurement" in out
    after = set(results.glob("gpu_suggest-*.json")) if results.exists() else set()
    assert after == before
