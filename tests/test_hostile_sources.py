"""Hostile annotation files: deep nesting, oversized files, invalid file names, broken Unicode, odd ids. None may
raise anything but a one-line SourceError for the whole file or a reject row for the one bad record."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from conftest import rect, write_images, write_json
from typer.testing import CliRunner

from smartmask.config import RebuildConfig
from smartmask.lake.paths import dataset_dir
from smartmask.rebuild import rebuild
from smartmask.sources import SourceError, load_source
from smartmask.sources.base import reject

GOOD = {"segmentation": rect(10, 10, 30, 30), "name": "person", "order": 1}
DEEP = "[" * 5000 + "]" * 5000  # stdlib json and json.dumps recurse on this; orjson stops at 1024 levels


def _table(lake, name, version, table):
    return pq.read_table(dataset_dir(lake, name, version) / table).to_pylist()


def _cocoa_text(junk: str) -> str:
    doc = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 1, "image_id": 1, "regions": [GOOD]}]}
    return json.dumps(doc)[:-1] + f', "junk": {{"x": {junk}}}}}'


def _kins_text(junk: str, marker: str) -> str:
    ann = {"id": 1, "image_id": 1, "category_id": 1, marker: [rect(10, 10, 30, 30)]}
    doc = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "car"}], "annotations": [ann]}
    return json.dumps(doc)[:-1] + f', "junk": {junk}}}'


@pytest.mark.parametrize("kind,text", [
    ("cocoa", _cocoa_text(DEEP)),
    ("kins", _kins_text(DEEP, "a_segm")),
    ("amodal-coco", _kins_text(DEEP, "visible_mask")),
    ("auto", _kins_text(DEEP, "inmodal_seg")),
    ("auto", DEEP),
    # Within orjson's own limit, but deep inside a record that validation and reject rows would walk.
    ("cocoa", _cocoa_text("1").replace('"order": 1', '"order": ' + "[" * 1020 + "]" * 1020)),
])
def test_deeply_nested_json_is_a_one_line_source_error(tmp_path, kind, text):
    write_images(tmp_path / "img", ["a.png"])
    p = tmp_path / "deep.json"
    p.write_text(text)
    for call in (lambda: load_source(f"{kind}:{p}"),
                 lambda: rebuild(f"{kind}:{p}", tmp_path / "img", "d", tmp_path / "lake", RebuildConfig.for_tests())):
        with pytest.raises(SourceError) as e:
            call()
        assert "nests deeper than 128 levels" in str(e.value) and str(p) in str(e.value)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "lake").exists()


def test_cli_exits_2_on_a_deeply_nested_file(tmp_path):
    from flows.cli import app

    (tmp_path / "img").mkdir()
    p = tmp_path / "deep.json"
    p.write_text(_cocoa_text(DEEP))
    r = CliRunner().invoke(app, ["rebuild", "--source", f"auto:{p}", "--images", str(tmp_path / "img"),
                                 "--name", "d", "--lake", str(tmp_path / "lake")])
    assert r.exit_code == 2, r.output
    assert "error: " in r.output and "nests deeper than" in r.output


def test_jsonl_deep_line_is_one_reject_and_the_rest_ingests(tmp_path):
    write_images(tmp_path / "img", ["a.png", "b.png"])
    good = {"label": "cup", "segmentation": rect(5, 5, 20, 20)}
    lines = [json.dumps({"image_id": "a", "file_name": "a.png", "layers": [good]}),
             json.dumps({"image_id": "deep", "file_name": "a.png", "layers": []})[:-1] + f', "junk": {DEEP}}}',
             json.dumps({"image_id": "b", "file_name": "b.png", "layers": [good]})]
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(lines) + "\n")
    m = rebuild(f"jsonl:{src}", tmp_path / "img", "j", tmp_path / "lake", RebuildConfig.for_tests())
    assert m["counts"]["image"] == {"in": 3, "accepted": 2, "rejected": 1}
    (row,) = _table(tmp_path / "lake", "j", m["version"], "rejects")
    assert (row["record_kind"], row["record_key"], row["reason"]) == ("image", "line 2", "json_too_deep")
    assert len(row["record"]) <= 2000
    assert sorted(r["image_id"] for r in _table(tmp_path / "lake", "j", m["version"], "images")) == ["a", "b"]


def test_reject_rows_render_deep_and_huge_records_safely():
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    row = reject("s", "region", 1, "x", "d", record=deep)
    assert row["record"] == "[" * 2000
    row = reject("s", "region", 1, "x", "d", record={"counts": "x" * 10_000_000, "n": float("nan")})
    assert row["record"].startswith('{"counts": "xxx') and len(row["record"]) == 2000
    small = {"a": [1, 2.5, None, True, "é"], "b": {"c": float("nan")}}
    assert reject("s", "region", 1, "x", "d", record=small)["record"] == json.dumps(small)


@pytest.mark.parametrize("kind", ["cocoa", "jsonl", "auto"])
def test_annotation_file_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch, kind):
    from smartmask.sources import limits

    p = tmp_path / "a.json"
    p.write_text(_cocoa_text("1"))
    monkeypatch.setattr(limits, "MAX_ANNOTATION_BYTES", 100)
    with pytest.raises(SourceError) as e:
        load_source(f"{kind}:{p}")
    assert f"{p.stat().st_size:,} bytes, over the 100-byte limit" in str(e.value) and "\n" not in str(e.value)


def test_invalid_file_names_reject_their_image_and_the_rest_ingests(tmp_path):
    write_images(tmp_path / "img", ["1.png"])
    bad = {2: "a\x00b.png", 3: 7, 4: ["x.png"], 5: "", 6: "bad\nname.png", 7: "x" * 300 + ".png",
           8: "a/" * 2100 + "b.png"}
    images = [{"id": 1, "file_name": "1.png"}] + [{"id": i, "file_name": n} for i, n in bad.items()]
    anns = [{"id": 100 + i, "image_id": i, "regions": [GOOD]} for i in [1, *bad]]
    ann = write_json(tmp_path / "a.json", {"images": images, "annotations": anns})
    m = rebuild(f"cocoa:{ann}", tmp_path / "img", "n", tmp_path / "lake", RebuildConfig.for_tests())
    assert m["counts"]["image"] == {"in": 8, "accepted": 1, "rejected": 7}
    assert m["counts"]["region"] == {"in": 8, "accepted": 1, "rejected": 7}
    rej = _table(tmp_path / "lake", "n", m["version"], "rejects")
    by_key = {(r["record_kind"], r["record_key"]): r["reason"] for r in rej}
    for i in bad:
        assert by_key[("image", str(i))] == "invalid_file_name", i
        assert by_key[("region", f"{100 + i}:0")] == "image_rejected", i
    assert all("\n" not in r["detail"] for r in rej)
    assert [r["image_id"] for r in _table(tmp_path / "lake", "n", m["version"], "images")] == ["1"]


def test_safe_image_path_never_raises(tmp_path):
    from smartmask.validate import safe_image_path

    root = tmp_path.resolve()
    assert safe_image_path(root, "a/b.png") == root / "a" / "b.png"
    for name in ("a\x00b.png", "../x.png", "/etc/passwd", 7, None, "", "x" * 300, "a/" * 2100, "tab\t.png",
                 "\ud800.png"):
        assert safe_image_path(root, name) is None, repr(name)


def test_lone_surrogates_become_replacement_characters(tmp_path):
    write_images(tmp_path / "img", ["a.png"])
    # json.dumps writes a lone surrogate as the escape \ud800, which orjson refuses and stdlib json accepts.
    doc = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "\ud800.png"}],
           "annotations": [{"id": 1, "image_id": 1, "regions": [{**GOOD, "name": "ca\ud800t"}]},
                           {"id": 2, "image_id": 2, "regions": [GOOD]}]}
    m = rebuild(f"cocoa:{write_json(tmp_path / 'a.json', doc)}", tmp_path / "img", "u", tmp_path / "lake",
                RebuildConfig.for_tests())
    (layer,) = _table(tmp_path / "lake", "u", m["version"], "layers")
    assert layer["label"] == layer["label_raw"] == "ca\ufffdt"
    rej = {r["record_key"]: r for r in _table(tmp_path / "lake", "u", m["version"], "rejects")
           if r["record_kind"] == "image"}
    assert rej["2"]["reason"] == "image_missing" and "\ufffd.png" in rej["2"]["detail"]

    line = {"image_id": "j\udfff", "file_name": "a.png", "layers": [{"label": "cup\ud83d", "segmentation": GOOD[
        "segmentation"]}]}
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps(line) + "\n")
    m = rebuild(f"jsonl:{src}", tmp_path / "img", "uj", tmp_path / "lake", RebuildConfig.for_tests())
    (layer,) = _table(tmp_path / "lake", "uj", m["version"], "layers")
    assert (layer["image_id"], layer["label"]) == ("j\ufffd", "cup\ufffd")


def test_line_separators_inside_jsonl_strings_do_not_split_records(tmp_path):
    write_images(tmp_path / "img", ["a.png"])
    line = {"image_id": "a", "file_name": "a.png", "caption": "one\u2028two\x85three\x0cfour",
            "layers": [{"label": "cup", "segmentation": rect(5, 5, 20, 20)}]}
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps(line, ensure_ascii=False) + "\r\n", encoding="utf-8")
    m = rebuild(f"jsonl:{src}", tmp_path / "img", "ls", tmp_path / "lake", RebuildConfig.for_tests())
    assert m["counts"]["image"] == {"in": 1, "accepted": 1, "rejected": 0}
    (img,) = _table(tmp_path / "lake", "ls", m["version"], "images")
    assert img["source_caption"] == line["caption"]


def test_integers_too_long_for_python_are_refused_not_raised(tmp_path):
    write_images(tmp_path / "img", ["a.png"])
    p = tmp_path / "a.json"
    p.write_text(_cocoa_text("1" * 5000))
    with pytest.raises(SourceError, match="not valid JSON"):
        load_source(f"cocoa:{p}")
    good = {"label": "cup", "segmentation": rect(5, 5, 20, 20)}
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"image_id": "a", "file_name": "a.png", "layers": [good]}) + "\n"
                   + '{"image_id": "b", "n": ' + "9" * 5000 + ', "layers": []}\n')
    m = rebuild(f"jsonl:{src}", tmp_path / "img", "i", tmp_path / "lake", RebuildConfig.for_tests())
    reasons = Counter(r["reason"] for r in _table(tmp_path / "lake", "i", m["version"], "rejects"))
    assert reasons == {"malformed_json": 1} and m["counts"]["image"]["accepted"] == 1


def test_unhashable_or_odd_ids_are_rejected_not_raised(tmp_path):
    write_images(tmp_path / "img", ["a.png"])
    cats = [{"id": [1], "name": "list id"}, {"id": 1, "name": "car"}, "not a category"]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "a_segm": [rect(10, 10, 30, 30)],
             "i_segm": [rect(10, 10, 30, 30)], "oco_id": [7], "ico_id": 1},
            {"id": 2, "image_id": 1, "category_id": [1], "a_segm": [rect(1, 1, 9, 9)]},
            {"id": {"a": 1}, "image_id": 1, "category_id": 1, "a_segm": [rect(1, 1, 9, 9)]}]
    doc = {"images": [{"id": 1, "file_name": "a.png"}], "categories": cats, "annotations": anns}
    m = rebuild(f"kins:{write_json(tmp_path / 'k.json', doc)}", tmp_path / "img", "o", tmp_path / "lake",
                RebuildConfig.for_tests())
    assert m["counts"]["region"] == {"in": 3, "accepted": 1, "rejected": 2}
    reasons = Counter(r["reason"] for r in _table(tmp_path / "lake", "o", m["version"], "rejects"))
    assert reasons == {"unknown_category": 1, "malformed_record": 1}
    with pytest.raises(SourceError, match="'categories' must be a list"):
        load_source(f"kins:{write_json(tmp_path / 'c.json', {**doc, 'categories': 5})}")
