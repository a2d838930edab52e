"""`bench/RESULTS.md` is what `bench/render_results.py` makes from the records, and every record says which code and
which machine it measured."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_results_md_is_regenerated_from_the_records():
    r = subprocess.run([sys.executable, str(REPO / "bench" / "render_results.py"), "--check"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_record_carries_code_version_and_machine():
    records = sorted((REPO / "bench" / "results").glob("*.json"))
    assert records
    for p in records:
        rec = json.loads(p.read_text())
        assert rec.get("code_version") and rec.get("machine"), p.name
