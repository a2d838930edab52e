"""bench/gpu_suggest.py runs end to end (`--cpu-smoke`: tiny random components on the CPU, ~25 s on 2 cores), takes diffusers
from the bundled wheel, exercises both the SmartMask sampler and StableDiffusionInpaintPipeline, and records
nothing (a smoke run is not a measurement). On a CUDA machine (`-m gpu`), the real script runs too, at its smallest
settings, and its record is removed again."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_bench_smoke


@pytest.mark.slow
def test_gpu_suggest_cpu_smoke():
    out = run_bench_smoke("gpu_suggest.py")
    assert "ours:" in out and "U-Net calls x batch [12]" in out  # 3 CFG branches x 4 suggestions in one call
    assert "baseline:" in out and "U-Net calls x batch [8]" in out  # the pipeline's CFG x 4 images


@pytest.mark.slow
@pytest.mark.gpu
def test_gpu_suggest_on_cuda():
    """The real benchmark (full SD 1.5 architecture, random weights, 512x512) at its smallest settings: one
    suggestion, 2 of our steps (the baseline keeps its default 50), one warm-up and one timed call each."""
    results = REPO / "bench" / "results"
    before = set(results.glob("*.json")) if results.exists() else set()
    out = ""
    try:
        proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_suggest.py"), "--n", "1", "--steps", "2",
                               "--repeats", "1", "--warmup", "1"], cwd=REPO, env=dict(os.environ),
                              capture_output=True, text=True, timeout=1500)
        out = proc.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise
    finally:
        # The script has no option to skip its record in bench/results/: remove the one it says it wrote, if that
        # file is new (never one that was there before, nor one another program wrote meanwhile).
        wrote = {results / Path(m).name for m in re.findall(r"^wrote (\S*gpu_suggest-\S+\.json)$", out, re.M)}
        recorded = {p: p.read_text() for p in wrote if p.exists() and p not in before}
        for p in recorded:
            p.unlink()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "bench/wheels/diffusers-" in out and "smoke" not in out
    assert re.search(r"; device (?!cpu\b)\S", out), out[:500]
    ours = re.search(r"ours: +([\d.]+) ms median for 1 at 512x512 \(bfloat16, .*, 2 U-Net calls x batch \[3\], "
                     r".*peak ([\d.]+) GiB", out)  # 3 CFG branches x 1 suggestion in one call per step
    base = re.search(r"baseline: +([\d.]+) ms median for 1 at 512x512 \(float16, .*, 50 U-Net calls x batch \[2\], "
                     r".*peak ([\d.]+) GiB", out)  # the pipeline's defaults: 50 steps, CFG x 1 image
    assert ours and base, out
    assert all(float(v) > 0 for m in (ours, base) for v in m.groups())
    assert "baseline steps / guidance / output type: 50 / 7.5 / 'pil' (pipeline defaults)" in out
    assert re.search(r"speed-up baseline/ours: [\d.]+x", out)
    assert len(recorded) == 1, wrote  # it did record (and that record is gone again)
    row = json.loads(next(iter(recorded.values())))
    assert row["n"] == 1 and row["resolution"] == 512 and row["ours_latency_s"] > 0 and row["ratio"] > 0
