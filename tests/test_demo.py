"""`smartmask demo` end to end with its default settings — the paper's core claim in miniature.

After the demo's training budget (tiny preset, 2 Ray workers on CPU), masks sampled with box guidance on held-out
scenes must have a higher mean IoU with the ground-truth amodal mask than the box itself used as the mask.
This is the suite's longest test (~5 minutes on 2 cores).
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
    assert model_iou > box_iou
