"""Template captions on synthetic scenes whose geometry is known; dataset cards and their diff."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from smartmask import masks
from smartmask.captioning.template import caption, plural
from smartmask.config import RebuildConfig, SynthConfig
from smartmask.lake.paths import dataset_dir
from smartmask.lake.query import run_query
from smartmask.rebuild import rebuild
from smartmask.synth import generate
from smartmask.synth.world import SUPPORT


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cap")
    world = tmp / "world"
    generate(world, 40, seed=11, config=SynthConfig(width=320, height=240, min_things=6, max_things=12), workers=2)
    lake = tmp / "lake"
    m = rebuild(f"cocoa:{world / 'annotations.json'}", world / "images", "synth", lake, RebuildConfig.for_tests())
    d = dataset_dir(lake, "synth", m["version"])
    layers = pq.read_table(d / "layers").to_pylist()
    by_image: dict[str, list[dict]] = {}
    for r in sorted(layers, key=lambda r: (r["image_id"], r["layer"])):
        by_image.setdefault(r["image_id"], []).append(r)
    caps = {r["image_id"]: r for r in pq.read_table(d / "captions").to_pylist()}
    return {"world": world, "lake": lake, "manifest": m, "layers": by_image, "captions": caps}


def _mentions(text: str, label: str) -> bool:
    return re.search(rf"\b({re.escape(label)}|{re.escape(plural(label))})\b", text) is not None


def _mask(r: dict) -> np.ndarray:
    return masks.decode({"size": [r["height"], r["width"]], "counts": r["rle"]}).astype(bool)


def test_every_image_has_one_template_caption_naming_every_class(built):
    assert set(built["captions"]) == set(built["layers"])
    for iid, rows in built["layers"].items():
        cap = built["captions"][iid]
        assert cap["captioner"] == "template@1" and cap["prompt"] is None
        for label in {r["label"] for r in rows}:
            assert _mentions(cap["caption"], label), (label, cap["caption"])


def test_stated_relations_are_true_and_present_when_one_exists(built):
    with_relation = 0
    for iid, rows in built["layers"].items():
        rels = json.loads(built["captions"][iid]["relations"])
        text = built["captions"][iid]["caption"]
        for a, kind, b in rels:
            A, B = rows[a], rows[b]
            assert f"{A['label']} {kind} " in text
            if kind == "in front of":
                assert a > b and (_mask(A) & _mask(B)).any(), (iid, A["label"], B["label"])
            elif kind == "on":
                assert B["label"] in SUPPORT[A["label"]], (iid, A["label"], B["label"])
            else:
                ax, ay, aw, ah = A["bbox"]
                bx, by, bw, bh = B["bbox"]
                assert ax + aw <= bx or bx + bw <= ax  # side by side, no overlap
        things = [r for r in rows if not r["is_stuff"]]
        exists = any(a["label"] != b["label"] and (_mask(a) & _mask(b)).any() and
                     ((_mask(a) & _mask(b)).sum() > 0.15 * min(a["area"], b["area"]))
                     for i, a in enumerate(things) for b in things[i + 1:])
        if exists:
            assert rels, (iid, text)
            with_relation += 1
    assert with_relation >= 10  # the check above really ran on many scenes


def test_caption_counts_and_stuff_phrase():
    boxes = np.array([[0, 0, 100, 50], [0, 50, 100, 50], [10, 60, 10, 30], [40, 60, 10, 30], [70, 60, 10, 30]], float)
    text, rels = caption(["sky", "grass", "person", "person", "person"], [True, True, False, False, False], boxes,
                         [0.0] * 5)
    assert text == "three people, in a scene with sky and grass" and rels == []


def test_card_stats_and_diff_against_previous_version(built, tmp_path):
    m1 = built["manifest"]
    d1 = dataset_dir(built["lake"], "synth", m1["version"])
    card = (d1 / "CARD.md").read_text()
    assert f"version `{m1['version']}`" in card and "First version of this dataset." in card
    stats = run_query(built["lake"], "SELECT section, key, value FROM stats WHERE version = ?", [m1["version"]])
    s = {(r["section"], r["key"]): r["value"] for r in stats.to_pylist()}
    assert s[("summary", "images")] == 40 and s[("captions", "template@1")] == 40
    assert s[("summary", "instances")] == m1["counts"]["region"]["accepted"]
    # Drop one image from the source: a new version whose card diffs against the first.
    doc = json.loads((built["world"] / "annotations.json").read_text())
    gone = doc["images"].pop(0)
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != gone["id"]]
    src = tmp_path / "fewer.json"
    src.write_text(json.dumps(doc))
    m2 = rebuild(f"cocoa:{src}", built["world"] / "images", "synth", built["lake"], RebuildConfig.for_tests())
    assert m2["version"] != m1["version"]
    diff = {r["key"]: (r["value"], r["text"]) for r in run_query(
        built["lake"], "SELECT key, value, text FROM stats WHERE version = ? AND section = 'diff'",
        [m2["version"]]).to_pylist()}
    assert diff["images_removed"] == (1, m1["version"]) and diff["images_added"][0] == 0
    removed_layers = len(built["layers"][str(gone["id"])])
    assert diff["instances_delta"][0] == -removed_layers
    assert f"Previous version: `{m1['version']}`" in (dataset_dir(built["lake"], "synth", m2["version"]) / "CARD.md").read_text()
