"""Annotation layouts end to end: flat amodal COCO, both KINS layouts (RLE masks, ico_id order, inferred order),
`auto:` detection, the visible-inside-amodal band, and image sizes read against the EXIF-upright image."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import rect, write_images, write_json
from PIL import Image

from smartmask import masks
from smartmask.config import RebuildConfig
from smartmask.lake.paths import dataset_dir
from smartmask.rebuild import rebuild
from smartmask.sources import SourceError, load_source

H, W = 48, 64


def _box(x0: int, y0: int, x1: int, y1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _rle(m: np.ndarray) -> dict:
    return masks.encode(m)


def _runs(m: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major runs, starting with background)."""
    flat = m.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    return {"size": list(m.shape), "counts": ([0] if flat[0] else []) + runs}


def _table(lake, name, version, table):
    return pq.read_table(dataset_dir(lake, name, version) / table).to_pylist()


def _layers(lake, name, version):
    return sorted(_table(lake, name, version, "layers"), key=lambda r: (r["image_id"], r["layer"]))


def _reasons(lake, name, version):
    return {(r["record_kind"], r["record_key"]): r["reason"] for r in _table(lake, name, version, "rejects")}


def _amodal_coco_doc():
    anns = [
        # Car occluded on its right by the person: visible as polygons, invisible as RLE.
        {"id": 1, "image_id": 3, "category_id": 1, "segmentation": [rect(10, 10, 40, 30)], "area": 600,
         "bbox": [10, 10, 30, 20], "iscrowd": 0, "visible_mask": [rect(10, 10, 30, 30)],
         "invisible_mask": _rle(_box(30, 10, 40, 30))},
        # Unoccluded person, amodal mask as compressed RLE, both optional masks null.
        {"id": 2, "image_id": 3, "category_id": 2, "segmentation": _rle(_box(30, 5, 50, 40)), "area": 700,
         "bbox": [30, 5, 20, 35], "iscrowd": 0, "visible_mask": None, "invisible_mask": None},
        # Only the invisible part given: visible = amodal minus invisible.
        {"id": 3, "image_id": 3, "category_id": 1, "segmentation": [rect(0, 35, 20, 48)], "area": 260,
         "bbox": [0, 35, 20, 13], "iscrowd": 0, "invisible_mask": _rle(_box(0, 35, 5, 48))},
        {"id": 4, "image_id": 3, "category_id": 99, "segmentation": [rect(50, 40, 60, 47)], "iscrowd": 0},
        {"id": 5, "image_id": 3, "category_id": 2, "segmentation": _rle(_box(50, 0, 64, 8)), "iscrowd": 1},
    ]
    return {"images": [{"id": 3, "file_name": "c.png", "width": W, "height": H}],
            "categories": [{"id": 1, "name": "Car", "supercategory": "vehicle"}, {"id": 2, "name": "person"}],
            "annotations": anns}


def test_amodal_coco_layout_ingests_with_inferred_order(tmp_path):
    write_images(tmp_path / "img", ["c.png"])
    ann = write_json(tmp_path / "amodal_coco_val.json", _amodal_coco_doc())
    m = rebuild(f"amodal-coco:{ann}", tmp_path / "img", "ac", tmp_path / "lake", RebuildConfig.for_tests())
    assert m["source"] == f"amodal-coco:{ann.resolve()}"
    assert m["counts"]["region"] == {"in": 5, "accepted": 3, "rejected": 2}
    assert m["counts"]["image"] == {"in": 1, "accepted": 1, "rejected": 0}
    rows = _layers(tmp_path / "lake", "ac", m["version"])
    # The person's visible mask covers the overlap: it is in front of car 1. Car 3 touches nothing.
    assert [r["region_id"] for r in rows] == ["1", "2", "3"]
    assert [r["label"] for r in rows] == ["car", "person", "car"]
    assert [r["label_raw"] for r in rows] == ["Car", "person", "Car"]
    assert [r["area"] for r in rows] == [600, 700, 260]
    assert [r["visible_area"] for r in rows] == [400, 700, 260 - 65]
    assert rows[1]["visible_rle"] is None and rows[1]["occlusion_rate"] == 0.0
    assert rows[2]["visible_rle"] == masks.encode(_box(5, 35, 20, 48))["counts"]
    assert [r["order_source"] for r in rows] == ["inferred:occlusion", "inferred:occlusion", "unconstrained"]
    assert _reasons(tmp_path / "lake", "ac", m["version"]) == {("region", "4"): "unknown_category",
                                                               ("region", "5"): "crowd_region"}


