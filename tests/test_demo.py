"""`smartmask demo` end to end with its default settings — the paper's core claim in miniature.

Asserts every stage ran (dataset, model registered, the product path on held-out scenes: mask-free diversity,
DPM-Solver 20 vs DDIM 50 within 0.01 IoU, an insert bit-identical outside its dilated mask), prints the held-out
box-guidance numbers and asserts that they beat the tight box at both resolutions. This is the suite's longest
test (~5 minutes on 2 cores).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from smartmask.lake.query import run_query


def test_demo_end_to_end_learns_to_beat_the_box(tmp_path):
    lake = tmp_path / "lake"
    r = subprocess.run([sys.executable, "-m", "flows", "demo", "--lake", str(lake)], capture_output=True, text=True,
                       timeout=900, env={**os.environ})
    assert r.returncode == 0, r.stderr[-3000:]
    print(r.stdout)
    dataset_version = re.search(r"dataset synth@([0-9a-f]{16})", r.stdout).group(1)
    model_version = r.stdout.strip().splitlines()[-1]
    assert "layers per class" in r.stdout and "rejects by reason" in r.stdout and "captions" in r.stdout
    t = run_query(lake, "SELECT count(*) AS n, count(DISTINCT label) AS labels FROM layers WHERE version = ?",
                  [dataset_version]).to_pylist()[0]
    assert t["n"] > 200 * 15 and t["labels"] >= 20
    m = run_query(lake, "SELECT dataset_version, steps FROM models WHERE version = ?", [model_version]).to_pylist()
    assert m[0]["dataset_version"] == dataset_version and m[0]["steps"] >= 100
    ious = re.search(r"mask IoU ([0-9.]+) vs the box itself ([0-9.]+)", r.stdout)
    model_iou, box_iou = float(ious.group(1)), float(ious.group(2))
    print(f"held-out box guidance: SmartMask IoU {model_iou:.3f}, box IoU {box_iou:.3f}")
    # Issue 5: the product path on held-out scenes, at image resolution.
    got = re.search(r"rank-1 IoU ([0-9.]+) vs the box itself ([0-9.]+)", r.stdout)
    bbox_iou, box_only = float(got.group(1)), float(got.group(2))
    pairwise = float(re.search(r"mean pairwise IoU ([0-9.]+) across seeds", r.stdout).group(1))
    solvers = re.search(r"DPM-Solver\+\+ 20 steps IoU ([0-9.]+) vs DDIM 50 steps ([0-9.]+)", r.stdout)
    dpm, ddim = float(solvers.group(1)), float(solvers.group(2))
    print(f"suggest --bbox {bbox_iou:.3f} vs box {box_only:.3f}; mask-free pairwise IoU {pairwise:.3f}; "
          f"DPM-20 {dpm:.3f} vs DDIM-50 {ddim:.3f}")
    assert pairwise < 0.9
    assert abs(dpm - ddim) <= 0.01
    assert re.search(r"outside the dilated mask identical: True", r.stdout)
    # The paper's core claim in miniature (issues 4 and 5): box-guided masks beat the box itself, at the model's
    # resolution and at the image's. Both compare against the TIGHT box (the grid cells whose centres it covers;
    # at image size the exact pixel box). Measured with the current code, models trained as the demo trains
    # (2 Ray workers, 180 s): 0.589 (422 steps; a 483-step model 0.590 at the old text scale 3) vs 0.543 at 32x32
    # (91 samples); `suggest --bbox` 0.578 vs 0.519 at image size (19 targets).
    assert model_iou > box_iou, f"box-guided masks at 32x32: {model_iou:.3f}, the box itself {box_iou:.3f}"
    assert bbox_iou > box_only, f"suggest --bbox at image size: {bbox_iou:.3f}, the box itself {box_only:.3f}"
