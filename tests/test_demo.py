"""`smartmask demo` runs every existing stage on the synthetic world and prints the last id it wrote last."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from smartmask.lake.query import run_query


def test_demo_end_to_end(tmp_path):
    lake = tmp_path / "lake"
    r = subprocess.run([sys.executable, "-m", "flows", "demo", "--lake", str(lake), "--scenes", "24",
                        "--train-budget", "10"], capture_output=True, text=True, timeout=600, env={**os.environ})
    assert r.returncode == 0, r.stderr[-3000:]
    dataset_version = re.search(r"dataset synth@([0-9a-f]{16})", r.stdout).group(1)
    model_version = r.stdout.strip().splitlines()[-1]
    assert "layers per class" in r.stdout and "rejects by reason" in r.stdout and "captions" in r.stdout
    t = run_query(lake, "SELECT count(*) AS n, count(DISTINCT label) AS labels FROM layers WHERE version = ?",
                  [dataset_version]).to_pylist()[0]
    assert t["n"] > 24 * 10 and t["labels"] >= 8
    assert run_query(lake, "SELECT count(*) AS n FROM images").to_pylist()[0]["n"] == 24
    m = run_query(lake, "SELECT dataset_version, steps FROM models WHERE version = ?", [model_version]).to_pylist()
    assert m[0]["dataset_version"] == dataset_version and m[0]["steps"] >= 1
    assert f"model {model_version}" in r.stdout