def _kins_doc(annotations):
    return {"images": [{"id": 5, "file_name": "k.png", "width": W, "height": H}],
            "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "pedestrian"}, {"id": 3, "name": "tram"},
                           {"id": 4, "name": "cyclist"}],
            "annotations": annotations}


def test_kins2020_rle_masks_and_ico_order(tmp_path):
    write_images(tmp_path / "img", ["k.png"])
    anns = [  # listed front-first: the order must come from ico_id, not from list position or area
        # a_segm as compressed RLE; i_segm traced separately, one pixel wider on the right (clipped, counted).
        {"id": 21, "image_id": 5, "category_id": 2, "a_segm": _rle(_box(30, 20, 40, 46)),
         "i_segm": [rect(30, 20, 41, 46)], "a_area": 260, "oco_id": 7, "ico_id": 1},
        # a_segm as uncompressed RLE, i_segm as polygons.
        {"id": 22, "image_id": 5, "category_id": 1, "a_segm": _runs(_box(10, 25, 50, 45)),
         "i_segm": [rect(10, 25, 30, 45)], "oco_id": 7, "ico_id": 2},
        {"id": 23, "image_id": 5, "category_id": 3, "a_segm": [rect(0, 5, 64, 40)], "i_segm": _rle(_box(0, 5, 64, 25)),
         "oco_id": 7, "ico_id": 3},
        # Alone in its own cluster: ico_id orders nothing across clusters.
        {"id": 24, "image_id": 5, "category_id": 4, "a_segm": [rect(0, 42, 8, 48)], "i_segm": [rect(0, 42, 8, 48)],
         "oco_id": 8, "ico_id": 1},
    ]
    ann = write_json(tmp_path / "update_train_2020.json", _kins_doc(anns))
    m = rebuild(f"kins:{ann}", tmp_path / "img", "k", tmp_path / "lake", RebuildConfig.for_tests())
    assert m["counts"]["region"] == {"in": 4, "accepted": 4, "rejected": 0}
    rows = _layers(tmp_path / "lake", "k", m["version"])
    assert [r["region_id"] for r in rows] == ["23", "22", "21", "24"]
    assert [r["label"] for r in rows] == ["tram", "car", "pedestrian", "cyclist"]
    assert [r["order_source"] for r in rows] == ["source:ico_id"] * 3 + ["unconstrained"]
    assert [r["area"] for r in rows] == [64 * 35, 800, 260, 48]
    assert [r["visible_area"] for r in rows] == [64 * 20, 400, 260, 48]
    assert [r["visible_clipped_pixels"] for r in rows] == [0, 0, 26, 0]
    assert rows[2]["visible_rle"] == rows[2]["rle"]  # clipped to exactly the amodal mask


def test_kins_original_order_inferred_with_traced_inmodal_overshoot(tmp_path):
    write_images(tmp_path / "img", ["k.png"])
    anns = [
        {"id": 1, "image_id": 5, "category_id": 3, "segmentation": [rect(0, 5, 64, 40)],
         "inmodal_seg": [rect(0, 5, 64, 25)], "inmodal_bbox": [0, 5, 64, 20], "bbox": [0, 5, 64, 35]},
        # The car's visible part goes around the pedestrian and overshoots its amodal mask by one column.
        {"id": 2, "image_id": 5, "category_id": 1, "segmentation": [rect(10, 25, 50, 45)],
         "inmodal_seg": [rect(10, 25, 20, 45), rect(28, 25, 51, 45), rect(20, 25, 28, 30)]},
        {"id": 3, "image_id": 5, "category_id": 2, "segmentation": [rect(20, 30, 28, 47)],
         "inmodal_seg": [rect(20, 30, 28, 47)]},
    ]
    ann = write_json(tmp_path / "instances_train.json", _kins_doc(anns))
    m = rebuild(f"kins:{ann}", tmp_path / "img", "k", tmp_path / "lake", RebuildConfig.for_tests())
    rows = _layers(tmp_path / "lake", "k", m["version"])
    assert [r["label"] for r in rows] == ["tram", "car", "pedestrian"]
    assert {r["order_source"] for r in rows} == {"inferred:occlusion"}
    assert [r["visible_clipped_pixels"] for r in rows] == [0, 20, 0]
    assert [r["visible_area"] for r in rows] == [64 * 20, 800 - 8 * 15, 8 * 17]


def _cocoa_doc():
    return {"images": [{"id": 1, "file_name": "a.png"}],
            "annotations": [{"id": 1, "image_id": 1, "regions": [
                {"segmentation": rect(5, 5, 30, 30), "name": "cup", "order": 1}]}]}


