"""bench/gpu_suggest.py runs end to end (`--cpu-smoke`: tiny random components on the CPU, ~15 s), takes diffusers
from the bundled wheel, exercises both the SmartMask sampler and StableDiffusionInpaintPipeline, and records
nothing (a smoke run is not a measurement)."""

from __future__ import annotations

from conftest import run_bench_smoke


def test_gpu_suggest_cpu_smoke():
    out = run_bench_smoke("gpu_suggest.py")
    assert "ours:" in out and "U-Net calls x batch [12]" in out  # 3 CFG branches x 4 suggestions in one call
    assert "baseline:" in out and "U-Net calls x batch [8]" in out  # the pipeline's CFG x 4 images
