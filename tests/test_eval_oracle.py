"""The oracle baseline (class mean shapes fitted to a box) and placement plausibility by the world's support rules."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smartmask import masks
from smartmask.boxes import box_mask, mask_box
from smartmask.evaluation.oracle import ClassShapes
from smartmask.evaluation.plausibility import label_map, placement_check, plausibility_rate
from smartmask.inference.layout import Region, SceneLayout
from smartmask.lake.paths import dataset_dir
from smartmask.masks import mask_iou

S = 64  # hand-built scenes are S × S


def _band(r0: int, r1: int, c0: int = 0, c1: int = S) -> np.ndarray:
    m = np.zeros((S, S), bool)
    m[r0:r1, c0:c1] = True
    return m


def _scene(*regions: tuple[str, np.ndarray, bool]) -> SceneLayout:
    return SceneLayout(S, S, tuple(Region(lab, lab, m, stuff, 1.0) for lab, m, stuff in regions), "test")


@pytest.fixture(scope="module")
def outdoor() -> SceneLayout:
    # The sky's amodal extent continues behind the grass, as the world draws it: painting order decides.
    return _scene(("sky", _band(0, 34), True), ("grass", _band(30, S), True))


@pytest.fixture(scope="module")
def indoor() -> SceneLayout:
    return _scene(("wall", _band(0, 32), True), ("floor", _band(32, S), True), ("table", _band(36, 50, 20, 44), False))


def _person(bottom: int, left: int = 10) -> np.ndarray:
    """A 7-wide, 18-tall figure with two legs, its lowest row `bottom`."""
    m = _band(bottom - 17, bottom - 5, left, left + 7)
    m |= _band(bottom - 5, bottom + 1, left + 1, left + 3) | _band(bottom - 5, bottom + 1, left + 4, left + 6)
    return m


def test_label_map_paints_back_to_front(indoor):
    labels, index = label_map(indoor)
    assert labels == ("wall", "floor", "table") and index.dtype == np.int16
    assert labels[index[40, 30]] == "table" and labels[index[40, 5]] == "floor" and labels[index[10, 30]] == "wall"
    empty = SceneLayout(S, S, (Region("sky", "sky", _band(0, 10), True, 1.0),), "test")
    assert label_map(empty)[1][20, 20] == -1


def test_a_person_stands_on_grass_not_in_the_sky(outdoor):
    # Between the legs the lowest mask pixel is the body's, above the gap: those columns see grass too.
    on_grass = placement_check(_person(bottom=45), "person", outdoor)
    assert on_grass.plausible and on_grass.relation == "on" and on_grass.support_share == 1.0
    floating = placement_check(_person(bottom=20), "person", outdoor)
    assert not floating.plausible and floating.relation == "on" and floating.support_share == 0.0


def test_a_bird_flies_in_the_sky_not_in_the_grass(outdoor):
    assert placement_check(_band(5, 9, 30, 38), "bird", outdoor).plausible
    v = placement_check(_band(45, 49, 30, 38), "bird", outdoor)
    assert v.relation == "in" and not v.plausible and v.support_share == 0.0
    # Half-and-half is the boundary: exactly 50 % of the pixels on sky is still plausible.
    half = placement_check(_band(26, 34, 30, 38), "bird", outdoor)  # grass visible from row 30
    assert half.support_share == 0.5 and half.plausible


def test_a_lamp_stands_on_a_table_not_on_the_floor(indoor):
    assert placement_check(_band(26, 36, 28, 34), "lamp", indoor).plausible  # lowest row 35, table from row 36
    assert not placement_check(_band(45, 56, 5, 10), "lamp", indoor).plausible  # on the floor
    # A mask stopping one pixel short of the table top is forgiven (reach 2 px on 64 rows), ten pixels are not.
    assert placement_check(_band(25, 35, 28, 34), "lamp", indoor).plausible
    assert not placement_check(_band(16, 26, 28, 34), "lamp", indoor).plausible
    # And a table stands on the floor, whatever else is drawn in the layout.
    assert placement_check(_band(40, 52, 2, 16), "table", indoor).plausible


def test_only_the_footing_touches_the_support(outdoor):
    # A tree: a trunk on the grass under a canopy much wider than it, whose underside hangs in front of the sky.
    tree = _band(5, 25, 20, 44) | _band(25, 40, 30, 34)
    v = placement_check(tree, "tree", outdoor)
    assert v.plausible and v.support_share == 1.0 and "4 contact columns" in v.reason
    assert not placement_check(_band(5, 25, 20, 44) | _band(25, 27, 30, 34), "tree", outdoor).plausible


def test_a_bird_in_front_of_a_cloud_is_in_the_sky(outdoor):
    cloudy = SceneLayout(S, S, (*outdoor.regions, Region("cloud", "cloud", _band(4, 12, 20, 50), False, 1.0)), "t")
    assert placement_check(_band(5, 9, 30, 38), "bird", cloudy).support_share == 1.0
    # A cloud is no support of a person: standing on one is still floating.
    assert not placement_check(_band(0, 11, 30, 34), "person", cloudy).plausible


def test_the_bottom_edge_is_unknown_support(outdoor):
    # Cut by the image's bottom edge everywhere: judged by overlap with its ground supports instead.
    cut = _band(50, S, 10, 20)
    v = placement_check(cut, "person", outdoor)
    assert v.relation == "in" and v.plausible and "bottom edge" in v.reason
    # The same cut in the sky is not plausible (a tall sky scene, so the mask overlaps no grass).
    sky_only = _scene(("sky", np.ones((S, S), bool), True))
    assert not placement_check(cut, "person", sky_only).plausible
    # Partly cut: the footing columns on the edge are left out, the others (lowest row 61) decide.
    partly = _band(50, S, 10, 14) | _band(40, 62, 14, 24)
    v = placement_check(partly, "person", outdoor)
    assert v.relation == "on" and v.plausible and "10 contact columns" in v.reason and "4 at the bottom" in v.reason
    v = placement_check(partly, "person", sky_only)
    assert v.relation == "on" and v.support_share == 0.0


def test_no_rule_or_no_mask_gives_no_verdict(outdoor):
    assert placement_check(_person(45), "unicorn", outdoor) is None
    assert placement_check(np.zeros((S, S), bool), "person", outdoor) is None
    with pytest.raises(ValueError, match="layout"):
        placement_check(np.zeros((S, S + 1), bool), "person", outdoor)


def test_plausibility_rate(outdoor):
    good = placement_check(_person(45), "person", outdoor)
    bad = placement_check(_person(20), "person", outdoor)
    assert plausibility_rate([good, bad, None, good]) == pytest.approx(2 / 3)
    assert plausibility_rate([None]) is None and plausibility_rate([]) is None


# ----------------------------------------------------------------------------------------------------- oracle


@pytest.fixture(scope="module")
def lake(synthetic_lake):
    return synthetic_lake["lake"], synthetic_lake["version"]


@pytest.fixture(scope="module")
def shapes(lake) -> ClassShapes:
    return ClassShapes.fit(lake[0], "synth", lake[1])


def _thing_layers(lake, split: str) -> list[dict]:
    d = dataset_dir(lake[0], "synth", lake[1])
    ids = {r["image_id"] for r in pq.read_table(d / "images", columns=["image_id", "split"]).to_pylist()
           if r["split"] == split}
    rows = pq.read_table(d / "layers", columns=["image_id", "label", "is_stuff", "height", "width", "rle"]).to_pylist()
    return [r for r in rows if r["image_id"] in ids and not r["is_stuff"]]


def test_the_worlds_own_placements_are_plausible(lake):
    """Every ground-truth thing of the synthetic lake, judged in the layout of the layers behind it, obeys the
    rules; the same masks moved up by a third of the image mostly do not."""
    d = dataset_dir(lake[0], "synth", lake[1])
    rows = pq.read_table(d / "layers", columns=["image_id", "layer", "label", "is_stuff", "height", "width",
                                                "rle"]).sort_by([("image_id", "ascending"), ("layer", "ascending")])
    by_image: dict[str, list[dict]] = {}
    for r in rows.to_pylist():
        by_image.setdefault(r["image_id"], []).append(r)
    truth, moved = [], []
    for layers in by_image.values():
        H, W = layers[0]["height"], layers[0]["width"]
        regions = [Region(r["label"], r["label"], masks.decode({"size": [H, W], "counts": r["rle"]}).astype(bool),
                          r["is_stuff"], 1.0) for r in layers]
        for k, (r, region) in enumerate(zip(layers, regions, strict=True)):
            if r["is_stuff"]:
                continue
            scene = SceneLayout(H, W, tuple(regions[:k]), "test")
            truth.append(placement_check(region.mask_HW, r["label"], scene))
            up = np.zeros_like(region.mask_HW)
            up[: H - H // 3] = region.mask_HW[H // 3:]
            moved.append(placement_check(up, r["label"], scene))
    rate, moved_rate = plausibility_rate(truth), plausibility_rate(moved)
    print(f"\nground truth plausible: {rate:.3f} of {len(truth)}; moved up: {moved_rate:.3f}")
    assert len(truth) > 100 and rate >= 0.97 and moved_rate < 0.35


def test_fit_has_a_shape_for_every_thing_class_of_the_split(lake, shapes):
    counts = Counter(r["label"] for r in _thing_layers(lake, "train"))
    assert shapes.counts == dict(counts) and shapes.source == f"synth@{lake[1]}:train"
    assert not {"sky", "grass", "wall", "floor", "water"} & set(shapes.shapes)
    for s in shapes.shapes.values():
        assert s.shape == (64, 64) and s.dtype == np.float32 and s.min() >= 0.0 and s.max() <= 1.0
    # A tight box is touched by the mask on every side: the mean shape reaches each edge of the normalised box.
    person = shapes.shapes["person"]
    assert min(person[0].max(), person[-1].max(), person[:, 0].max(), person[:, -1].max()) > 0.0
    assert person[32, 32] > person[0, 0]  # a person is solid in the middle, empty at the corners


def test_fit_is_deterministic_and_round_trips(lake, shapes, tmp_path):
    again = ClassShapes.fit(lake[0], "synth", lake[1])
    assert again.content_hash() == shapes.content_hash()
    small = ClassShapes.fit(lake[0], "synth", lake[1], max_per_class=3, size=16, seed=1)
    assert max(small.counts.values()) == 3 and small.content_hash() != shapes.content_hash()
    assert small.content_hash() == ClassShapes.fit(lake[0], "synth", lake[1], max_per_class=3, size=16,
                                                   seed=1).content_hash()
    pq.write_table(shapes.to_table(), tmp_path / "shapes.parquet")
    back = ClassShapes.from_table(pq.read_table(tmp_path / "shapes.parquet"))
    assert back.content_hash() == shapes.content_hash() and back.source == shapes.source
    assert back.counts == shapes.counts and all(np.array_equal(back.shapes[k], shapes.shapes[k]) for k in back.labels)
    t = shapes.to_table()
    t = t.set_column(t.schema.get_field_index("size"), "size", pa.array([3] * t.num_rows, pa.int32()))
    with pytest.raises(ValueError, match="expected 9"):
        ClassShapes.from_table(t)


def test_the_oracle_beats_the_box_on_held_out_instances(lake, shapes):
    oracle, box = [], []
    for r in _thing_layers(lake, "val"):
        H, W = r["height"], r["width"]
        gt = masks.decode({"size": [H, W], "counts": r["rle"]}).astype(bool)
        b = mask_box(gt)
        fitted = shapes.fit_to_box(r["label"], b, H, W)
        if fitted is None:  # a class the train split never showed: no oracle for it
            continue
        oracle.append(mask_iou(fitted, gt))
        box.append(mask_iou(box_mask(b, H, W), gt))
    print(f"\nval thing instances: {len(oracle)}  oracle mean IoU {np.mean(oracle):.3f}  box {np.mean(box):.3f}")
    assert len(oracle) >= 5
    assert np.mean(oracle) > np.mean(box) + 0.02


def test_fit_to_box_clips_after_fitting(shapes):
    H, W = 50, 60
    part = shapes.fit_to_box("person", (-10.0, -5.0, 30.0, 40.0), H, W)
    assert part.shape == (H, W) and part.dtype == bool and part.any()
    # The same box fitted whole on a canvas that holds it, then cut to the image: identical.
    whole = shapes.fit_to_box("person", (0.0, 0.0, 40.0, 45.0), H + 5, W + 10)
    assert np.array_equal(part[:40, :30], whole[5:45, 10:40]) and not part[40:].any() and not part[:, 30:].any()
    # Fractional coordinates take every pixel the box touches; the result stays inside that extent.
    frac = shapes.fit_to_box("person", (10.5, 3.2, 20.1, 30.9), H, W)
    x0, y0, x1, y1 = mask_box(frac)
    assert x0 >= 10 and y0 >= 3 and x1 <= 21 and y1 <= 31 and (x1 - x0, y1 - y0) > (5, 20)
    assert not shapes.fit_to_box("person", (5.0, 5.0, 5.0, 30.0), H, W).any()  # zero width: empty
    assert not shapes.fit_to_box("person", (70.0, 5.0, 90.0, 30.0), H, W).any()  # wholly outside: empty
    assert shapes.fit_to_box("unicorn", (0.0, 0.0, 10.0, 10.0), H, W) is None
    lo = shapes.fit_to_box("person", (0.0, 0.0, 40.0, 45.0), H, W, threshold=0.2)
    hi = shapes.fit_to_box("person", (0.0, 0.0, 40.0, 45.0), H, W, threshold=0.8)
    assert (hi <= lo).all() and lo.sum() > hi.sum()  # a lower threshold only adds pixels
