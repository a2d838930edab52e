"""bench/gpu_train_step.py runs end to end (`--cpu-smoke`: tiny random sd15-layout components on the CPU, ~15 s),
takes diffusers from the bundled wheel, runs a SmartMask training step and the InstructPix2Pix-style baseline step,
and records nothing (a smoke run is not a measurement)."""

from __future__ import annotations

from conftest import run_bench_smoke


def test_gpu_train_step_cpu_smoke():
    out = run_bench_smoke("gpu_train_step.py")
    assert "ours:" in out and "samples/s" in out and "TFLOP/step" in out
    assert "baseline:" in out and "ratio ours/baseline throughput:" in out
