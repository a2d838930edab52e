"""The bad-input corpus: every defect lands in `rejects` with its own reason; in = accepted + rejected."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pyarrow.parquet as pq
from conftest import rect, write_images, write_json
from PIL import Image

from smartmask import masks
from smartmask.config import RebuildConfig
from smartmask.lake.paths import dataset_dir
from smartmask.rebuild import rebuild

H, W = 48, 64
GOOD = {"segmentation": rect(10, 10, 30, 30), "name": "person", "order": 1}


def _cocoa_corpus(tmp_path):
    img = tmp_path / "img"
    names = [f"{i}.png" for i in range(1, 25)]
    write_images(img, names)
    (img / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(img / "huge.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "outside.png")
    far = masks.from_polygons([rect(40, 30, 60, 45)], H, W)
    images = [
        {"id": 1, "file_name": "1.png", "width": W, "height": H},  # the good one
        {"id": 2, "file_name": "missing.png"},  # image_missing
        {"id": 3, "file_name": "corrupt.png"},  # image_unreadable
        {"id": 4, "file_name": "4.png", "width": 100, "height": H},  # image_size_mismatch
        {"id": 4, "file_name": "5.png"},  # duplicate_image_id
        {"id": 6},  # missing_file_name
        {"id": 7, "file_name": "../outside.png"},  # path_outside_root
        {"file_name": "8.png"},  # malformed_record (no id)
        {"id": 9, "file_name": "huge.png"},  # image_too_large
    ] + [{"id": i, "file_name": f"{i}.png"} for i in range(10, 25)]
    region_defects = {
        10: ({"segmentation": rect(1, 1, 9, 9), "name": "   "}, "empty_label"),
        11: ({"segmentation": rect(1, 1, 9, 9), "name": 42}, "invalid_label"),
        12: ({"segmentation": [1, 1, 5, 5], "name": "cup"}, "polygon_degenerate"),
        13: ({"segmentation": rect(10, 10, 500, 20), "name": "cup"}, "polygon_out_of_bounds"),
        14: ({"segmentation": [1, 1, float("nan"), 5, 9, 9], "name": "cup"}, "non_finite_coordinates"),
        15: ({"segmentation": "abc", "name": "cup"}, "malformed_segmentation"),
        16: ({"name": "cup"}, "missing_segmentation"),
        17: ({"segmentation": rect(1, 1, 9, 9), "name": "cup", "visible_mask": {"size": [10, 10], "counts": "0"}},
             "rle_size_mismatch"),
        18: ({"segmentation": {"size": [H, W], "counts": "zz~~"}, "name": "cup"}, "rle_invalid"),
        19: ({"segmentation": {"size": [H, W], "counts": [H * W]}, "name": "cup"}, "empty_mask"),
        20: ({"segmentation": rect(1, 1, 9, 9), "name": "cup", "visible_mask": far}, "visible_outside_amodal"),
        21: ({"segmentation": rect(1, 1, 9, 9), "name": "cup", "order": "first"}, "invalid_order"),
        22: ({"segmentation": [1, 1, 5, 5, 9, 9, 1], "name": "cup"}, "polygon_degenerate"),
        23: ("not a region", "malformed_record"),
        24: ({"segmentation": {"size": [H, W], "counts": [5, 10]}, "name": "cup"}, "rle_invalid"),
    }
    anns = [{"id": 100, "image_id": 1, "regions": [GOOD]}]
    for iid in (2, 3, 4, 6, 7, 9):
        anns.append({"id": 100 + iid, "image_id": iid, "regions": [GOOD]})
    for iid, (region, _) in region_defects.items():
        # Images 10..21 keep a good region beside the bad one; 22..24 have only the bad one (no_valid_layers).
        anns.append({"id": 100 + iid, "image_id": iid, "regions": [region] + ([GOOD] if iid < 22 else [])})
    anns += [
        {"id": 900, "image_id": 999, "regions": [GOOD]},  # unknown_image_id
        {"id": 901, "image_id": 1, "regions": [GOOD]},  # duplicate_annotation
        {"id": 902, "image_id": 10},  # malformed_record (no regions)
    ]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns}))  # NaN written as a bare NaN token
    return ann, img, region_defects


def _rejects(lake, name, version):
    return pq.read_table(dataset_dir(lake, name, version) / "rejects").to_pylist()


def test_cocoa_defect_corpus(tmp_path):
    ann, img, region_defects = _cocoa_corpus(tmp_path)
    cfg = RebuildConfig(shard_size=5, workers=1, max_image_pixels=10_000)
    m = rebuild(f"cocoa:{ann}", img, "bad", tmp_path / "lake", cfg)
    rej = _rejects(tmp_path / "lake", "bad", m["version"])
    by_key = defaultdict(set)
    for r in rej:
        by_key[(r["record_kind"], r["record_key"])].add(r["reason"])
    expected_images = {"2": "image_missing", "3": "image_unreadable", "4": "image_size_mismatch",
                       "6": "missing_file_name", "7": "path_outside_root", "9": "image_too_large",
                       "22": "no_valid_layers", "23": "no_valid_layers", "24": "no_valid_layers"}
    for iid, reason in expected_images.items():
        assert reason in by_key[("image", iid)], iid
    assert Counter(r["reason"] for r in rej if r["record_kind"] == "image")["duplicate_image_id"] == 1
    assert Counter(r["reason"] for r in rej if r["record_kind"] == "image")["malformed_record"] == 1
    for iid, (_, reason) in region_defects.items():
        assert by_key[("region", f"{100 + iid}:0")] == {reason}, iid
    assert by_key[("image", "4")] == {"image_size_mismatch", "duplicate_image_id"}  # two records, same id
    assert by_key[("annotation", "900")] == {"unknown_image_id"}
    assert by_key[("annotation", "901")] == {"duplicate_annotation"}
    assert by_key[("annotation", "902")] == {"malformed_record"}
    # Regions of rejected images are rejected too, each saying why.
    assert by_key[("region", "102:0")] == {"image_rejected"}
    reasons = {r["reason"] for r in rej}
    assert len(reasons - {"image_rejected"}) >= 15
    assert all(r["detail"] and "\n" not in r["detail"] for r in rej)
    for kind, c in m["counts"].items():
        assert c["in"] == c["accepted"] + c["rejected"], kind
    assert m["counts"]["image"] == {"in": 24, "accepted": 13, "rejected": 11}
    layers = pq.read_table(dataset_dir(tmp_path / "lake", "bad", m["version"]) / "layers").to_pylist()
    assert m["counts"]["region"]["accepted"] == len(layers) == 13  # image 1 and the good region of 10..21
    assert m["counts"]["region"]["in"] == len(layers) + sum(r["record_kind"] == "region" for r in rej)


def test_jsonl_and_kins_record_defects(tmp_path):
    write_images(tmp_path / "img", ["a.png", "b.png"])
    good = {"id": "a0", "label": "cup", "segmentation": rect(5, 5, 20, 20)}
    lines = [json.dumps({"image_id": "a", "file_name": "a.png", "layers": [good, dict(good)]}),  # dup layer id
             "{this is not json",
             json.dumps(["a", "list"]),
             json.dumps({"image_id": "a", "file_name": "a.png", "layers": [good]})]  # duplicate image id
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(lines) + "\n")
    m = rebuild(f"jsonl:{src}", tmp_path / "img", "j", tmp_path / "lake", RebuildConfig.for_tests())
    reasons = Counter(r["reason"] for r in _rejects(tmp_path / "lake", "j", m["version"]))
    assert reasons == {"duplicate_region_id": 1, "malformed_json": 1, "malformed_record": 1,
                       "duplicate_image_id": 2}  # the image line and its one layer
    assert m["counts"]["image"] == {"in": 4, "accepted": 1, "rejected": 3}
    assert m["counts"]["region"] == {"in": 3, "accepted": 1, "rejected": 2}

    kins = {"images": [{"id": 1, "file_name": "b.png"}], "categories": [{"id": 1, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [rect(1, 1, 9, 9)]},
                            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [rect(1, 1, 9, 9)]},
                            {"id": 2, "image_id": 1, "category_id": 77, "segmentation": [rect(1, 1, 9, 9)]},
                            {"id": 3, "image_id": 5, "category_id": 1, "segmentation": [rect(1, 1, 9, 9)]}]}
    m = rebuild(f"kins:{write_json(tmp_path / 'k.json', kins)}", tmp_path / "img", "k", tmp_path / "lake",
                RebuildConfig.for_tests())
    reasons = Counter(r["reason"] for r in _rejects(tmp_path / "lake", "k", m["version"]))
    assert reasons == {"duplicate_region_id": 1, "unknown_category": 1, "unknown_image_id": 1}
    assert m["counts"]["region"] == {"in": 4, "accepted": 1, "rejected": 3}
