"""`smartmask demo` runs every existing stage on the synthetic world and prints the dataset version last."""

from __future__ import annotations

import os
import subprocess
import sys

from smartmask.lake.query import run_query


def test_demo_end_to_end(tmp_path):
    lake = tmp_path / "lake"
    r = subprocess.run([sys.executable, "-m", "flows", "demo", "--lake", str(lake), "--scenes", "12"],
                       capture_output=True, text=True, timeout=300, env={**os.environ})
    assert r.returncode == 0, r.stderr[-3000:]
    version = r.stdout.strip().splitlines()[-1]
    assert f"dataset synth@{version}" in r.stdout
    assert "layers per class" in r.stdout and "rejects by reason" in r.stdout
    t = run_query(lake, "SELECT count(*) AS n, count(DISTINCT label) AS labels FROM layers WHERE version = ?",
                  [version]).to_pylist()[0]
    assert t["n"] > 12 * 10 and t["labels"] >= 8
    assert run_query(lake, "SELECT count(*) AS n FROM images").to_pylist()[0]["n"] == 12