def _layouts():
    kins20 = _kins_doc([{"id": 1, "image_id": 5, "category_id": 1, "a_segm": [rect(1, 1, 9, 9)],
                         "i_segm": [rect(1, 1, 9, 9)], "oco_id": 1, "ico_id": 0}])
    kins_orig = _kins_doc([{"id": 1, "image_id": 5, "category_id": 1, "segmentation": [rect(1, 1, 9, 9)],
                            "inmodal_seg": [rect(1, 1, 9, 9)]}])
    line = {"image_id": "j", "file_name": "a.png", "layers": [{"label": "cup", "segmentation": rect(1, 1, 9, 9)}]}
    return {
        "cocoa": (json.dumps(_cocoa_doc()), "cocoa", "cocoa (annotations with 'regions')"),
        "cocoa-newline": (json.dumps(_cocoa_doc()) + "\n\n", "cocoa", "cocoa (annotations with 'regions')"),
        "kins2020": (json.dumps(kins20), "kins", "kins (2020: a_segm/i_segm)"),
        "kins2020-pretty": (json.dumps(kins20, indent=2), "kins", "kins (2020: a_segm/i_segm)"),
        "kins-original": (json.dumps(kins_orig), "kins", "kins (original: segmentation/inmodal_seg)"),
        "amodal-coco": (json.dumps(_amodal_coco_doc()), "amodal-coco",
                        "amodal-coco (visible_mask/invisible_mask per annotation)"),
        "jsonl": ("{not json\n" + json.dumps(line) + "\n", "jsonl", "jsonl (one JSON object per line with 'layers')"),
        "jsonl-one-line": (json.dumps(line), "jsonl", "jsonl (one JSON object per line with 'layers')"),
    }


@pytest.mark.parametrize("layout", list(_layouts()))
def test_auto_detects_the_layout_and_records_it(tmp_path, layout):
    text, kind, detected = _layouts()[layout]
    p = tmp_path / "ann.txt"
    p.write_text(text)
    parsed = load_source(f"auto:{p}")
    assert parsed.source == f"{kind}:{p.resolve()}"
    assert parsed.detected == detected
    explicit = load_source(f"{kind}:{p}")
    assert explicit.detected is None
    assert [i.image_id for i in parsed.images] == [i.image_id for i in explicit.images]
    assert len(parsed.rejects) == len(explicit.rejects)


def test_auto_rebuild_is_the_same_version_as_the_explicit_kind(tmp_path):
    write_images(tmp_path / "img", ["c.png"])
    ann = write_json(tmp_path / "a.json", _amodal_coco_doc())
    auto = rebuild(f"auto:{ann}", tmp_path / "img", "ac", tmp_path / "lake", RebuildConfig.for_tests())
    explicit = rebuild(f"amodal-coco:{ann}", tmp_path / "img", "ac", tmp_path / "lake", RebuildConfig.for_tests())
    assert auto["version"] == explicit["version"] and auto["source"] == f"amodal-coco:{ann.resolve()}"
    assert auto["counts"]["region"]["accepted"] == 3


@pytest.mark.parametrize("doc,needle", [
    ({"images": [], "annotations": [{"id": 1, "a_segm": []}, {"id": 2, "visible_mask": None}]}, "ambiguous layout"),
    ({"images": [], "annotations": [{"id": 1, "regions": []}, {"id": 2, "inmodal_seg": []}]}, "ambiguous layout"),
    ({"images": [], "annotations": [{"id": 1, "segmentation": [rect(1, 1, 9, 9)]}]}, "cannot detect the layout"),
    ({"images": [], "annotations": []}, "cannot detect the layout"),
    ([1, 2], "cannot detect the layout"),
])
def test_auto_refuses_ambiguous_or_unknown_layouts_in_one_line(tmp_path, doc, needle):
    p = write_json(tmp_path / "a.json", doc)
    with pytest.raises(SourceError) as e:
        load_source(f"auto:{p}")
    msg = str(e.value)
    assert needle in msg and str(p) in msg and "\n" not in msg
    if needle.startswith("cannot"):  # it says what it looked for
        assert all(k in msg for k in ("regions", "a_segm", "inmodal_seg", "visible_mask", "layers"))


