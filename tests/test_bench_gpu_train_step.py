"""bench/gpu_train_step.py runs end to end (`--cpu-smoke`: tiny random sd15-layout components on the CPU, ~30 s on 2 cores),
takes diffusers from the bundled wheel, runs a SmartMask training step and the InstructPix2Pix-style baseline step,
and records nothing (a smoke run is not a measurement). On a CUDA machine (`-m gpu`), the real script runs too, at
its smallest settings, recording into a temp dir (`--out`) instead of bench/results/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, run_bench_smoke


@pytest.mark.slow
def test_gpu_train_step_cpu_smoke():
    out = run_bench_smoke("gpu_train_step.py")
    assert "ours:" in out and "samples/s" in out and "TFLOP/step" in out
    assert "baseline:" in out and "ratio ours/baseline throughput:" in out


@pytest.mark.slow
@pytest.mark.gpu
def test_gpu_train_step_on_cuda(tmp_path):
    """The real benchmark (full SD 1.5 architecture, random weights, 512x512, bf16) at its smallest settings:
    batch 1, one warm-up and one timed step on each side."""
    results = REPO / "bench" / "results"
    before = set(results.glob("*.json")) if results.exists() else set()
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_train_step.py"), "--batch", "1", "--steps", "1",
                           "--warmup", "1", "--out", str(tmp_path)], cwd=REPO, env=dict(os.environ),
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (set(results.glob("*.json")) if results.exists() else set()) == before  # nothing in bench/results/
    out = proc.stdout
    assert "bench/wheels/diffusers-" in out and "smoke" not in out
    assert re.search(r"; device (?!cpu\b)\S", out), out[:500]
    # MFU is nan on a GPU without a known bf16 peak (bench's PEAK_BF16_TFLOPS): not checked.
    ours = re.search(r"ours: +([\d.]+) samples/s, peak ([\d.]+) GiB, ([\d.]+) TFLOP/step, MFU", out)
    base = re.search(r"baseline: +([\d.]+) samples/s, peak ([\d.]+) GiB, MFU", out)
    ratio = re.search(r"ratio ours/baseline throughput: ([\d.]+)", out)
    assert ours and base and ratio, out
    assert all(float(v) > 0 for m in (ours, base, ratio) for v in m.groups())
    rows = [json.loads(p.read_text()) for p in tmp_path.glob("gpu_train_step-*.json")]
    assert len(rows) == 1 and rows[0]["batch"] == 1 and rows[0]["resolution"] == 512, rows
    assert rows[0]["device"] != "cpu-smoke" and rows[0]["ours_samples_per_s"] > 0
