"""Adapters: public COCOA (order, depth_constraint, messy names), KINS original and 2020, our JSONL."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import rect, write_images, write_json

from smartmask import masks
from smartmask.config import RebuildConfig
from smartmask.lake.paths import dataset_dir
from smartmask.rebuild import rebuild
from smartmask.sources import SourceError, load_source


def _layers(lake, name, version):
    t = pq.read_table(dataset_dir(lake, name, version) / "layers").to_pylist()
    return sorted(t, key=lambda r: (r["image_id"], r["layer"]))


def test_public_cocoa_schema_ingests_in_order_back_to_front(tmp_path):
    write_images(tmp_path / "img", ["COCO_train2014_000000000009.jpg"], w=64, h=48)
    vis = masks.encode((lambda m: (m.__setitem__((slice(30, 40), slice(30, 50)), 0), m)[1])(
        masks.decode(masks.from_polygons([rect(20, 20, 50, 40)], 48, 64))))
    inv = masks.from_polygons([rect(30, 30, 50, 40)], 48, 64)
    # Regions deliberately out of order; names with trailing spaces, capitals and a typo, as in COCOA.
    regions = [
        {"segmentation": rect(0, 0, 64, 48), "name": "wall ", "area": 3072.0, "isStuff": 1, "occlude_rate": 0.4,
         "order": 3, "visible_mask": {"size": [48, 64], "counts": "0"}, "invisible_mask": inv},
        {"segmentation": rect(30, 30, 60, 45), "name": "Dougnut ", "area": 450.0, "isStuff": 0,
         "occlude_rate": 0.0, "order": 1},
        {"segmentation": rect(20, 20, 50, 40), "name": "dining  table", "area": 600.0, "isStuff": 0,
         "occlude_rate": 0.33, "order": 2, "visible_mask": vis, "invisible_mask": inv},
    ]
    wall_vis = masks.encode(1 - masks.decode(masks.from_polygons([rect(20, 20, 60, 45)], 48, 64)))
    regions[0]["visible_mask"] = wall_vis
    doc = {"images": [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 64, "height": 48}],
           "annotations": [{"author": "x", "url": "", "id": 1, "image_id": 9, "size": 3, "regions": regions,
                            "depth_constraint": "2-1,3-1,3-2"}]}
    ann = write_json(tmp_path / "COCO_amodal_val2014.json", doc)
    m = rebuild(f"cocoa:{ann}", tmp_path / "img", "cocoa", tmp_path / "lake", RebuildConfig.for_tests())
    assert m["counts"]["region"] == {"in": 3, "accepted": 3, "rejected": 0}
    rows = _layers(tmp_path / "lake", "cocoa", m["version"])
    assert [r["label"] for r in rows] == ["wall", "dining table", "dougnut"]  # order 3, 2, 1
    assert [r["label_raw"] for r in rows] == ["wall ", "dining  table", "Dougnut "]
    assert {r["order_source"] for r in rows} == {"source:order"}
    assert rows[2]["visible_rle"] is None and rows[2]["occlusion_rate"] == 0.0  # unoccluded: no visible_mask
    assert rows[1]["visible_area"] == 600 - 200 and rows[1]["occlusion_rate"] == pytest.approx(1 / 3)


def test_cocoa_without_order_uses_depth_constraint(tmp_path):
    write_images(tmp_path / "img", ["a.png"])
    regions = [{"segmentation": rect(10, 10, 40, 40), "name": "cat"},
               {"segmentation": rect(20, 20, 50, 45), "name": "dog"},
               {"segmentation": rect(0, 0, 64, 48), "name": "floor", "isStuff": 1}]
    doc = {"images": [{"id": 1, "file_name": "a.png"}],
           "annotations": [{"id": 1, "image_id": 1, "regions": regions, "depth_constraint": "2-1,1-3,2-3"}]}
    m = rebuild(f"cocoa:{write_json(tmp_path / 'a.json', doc)}", tmp_path / "img", "c", tmp_path / "lake",
                RebuildConfig.for_tests())
    rows = _layers(tmp_path / "lake", "c", m["version"])
    assert [r["label"] for r in rows] == ["floor", "cat", "dog"]
    assert {r["order_source"] for r in rows} == {"source:depth_constraint"}


def _kins_doc(annotations):
    return {"images": [{"id": 5, "file_name": "k.png", "width": 64, "height": 48}],
            "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "pedestrian"}, {"id": 3, "name": "tram"}],
            "annotations": annotations}


def test_kins2020_order_from_ico_id_within_cluster(tmp_path):
    write_images(tmp_path / "img", ["k.png"])
    # Cluster 7: tram (ico 3, back), car (ico 2), pedestrian (ico 1, front). Listed front-first to make
    # sure the order comes from ico_id, not from list position or area.
    anns = [
        {"id": 11, "image_id": 5, "category_id": 2, "a_segm": [rect(30, 20, 40, 46)], "i_segm": [rect(30, 20, 40, 46)],
         "oco_id": 7, "ico_id": 1},
        {"id": 12, "image_id": 5, "category_id": 1, "a_segm": [rect(10, 25, 50, 45)], "i_segm": [rect(10, 25, 30, 45)],
         "oco_id": 7, "ico_id": 2},
        {"id": 13, "image_id": 5, "category_id": 3, "a_segm": [rect(0, 5, 64, 40)], "i_segm": [rect(0, 5, 64, 25)],
         "oco_id": 7, "ico_id": 3},
    ]
    m = rebuild(f"kins:{write_json(tmp_path / 'update_train_2020.json', _kins_doc(anns))}", tmp_path / "img", "k",
                tmp_path / "lake", RebuildConfig.for_tests())
    rows = _layers(tmp_path / "lake", "k", m["version"])
    assert [r["label"] for r in rows] == ["tram", "car", "pedestrian"]
    assert {r["order_source"] for r in rows} == {"source:ico_id"}
    assert [r["region_id"] for r in rows] == ["13", "12", "11"]


def test_kins_original_order_inferred_from_inmodal(tmp_path):
    write_images(tmp_path / "img", ["k.png"])
    anns = [  # car in front of the tram: the car's visible mask covers their overlap
        {"id": 1, "image_id": 5, "category_id": 3, "segmentation": [rect(0, 5, 64, 40)],
         "inmodal_seg": [rect(0, 5, 64, 25)], "bbox": [0, 5, 64, 35], "area": 2240},
        {"id": 2, "image_id": 5, "category_id": 1, "segmentation": [rect(10, 25, 50, 45)],
         "inmodal_seg": [rect(10, 25, 50, 45)], "bbox": [10, 25, 40, 20], "area": 800},
    ]
    m = rebuild(f"kins:{write_json(tmp_path / 'instances_train.json', _kins_doc(anns))}", tmp_path / "img", "k",
                tmp_path / "lake", RebuildConfig.for_tests())
    rows = _layers(tmp_path / "lake", "k", m["version"])
    assert [r["label"] for r in rows] == ["tram", "car"]
    assert {r["order_source"] for r in rows} == {"inferred:occlusion"}


def test_jsonl_with_z_and_rle_forms(tmp_path):
    write_images(tmp_path / "img", ["j.png"])
    m0 = masks.decode(masks.from_polygons([rect(5, 5, 30, 30)], 48, 64))
    flat = m0.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 1
        else:
            n += 1
    runs.append(n)
    line = {"image_id": "j", "file_name": "j.png", "layers": [
        {"id": "front", "label": "Lamp", "segmentation": {"size": [48, 64], "counts": runs}, "z": 2},
        {"id": "back", "label": "sky", "segmentation": masks.from_polygons([rect(0, 0, 64, 48)], 48, 64),
         "is_stuff": True, "z": 0},
        {"id": "mid", "label": "tree", "segmentation": [rect(20, 10, 40, 40), rect(25, 40, 30, 47)], "z": 1},
    ]}
    src = tmp_path / "s.jsonl"
    src.write_text("\n" + json.dumps(line) + "\n\n")
    m = rebuild(f"jsonl:{src}", tmp_path / "img", "j", tmp_path / "lake", RebuildConfig.for_tests())
    rows = _layers(tmp_path / "lake", "j", m["version"])
    assert [r["region_id"] for r in rows] == ["back", "mid", "front"]
    assert rows[2]["area"] == int(m0.sum())
    assert rows[1]["area"] == 20 * 30 + 5 * 7  # two polygons merged into one mask


@pytest.mark.parametrize("content,needle", [(None, "not found"), ("{not json", "not valid JSON"),
                                            ('{"foo": 1}', "not a COCOA file"), ("[1, 2]", "not a COCOA file")])
def test_unusable_source_file_raises_one_line(tmp_path, content, needle):
    p = tmp_path / "a.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(SourceError) as e:
        load_source(f"cocoa:{p}")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_source_kind(tmp_path):
    with pytest.raises(SourceError, match="unknown source kind"):
        load_source(f"lvis:{tmp_path}")