@pytest.mark.parametrize("band,accepted", [(2, {"one", "clean"}), (4, {"one", "four", "clean"})])
def test_visible_boundary_band_clips_and_counts(tmp_path, band, accepted):
    write_images(tmp_path / "img", ["b.png"])
    layers = [
        # amodal 20x20; visible one column wider on the right: 20 pixels clipped.
        {"id": "one", "label": "cup", "segmentation": rect(10, 10, 30, 30), "visible": _rle(_box(10, 10, 31, 30))},
        # amodal 10x20; visible four columns wider: columns 3 and 4 lie beyond a 2-pixel band.
        {"id": "four", "label": "cup", "segmentation": rect(40, 10, 50, 30), "visible": _rle(_box(40, 10, 54, 30))},
        {"id": "clean", "label": "cup", "segmentation": rect(2, 35, 12, 45), "visible": _rle(_box(2, 35, 7, 45))},
    ]
    src = tmp_path / "b.jsonl"
    src.write_text(json.dumps({"image_id": "b", "file_name": "b.png", "layers": layers}) + "\n")
    # The default band is 2 pixels; 4 comes from the config.
    cfg = RebuildConfig.for_tests() if band == 2 else RebuildConfig(shard_size=4, workers=1, visible_band_px=band)
    m = rebuild(f"jsonl:{src}", tmp_path / "img", "b", tmp_path / "lake", cfg)
    rows = {r["region_id"]: r for r in _layers(tmp_path / "lake", "b", m["version"])}
    assert set(rows) == accepted
    assert rows["one"]["visible_clipped_pixels"] == 20 and rows["one"]["visible_area"] == 400
    assert rows["one"]["visible_rle"] == rows["one"]["rle"] and rows["one"]["occlusion_rate"] == 0.0
    assert rows["clean"]["visible_clipped_pixels"] == 0 and rows["clean"]["visible_area"] == 50
    rejects = _table(tmp_path / "lake", "b", m["version"], "rejects")
    if band == 2:
        assert [(r["record_key"], r["reason"]) for r in rejects] == [("four", "visible_outside_amodal")]
        assert rejects[0]["detail"].startswith("40 visible pixels lie more than 2 px outside")
    else:
        assert rejects == [] and rows["four"]["visible_clipped_pixels"] == 80 and rows["four"]["visible_area"] == 200


def test_visible_band_is_a_square_structuring_element():
    from smartmask.validate import visible_beyond_band

    amodal = _box(10, 10, 20, 20)
    diagonal = amodal.copy()
    diagonal[21, 21] = 1  # 2 pixels from the corner (19, 19) in x and in y: Chebyshev 2, Euclidean 2.8
    assert visible_beyond_band(_rle(amodal), _rle(diagonal), 2) == 0
    assert visible_beyond_band(_rle(amodal), _rle(diagonal), 1) == 1
    far = amodal.copy()
    far[15, 22:25] = 1  # 3, 4 and 5 pixels to the right of column 19
    assert visible_beyond_band(_rle(amodal), _rle(far), 2) == 3
    assert visible_beyond_band(_rle(amodal), _rle(far), 3) == 2
    assert visible_beyond_band(_rle(amodal), _rle(amodal), 0) == 0


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_image_size_is_read_upright_after_exif_orientation(tmp_path, fmt):
    img = tmp_path / "img"
    img.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 wide x 48 high, displayed rotated by 90 degrees: 48 x 64
    for name in ("upright.x", "stored.x"):
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(img / name, format=fmt, exif=exif.tobytes())
    region = {"segmentation": rect(5, 5, 40, 60), "name": "vase", "order": 1}
    doc = {"images": [{"id": 1, "file_name": "upright.x", "width": H, "height": W},
                      {"id": 2, "file_name": "stored.x", "width": W, "height": H}],
           "annotations": [{"id": 1, "image_id": 1, "regions": [region]},
                           {"id": 2, "image_id": 2, "regions": [{**region, "segmentation": rect(5, 5, 60, 40)}]}]}
    m = rebuild(f"cocoa:{write_json(tmp_path / 'a.json', doc)}", img, "e", tmp_path / "lake", RebuildConfig.for_tests())
    images = _table(tmp_path / "lake", "e", m["version"], "images")
    assert [(r["image_id"], r["width"], r["height"]) for r in images] == [("1", H, W)]
    (layer,) = _layers(tmp_path / "lake", "e", m["version"])
    assert (layer["width"], layer["height"], layer["area"]) == (H, W, 35 * 55)
    rejects = [r for r in _table(tmp_path / "lake", "e", m["version"], "rejects") if r["record_kind"] == "image"]
    assert [(r["record_key"], r["reason"]) for r in rejects] == [("2", "image_size_mismatch")]
    assert "48x64 upright" in rejects[0]["detail"]
