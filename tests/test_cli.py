"""The CLI contract: exit 2 with one line on stderr for unusable input; `query` is read-only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import rect, write_images, write_json
from typer.testing import CliRunner

from flows.cli import app
from smartmask.config import RebuildConfig
from smartmask.rebuild import rebuild


def _smartmask(*args, **kw):
    return subprocess.run([sys.executable, "-m", "flows", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ}, **kw)


@pytest.mark.parametrize("content", [None, "{not json at all", '{"images": 3, "annotations": []}'])
def test_rebuild_exits_2_on_unusable_annotation_file(tmp_path, content):
    ann = tmp_path / "ann.json"
    if content is not None:
        ann.write_text(content)
    (tmp_path / "img").mkdir()
    r = _smartmask("rebuild", "--source", f"cocoa:{ann}", "--images", str(tmp_path / "img"), "--name", "x",
                   "--lake", str(tmp_path / "lake"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(ann) in lines[0]
    assert not (tmp_path / "lake").exists()


def test_rebuild_exits_2_on_bad_arguments(tmp_path):
    r = _smartmask("rebuild", "--source", "nonsense", "--images", str(tmp_path), "--name", "x")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = _smartmask("rebuild", "--source", f"cocoa:{tmp_path}/a.json", "--images", str(tmp_path / "nope"),
                   "--name", "x")
    assert r.returncode == 2 and "images directory not found" in r.stderr


def test_synth_world_flag(tmp_path):
    r = _smartmask("synth", "--out", str(tmp_path / "bad"), "--scenes", "1", "--small", "--world", "fancy")
    assert r.returncode == 2 and "--world" in r.stderr and not (tmp_path / "bad").exists()
    r = _smartmask("synth", "--out", str(tmp_path / "ctx"), "--scenes", "2", "--small", "--world", "context",
                   "--workers", "1")
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "ctx" / "annotations.json").read_text())["info"]
    assert info["config"]["world"] == "context" and info["context_rules"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q")
    write_images(tmp / "img", ["a.png"])
    doc = {"images": [{"id": 1, "file_name": "a.png"}],
           "annotations": [{"id": 1, "image_id": 1, "regions": [
               {"segmentation": rect(0, 0, 64, 48), "name": "sky", "isStuff": 1, "order": 2},
               {"segmentation": rect(5, 5, 20, 20), "name": "bird", "order": 1}]}]}
    rebuild(f"cocoa:{write_json(tmp / 'a.json', doc)}", tmp / "img", "q", tmp / "lake", RebuildConfig.for_tests())
    return tmp / "lake"


def _query(lake, sql):
    return CliRunner().invoke(app, ["query", sql, "--lake", str(lake)])


def test_query_answers_selects_over_every_table(lake):
    for table, expect in [("images", "1"), ("layers", "2"), ("rejects", "0"), ("vocabulary", "2")]:
        r = _query(lake, f"SELECT count(*) AS n FROM {table}")
        assert r.exit_code == 0, r.output
        assert r.output.split()[2] == expect, (table, r.output)
    r = _query(lake, "SELECT label FROM layers ORDER BY layer")
    assert r.exit_code == 0 and r.output.index("sky") < r.output.index("bird")


@pytest.mark.parametrize("sql", [
    "COPY (SELECT * FROM layers) TO '{out}/stolen.csv'",
    "ATTACH '{out}/x.db' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CREATE TABLE t AS SELECT 1",
    "DROP VIEW layers",
    "INSERT INTO layers SELECT * FROM layers",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "EXPORT DATABASE '{out}/dump'",
    "SELECT 1; DROP VIEW images",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
])
def test_query_refuses_writes_and_escapes_with_exit_2(lake, tmp_path, sql):
    r = _query(lake, sql.format(out=tmp_path))
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: ")
    assert list(tmp_path.iterdir()) == []
    assert _query(lake, "SELECT count(*) FROM layers").exit_code == 0
