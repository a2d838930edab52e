"""`smartmask datasets` and `smartmask models`: what a lake holds, from each version's manifest, in the three formats
`query` has; `newest` is the version a reference without @VERSION resolves to."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from conftest import rect, write_images, write_json
from safetensors.torch import save_file
from typer.testing import CliRunner

from flows.cli import app
from smartmask import presets
from smartmask.config import RebuildConfig
from smartmask.lake.paths import dataset_dir
from smartmask.model.network import SmartMask
from smartmask.rebuild import rebuild
from smartmask.registry import register, resolve_dataset, resolve_model

runner = CliRunner()


def _list(*args) -> list[dict]:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (r.output, r.exception)
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> dict:
    """Two versions of a dataset `q` with rejects: v1 has 3 images (one file missing), 5 regions (one outside its
    image, one on the missing image) and a class (`ghost`) whose only instance is rejected; v2 adds an image."""
    tmp = tmp_path_factory.mktemp("catalog")
    write_images(tmp / "img", ["a.png", "b.png", "c.png"])
    regions = [{"segmentation": rect(0, 0, 64, 48), "name": "sky", "isStuff": 1, "order": 2},
               {"segmentation": rect(5, 5, 20, 20), "name": "bird", "order": 1},
               {"segmentation": rect(70, 60, 90, 80), "name": "ghost", "order": 3}]
    sky = [{"segmentation": rect(0, 0, 64, 48), "name": "sky", "isStuff": 1, "order": 1}]
    doc = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"},
                      {"id": 3, "file_name": "missing.png"}],
           "annotations": [{"id": 1, "image_id": 1, "regions": regions}, {"id": 2, "image_id": 2, "regions": sky},
                           {"id": 3, "image_id": 3, "regions": sky}]}
    v1 = rebuild(f"cocoa:{write_json(tmp / 'v1.json', doc)}", tmp / "img", "q", tmp / "lake",
                 RebuildConfig.for_tests())
    doc["images"].append({"id": 4, "file_name": "c.png"})
    doc["annotations"].append({"id": 4, "image_id": 4, "regions": sky})
    v2 = rebuild(f"cocoa:{write_json(tmp / 'v2.json', doc)}", tmp / "img", "q", tmp / "lake",
                 RebuildConfig.for_tests())
    return {"lake": tmp / "lake", "v1": v1, "v2": v2}


def test_datasets_lists_every_version_with_its_accounting(lake):
    rows = _list("datasets", "--lake", lake["lake"], "--format", "json")
    by_version = {r["version"]: r for r in rows}
    assert set(by_version) == {lake["v1"]["version"], lake["v2"]["version"]} and len(rows) == 2
    v1, v2 = by_version[lake["v1"]["version"]], by_version[lake["v2"]["version"]]
    assert {k: v1[k] for k in ("name", "images_accepted", "images_rejected", "instances_accepted",
                               "instances_rejected", "classes_accepted", "classes_rejected")} == {
        "name": "q", "images_accepted": 2, "images_rejected": 1, "instances_accepted": 3, "instances_rejected": 2,
        "classes_accepted": 2, "classes_rejected": 1}
    assert (v2["images_accepted"], v2["images_rejected"], v2["instances_accepted"]) == (3, 1, 4)
    assert v1["created_at"] == lake["v1"]["created_at"] and v1["source"] == lake["v1"]["source"]
    assert v1["captioner"] == lake["v1"]["captioner"]
    newest = resolve_dataset(lake["lake"], "q")[1]
    assert [r["version"] for r in rows if r["newest"]] == [newest]
    assert rows[0]["version"] == newest  # each name's versions newest first


def test_datasets_as_csv_and_table(lake):
    r = runner.invoke(app, ["datasets", "--lake", str(lake["lake"]), "--format", "csv"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 2 and {row["images_rejected"] for row in rows} == {"1"}
    assert {row["source"] for row in rows} == {lake["v1"]["source"], lake["v2"]["source"]}
    r = runner.invoke(app, ["datasets", "--lake", str(lake["lake"])])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("name ") and "| newest |" in lines[0] and "| images_rejected |" in lines[0]
    assert lines[-1] == "(2 rows)" and lake["v1"]["version"] in r.stdout


def test_a_version_folder_without_a_manifest_is_not_listed(lake, tmp_path):
    copy = tmp_path / "lake"
    shutil.copytree(lake["lake"], copy)
    (dataset_dir(copy, "q", lake["v1"]["version"]) / "_manifest.json").unlink()
    rows = _list("datasets", "--lake", copy, "--format", "json")
    assert [r["version"] for r in rows] == [lake["v2"]["version"]]


def test_models_lists_lineage_and_headline_metrics(synthetic_lake_copy, tmp_path):
    lake, version = synthetic_lake_copy["lake"], synthetic_lake_copy["version"]
    assert _list("models", "--lake", lake, "--format", "json") == []
    cfg = presets.tiny_model()
    save_file({n: p.detach().contiguous() for n, p in SmartMask.build(cfg).named_parameters() if p.requires_grad},
              str(tmp_path / "ema.safetensors"))
    a = register(lake, tmp_path, cfg, {"model": cfg.to_dict()}, "synth", version, "run-a",
                 {"step": 7, "loss": 0.5, "val_loss": 0.625})
    b = register(lake, tmp_path, cfg, {"model": cfg.to_dict()}, "synth", version, "run-b", {"step": 3, "loss": 0.75})
    rows = _list("models", "--lake", lake, "--format", "json")
    by_version = {r["version"]: r for r in rows}
    assert set(by_version) == {a, b}
    assert {k: by_version[a][k] for k in ("preset", "dataset", "run_id", "steps", "final_loss", "val_loss")} == {
        "preset": cfg.preset, "dataset": f"synth@{version}", "run_id": "run-a", "steps": 7, "final_loss": 0.5,
        "val_loss": 0.625}
    assert by_version[b]["val_loss"] is None and by_version[b]["run_id"] == "run-b"
    # b was registered last, within the same second as a: still the newest (created_at is to the microsecond)
    assert [r["version"] for r in rows if r["newest"]] == [resolve_model(lake)] == [rows[0]["version"]] == [b]
    r = runner.invoke(app, ["models", "--lake", str(lake), "--format", "csv"])
    assert r.exit_code == 0 and len(list(csv.DictReader(io.StringIO(r.stdout)))) == 2


def test_a_damaged_manifest_is_a_failure_naming_the_file(lake, tmp_path):
    copy = tmp_path / "lake"
    shutil.copytree(lake["lake"], copy)
    manifest = dataset_dir(copy, "q", lake["v1"]["version"]) / "_manifest.json"
    manifest.write_text("{truncated")
    r = runner.invoke(app, ["datasets", "--lake", str(copy)])
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and str(manifest) in r.stderr


def test_listing_a_missing_lake_exits_2(tmp_path):
    for command in ("datasets", "models"):
        r = runner.invoke(app, [command, "--lake", str(tmp_path / "nope")])
        assert r.exit_code == 2 and r.stderr.startswith("error: --lake: no lake at ")
