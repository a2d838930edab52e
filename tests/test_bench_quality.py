"""bench/bench_quality.py in smoke mode: it builds a context world, trains, scores through the pipeline and prints
model − box and model − oracle with intervals, and records nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quality_bench_smoke_prints_paired_figures_and_records_nothing(tmp_path):
    results = REPO / "bench" / "results"
    before = set(results.glob("bench_quality-*.json"))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_quality.py"), "--smoke", "--work",
                           str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "context world, 12 scenes, 2 steps" in out and "(smoke, not a measurement" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("all "))
    figures = re.findall(r"([+-]\d\.\d{3}) \[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\]", line)
    assert len(figures) == 2 and all(float(lo) <= float(v) <= float(hi) for v, lo, hi in figures)
    assert set(results.glob("bench_quality-*.json")) == before
    assert (tmp_path / "work" / "lake" / "datasets").is_dir()  # --work keeps the world and lake for a rerun
