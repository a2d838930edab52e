"""The CLI contract, through the real CLI: published lake data is never written by another command; every option
is checked before any model loads; bad input and usage errors are one `error: --flag: …` line with exit 2; `query`
output is machine-readable on request; suggest/insert report their stages on stderr, stdout unchanged."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import register_tiny_smartmask
from typer.testing import CliRunner

from flows.cli import app
from smartmask.lake.paths import dataset_dir, model_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def world(synthetic_lake_copy, tmp_path_factory) -> dict:
    """The shared synthetic lake (a private copy) with a registered random-init tiny SmartMask: enough to run
    suggest (ground-truth layout) and insert (the synthetic inpainter) in a second."""
    lake = synthetic_lake_copy["lake"]
    mv = register_tiny_smartmask(lake, synthetic_lake_copy["version"], tmp_path_factory.mktemp("contract"),
                                 "contract-test")
    return {"lake": lake, "version": synthetic_lake_copy["version"], "model": mv,
            "image": synthetic_lake_copy["world"] / "images" / "000000000001.png"}


@pytest.fixture(scope="module")
def broken_world(world, tmp_path_factory) -> dict:
    """A copy of `world` whose model weights are garbage: loading the model fails, so a command that reports a bad
    option instead of that failure checked the option before loading anything."""
    lake = tmp_path_factory.mktemp("broken") / "lake"
    shutil.copytree(world["lake"], lake)
    (model_dir(lake, world["model"]) / "model.safetensors").write_bytes(b"not safetensors at all")
    return world | {"lake": lake}


def _run(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _suggest(world, *extra):
    return _run("suggest", world["image"], "--object", "person", "--context", "a park", "--layout-from",
                "synth:1:2", "--lake", world["lake"], "--n", "2", "--steps", "2", *extra)


def _insert_box(world, *extra):
    return _run("insert", world["image"], "--object", "person", "--context", "a park", "--mask-from", "box",
                "--bbox", "40,30,100,100", "--inpainter", "synthetic", "--lake", world["lake"], *extra)


def _one_error_line(result, starts: str) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {starts}"), lines[0]
    assert result.stdout == ""
    return lines[0]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


# --- published data is immutable ------------------------------------------------------------------------------------

PROTECTED = {
    "dataset version": lambda w: dataset_dir(w["lake"], "synth", w["version"]) / "masks",
    "model version": lambda w: model_dir(w["lake"], w["model"]) / "out",
    "staging": lambda w: w["lake"] / "_staging" / "mine",
    "caption cache": lambda w: w["lake"] / "caption_cache" / "mine",
    "lake root": lambda w: w["lake"],
    "another stage's runs": lambda w: w["lake"] / "runs" / "kind=train" / "run=mine",
    "lock files": lambda w: w["lake"] / "_locks" / "rebuild",
    "a version in other case": lambda w: w["lake"] / "Datasets" / "name=synth" / f"VERSION={w['version']}" / "m",
}


@pytest.mark.parametrize("command", ["suggest", "insert"])
@pytest.mark.parametrize("where", sorted(PROTECTED))
def test_out_inside_the_lakes_owned_folders_is_refused_and_nothing_is_written(world, command, where):
    target = PROTECTED[where](world)
    before = _snapshot(world["lake"])
    r = _suggest(world, "--out", target) if command == "suggest" else _insert_box(world, "--out", target)
    line = _one_error_line(r, "--out: ")
    assert str(world["lake"]) in line
    assert _snapshot(world["lake"]) == before


def test_a_dataset_version_stays_usable_after_a_refused_write(world, tmp_path):
    inside = dataset_dir(world["lake"], "synth", world["version"]) / "masks"
    _one_error_line(_suggest(world, "--out", inside), "--out: ")
    ok = _suggest(world, "--out", tmp_path / "ok")  # the layout still reads from that version
    assert ok.exit_code == 0, (ok.output, ok.exception)
    assert ok.stdout.strip().splitlines()[-1] == str(tmp_path / "ok")
    assert (tmp_path / "ok" / "suggest.json").exists()


def test_a_symlink_into_a_published_version_is_refused(world, tmp_path):
    link = tmp_path / "looks-harmless"
    link.symlink_to(dataset_dir(world["lake"], "synth", world["version"]))
    before = _snapshot(world["lake"])
    line = _one_error_line(_suggest(world, "--out", link / "masks"), "--out: ")
    assert "dataset version" in line
    assert _snapshot(world["lake"]) == before


def test_protected_folders_of_any_lake_are_refused(world, tmp_path):
    other = tmp_path / "other-lake"
    version = other / "datasets" / "name=x" / "version=v1"
    version.mkdir(parents=True)
    (version / "_manifest.json").write_text("{}")
    (other / "models" / "version=m1").mkdir(parents=True)
    for target in (version / "masks", other / "models" / "version=m1" / "out", other / "datasets",
                   # not created yet, but shaped like a dataset version: nothing may seed one
                   tmp_path / "new" / "datasets" / "name=y" / "version=v2"):
        _one_error_line(_suggest(world, "--out", target), "--out: ")
        _one_error_line(_insert_box(world, "--out", target), "--out: ")
    r = _run("synth", "--out", version / "world", "--scenes", "1", "--small", "--workers", "1")
    _one_error_line(r, "--out: ")
    assert sorted(p.name for p in version.iterdir()) == ["_manifest.json"]
    ok = _suggest(world, "--out", other / "my-outputs")  # elsewhere in that folder is fine
    assert ok.exit_code == 0, (ok.output, ok.exception)


def test_a_lake_nested_in_published_data_is_refused(world, tmp_path):
    nested = dataset_dir(world["lake"], "synth", world["version"]) / "lake"
    before = _snapshot(world["lake"])
    _one_error_line(_run("train", "--dataset", "synth", "--lake", nested, "--steps", "1"), "--lake: ")
    (tmp_path / "img").mkdir()
    _one_error_line(_run("rebuild", "--source", f"cocoa:{tmp_path / 'a.json'}", "--images", tmp_path / "img",
                         "--name", "x", "--lake", nested), "--lake: ")
    _one_error_line(_run("suggest", world["image"], "--object", "person", "--context", "a park", "--layout-from",
                         "synth:1:2", "--lake", nested), "--lake: ")  # its default output is a run in that lake
    assert _snapshot(world["lake"]) == before


# --- every option is checked before any model loads ------------------------------------------------------------------

def _bad_options(w, tmp: Path) -> dict:
    a_file = tmp / "a-file.txt"
    a_file.write_text("x")
    return {
        "out in a dataset version": (["--out", dataset_dir(w["lake"], "synth", w["version"]) / "o"], "--out: "),
        "out is a file": (["--out", a_file], "--out: "),
        "out under a file": (["--out", a_file / "sub"], "--out: "),
        "unknown device": (["--device", "tpu"], "--device: unknown device 'tpu'"),
        "device index": (["--device", "cuda:x"], "--device: unknown device"),
    }


@pytest.mark.parametrize("case", ["out in a dataset version", "out is a file", "out under a file", "unknown device",
                                  "device index"])
@pytest.mark.parametrize("command", ["suggest", "insert"])
def test_options_are_checked_before_the_model_loads(broken_world, tmp_path, command, case):
    extra, starts = _bad_options(broken_world, tmp_path)[case]
    if command == "suggest":
        r = _suggest(broken_world, *extra)
    else:
        out = [] if "--out" in extra else ["--out", tmp_path / "o"]
        r = _run("insert", broken_world["image"], "--object", "person", "--context", "a park", "--layout-from",
                 "synth:1:2", "--lake", broken_world["lake"], "--inpainter", "synthetic", *out, *extra)
    _one_error_line(r, starts)
    assert not (tmp_path / "o").exists()


def test_pick_beyond_n_is_refused_before_sampling(broken_world, tmp_path):
    # the control for the test above too: with good options the garbage weights are reached, and fail
    r = _suggest(broken_world, "--out", tmp_path / "s")
    assert r.exit_code == 1 and r.exception is not None and not isinstance(r.exception, SystemExit)
    assert not isinstance(r.exception, AttributeError), r.exception  # the real failure, not the error handler's
    r = _run("insert", broken_world["image"], "--object", "person", "--context", "a park", "--layout-from",
             "synth:1:2", "--lake", broken_world["lake"], "--inpainter", "synthetic", "--out", tmp_path / "o",
             "--n", "2", "--pick", "3")
    assert "--n 2" in _one_error_line(r, "--pick: ")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; 'out under a file' covers it")
def test_out_in_a_read_only_folder_is_refused(world, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _one_error_line(_suggest(world, "--out", ro / "o"), "--out: ")
    finally:
        ro.chmod(0o700)


def test_cuda_without_a_gpu_is_refused(world, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    line = _one_error_line(_suggest(world, "--out", tmp_path / "o", "--device", "cuda"), "--device: ")
    assert "no CUDA device" in line


COMMANDS_WITH_LAKE = {
    "suggest": ["suggest", "IMG", "--object", "a", "--context", "b", "--layout-from", "synth:1:2"],
    "insert": ["insert", "IMG", "--object", "a", "--context", "b", "--out", "OUT", "--mask-from", "box",
               "--bbox", "1,1,9,9", "--inpainter", "synthetic"],
    "rebuild": ["rebuild", "--source", "cocoa:SRC", "--images", "IMGDIR", "--name", "x"],
    "train": ["train", "--dataset", "synth"],
    "query": ["query", "SELECT 1"],
    "datasets": ["datasets"],
    "models": ["models"],
    "demo": ["demo", "--scenes", "1", "--train-steps", "0"],
    "serve": ["serve", "--config", "CONFIG"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS_WITH_LAKE))
def test_every_command_refuses_a_lake_that_is_a_file(world, tmp_path, command):
    a_file = tmp_path / "lake.txt"
    a_file.write_text("not a lake")
    (tmp_path / "img").mkdir()
    subs = {"IMG": str(world["image"]), "OUT": str(tmp_path / "o"), "SRC": str(tmp_path / "a.json"),
            "IMGDIR": str(tmp_path / "img"), "CONFIG": str(tmp_path / "smartmask.toml")}
    args = [subs.get(a, a) for a in COMMANDS_WITH_LAKE[command]]
    line = _one_error_line(_run(*args, "--lake", a_file), "--lake: ")
    assert line.endswith(f"{a_file} is a file, not a lake folder")


def test_a_lake_file_from_the_environment_is_named(tmp_path):
    a_file = tmp_path / "lake.txt"
    a_file.write_text("not a lake")
    line = _one_error_line(_run("query", "SELECT 1", env={"SMARTMASK_LAKE": str(a_file)}), "--lake: ")
    assert "$SMARTMASK_LAKE" in line


# --- usage errors: one line, exit 2 ----------------------------------------------------------------------------------

def _usage_cases(image: str, lake: str, out: str) -> dict:
    s = ["suggest", image, "--object", "a", "--context", "b", "--lake", lake, "--layout-from", "synth:1:2"]
    i = ["insert", image, "--object", "a", "--context", "b", "--lake", lake, "--layout-from", "synth:1:2"]
    return {
        "unknown option": ([*s, "--bogus"], "--bogus: no such option"),
        "missing option": (i, "--out: missing"),
        "missing argument": (["query"], "SQL: missing"),
        "not an int": ([*s, "--n", "abc"], "--n: "),
        "n zero": ([*s, "--n", "0"], "--n: "),
        "n above 64": ([*s, "--n", "65"], "--n: "),
        "steps above 1000": ([*s, "--steps", "1001"], "--steps: "),
        "inpaint steps above 1000": ([*i, "--out", out, "--inpaint-steps", "1001"], "--inpaint-steps: "),
        "pick above 64": ([*i, "--out", out, "--pick", "65"], "--pick: "),
        "negative seed": ([*s, "--seed", "-1"], "--seed: "),
        "synth negative seed": (["synth", "--out", out, "--seed", "-1"], "--seed: "),
        "no value": ([*s, "--n"], "--n: needs a value"),
        "bad format": (["query", "SELECT 1", "--lake", lake, "--format", "xml"], "--format: "),
        "unknown command": (["nosuch"], "No such command 'nosuch'"),
    }


@pytest.mark.parametrize("case", sorted(_usage_cases("i", "l", "o")))
def test_usage_errors_are_one_line_with_exit_2(tmp_path, case):
    """An empty lake: had an option slipped through, the old code's own one-line error (no model registered)
    would name --model, not the flag."""
    (tmp_path / "lake").mkdir()
    (tmp_path / "img.png").write_bytes(b"")
    args, starts = _usage_cases(str(tmp_path / "img.png"), str(tmp_path / "lake"), str(tmp_path / "o"))[case]
    _one_error_line(_run(*args), starts)
    assert not (tmp_path / "o").exists()


def _smartmask(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


def test_the_console_entry_point_keeps_the_contract(tmp_path):
    """In a real process: a usage error is one line and exit 2; --help exits 0 and shows the bounds; a bare
    `smartmask` shows the help, now listing `datasets` and `models`."""
    r = _smartmask("suggest", "x.png", "--object", "a", "--context", "b", "--n", "1000", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["error: --n: input should be less than or equal to 64"]
    r = _smartmask("suggest", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "1..64" in r.stdout and "1..1000" in r.stdout
    r = _smartmask(cwd=tmp_path)
    assert r.returncode == 2 and "datasets" in r.stdout + r.stderr and "models" in r.stdout + r.stderr
    r = _smartmask("query", "SELECT 1", cwd=tmp_path)  # ./lake does not exist here
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: --lake: no lake at {tmp_path / 'lake'}: the folder does not "
                                             f"exist"]


# --- query output ----------------------------------------------------------------------------------------------------

def test_query_on_a_missing_lake_exits_2(tmp_path):
    line = _one_error_line(_run("query", "SELECT 1", "--lake", tmp_path / "nope"), "--lake: ")
    assert "no lake at" in line and str(tmp_path / "nope") in line


TRICKY = ("SELECT 1 AS i, 'a,b' AS comma, 'say \"hi\"' AS quote, 'two' || chr(10) || 'lines' AS nl, NULL AS nothing, "
          "[1, 2] AS list, 0.1::DOUBLE AS f, 'nan'::DOUBLE AS nan, true AS b")


def test_query_json_is_a_list_of_row_objects(world):
    r = _run("query", "SELECT image_id, width, height FROM images ORDER BY image_id LIMIT 3", "--lake",
             world["lake"], "--format", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [sorted(x) for x in rows] == [["height", "image_id", "width"]] * 3
    assert all(x["width"] == 160 and x["height"] == 120 for x in rows)
    r = _run("query", TRICKY, "--lake", world["lake"], "--format", "json")
    assert json.loads(r.stdout) == [{"i": 1, "comma": "a,b", "quote": 'say "hi"', "nl": "two\nlines",
                                     "nothing": None, "list": [1, 2], "f": 0.1, "nan": None, "b": True}]


def test_query_csv_is_a_header_and_quoted_rows(world):
    r = _run("query", TRICKY, "--lake", world["lake"], "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows == [["i", "comma", "quote", "nl", "nothing", "list", "f", "nan", "b"],
                    ["1", "a,b", 'say "hi"', "two\nlines", "", "[1, 2]", "0.1", "", "true"]]
    n = json.loads(_run("query", "SELECT count(*) AS n FROM images", "--lake", world["lake"], "--format",
                        "json").stdout)[0]["n"]
    r = _run("query", "SELECT image_id FROM images ORDER BY image_id", "--lake", world["lake"], "--format", "csv",
             "--max-rows", "1")  # every row: --max-rows is for the table form only
    assert n > 1 and len(r.stdout.strip().splitlines()) == 1 + n


# --- progress --------------------------------------------------------------------------------------------------------

def test_suggest_and_insert_report_stages_on_stderr(world, tmp_path):
    env = {"SMARTMASK_PROGRESS": "lines"}
    r = runner.invoke(app, [str(a) for a in ("suggest", world["image"], "--object", "person", "--context", "a park",
                                             "--layout-from", "synth:1:2", "--lake", world["lake"], "--n", "2",
                                             "--steps", "2", "--out", tmp_path / "s")], env=env)
    assert r.exit_code == 0, (r.output, r.exception)
    err = r.stderr.splitlines()
    assert [ln.split("stage=")[1] for ln in err] == ["load model", "layout", "sample", "write", "done"], err
    assert err[0].startswith("suggest: 0/4 stages") and err[-1].startswith("suggest: 4/4 stages (100%)")
    out = r.stdout.strip().splitlines()
    assert out[-1] == str(tmp_path / "s") and out[0].startswith("#1 seed ")
    assert not any("stage" in ln for ln in out)
    r = runner.invoke(app, [str(a) for a in ("insert", world["image"], "--object", "person", "--context", "a park",
                                             "--layout-from", "synth:1:2", "--lake", world["lake"], "--n", "2",
                                             "--steps", "2", "--inpainter", "synthetic", "--out", tmp_path / "i")],
                      env=env)
    assert r.exit_code == 0, (r.output, r.exception)
    stages = [ln.split("stage=")[1] for ln in r.stderr.splitlines()]
    assert stages == ["load models", "layout", "sample", "inpaint", "write", "done"]
    assert r.stdout.strip().splitlines()[-1] == str(tmp_path / "i")
