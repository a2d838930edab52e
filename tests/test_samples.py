"""Training samples (Eq. 1) and guidance (Eq. 5): checked against the slow reference path (pycocotools decode +
`vocab.f_layer` + the same nearest grid) on a small rebuilt synthetic dataset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from smartmask import masks
from smartmask.conditioning.grid import foreground_runs, resize_nearest
from smartmask.conditioning.guidance import (
    GUIDANCE_KINDS,
    apply_guidance,
    blob_from_mask,
    box_from_mask,
    box_guidance,
    box_on_grid,
    guidance_from_mask,
    mask_box,
    point_guidance,
    scribble_guidance,
)
from smartmask.conditioning.vocabulary import f_layer
from smartmask.lake.paths import dataset_dir
from smartmask.training.samples import LayerIndex, SampleConfig, TrainingSampler

REPO = Path(__file__).resolve().parents[1]
ONLY = {kind: tuple(1.0 if k == kind else 0.0 for k in GUIDANCE_KINDS) for kind in GUIDANCE_KINDS}


@pytest.fixture(scope="module")
def ds(synthetic_lake):
    lake, version = synthetic_lake["lake"], synthetic_lake["version"]
    d = dataset_dir(lake, "synth", version)
    tables = {t: pq.read_table(d / t) for t in ("images", "layers", "captions", "vocabulary")}
    return {"lake": lake, "version": version, **tables}


@pytest.fixture(scope="module")
def index(ds):
    return LayerIndex.from_lake(ds["lake"], "synth", ds["version"], split=None)


def layer_rows(ds) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in ds["layers"].to_pylist():
        out.setdefault(r["image_id"], []).append(r)
    return {k: sorted(v, key=lambda r: r["layer"]) for k, v in out.items()}


def vocab_rgb(ds) -> dict[int, np.ndarray]:
    return {r["label_id"]: np.array([r["r"], r["g"], r["b"]], np.float32) / 255
            for r in ds["vocabulary"].to_pylist()}


def reference(rows: list[dict], k: int, R: int) -> tuple[np.ndarray, np.ndarray]:
    """S_k ids and the target A_k at R×R the slow way: decode every mask, f_layer, nearest resize."""
    rles = [{"size": [r["height"], r["width"]], "counts": r["rle"]} for r in rows]
    ids = resize_nearest(f_layer(rles, [r["label_id"] for r in rows], k), R)
    return ids, resize_nearest(masks.decode(rles[k]).astype(bool), R)


def colour(ids: np.ndarray, rgb: dict[int, np.ndarray]) -> np.ndarray:
    lut = np.zeros((max(rgb) + 1, 3), np.float32)
    for i, c in rgb.items():
        lut[i] = c
    return lut[ids].transpose(2, 0, 1)


# -- Eq. 5 -------------------------------------------------------------------------------------------------------


def test_apply_guidance_formula_by_hand():
    S = np.array([[[0.2, 0.4, 1.0], [0.0, 0.5, 0.8]]], np.float32)  # (1, 2, 3)
    G = np.array([[0.5, 1.0]], np.float32)
    out = apply_guidance(S, G, alpha=0.7)
    # pixel 0: S·(1 − 0.35) + 0.35; pixel 1: S·0.3 + 0.7
    want = np.array([[[0.48, 0.61, 1.0], [0.7, 0.85, 0.94]]], np.float32)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == S.shape
    np.testing.assert_array_equal(apply_guidance(S, np.zeros((1, 2), np.float32)), S)  # G = 0: unchanged
    chw = apply_guidance(S.transpose(2, 0, 1), G, alpha=0.7, channel_axis=0)
    np.testing.assert_array_equal(chw, out.transpose(2, 0, 1))
    assert apply_guidance(S, G).tolist() == out.tolist()  # α defaults to 0.7
    with pytest.raises(ValueError):
        apply_guidance(S, np.zeros((2, 2), np.float32))


# -- guidance maps -----------------------------------------------------------------------------------------------


def blob_mask(H=60, W=80) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((xx - 50) ** 2 / 15**2 + (yy - 22) ** 2 / 9**2) <= 1


def test_guidance_kinds_from_mask():
    m = blob_mask()
    rng = np.random.default_rng(0)
    x0, y0, x1, y1 = mask_box(m)
    assert (x0, y0, x1, y1) == (35, 13, 66, 32)

    assert not guidance_from_mask("none", m, rng).any()

    box = guidance_from_mask("box", m, rng)
    want = np.zeros(m.shape, np.float32)
    want[y0:y1, x0:x1] = 1
    np.testing.assert_array_equal(box, want)

    cy, cx = np.argwhere(m).mean(axis=0) + 0.5
    for seed in range(10):
        blob = guidance_from_mask("blob", m, np.random.default_rng(seed))
        assert blob.dtype == np.float32 and blob.max() == pytest.approx(1.0) and blob.min() >= 0
        py, px = np.unravel_index(np.argmax(blob), blob.shape)
        assert abs(px + 0.5 - cx) <= 0.35 * (x1 - x0) + 1 and abs(py + 0.5 - cy) <= 0.35 * (y1 - y0) + 1
        assert blob[int(cy), int(cx)] > 0.5  # a blob around the object, not a speck

    for seed in range(10):
        scr = guidance_from_mask("scribble", m, np.random.default_rng(seed))
        assert set(np.unique(scr)) <= {0.0, 1.0}
        assert scr[m].all()  # ⊇ target
        assert scr.sum() > m.sum()  # dilated
        assert scr.sum() < m.size / 2  # by a few % of the image, not everything

    for kind in GUIDANCE_KINDS:  # an empty mask gives no guidance
        assert not guidance_from_mask(kind, np.zeros((8, 8), bool), rng).any()
    with pytest.raises(ValueError):
        guidance_from_mask("lasso", m, rng)


def test_user_guidance_agrees_with_training_guidance():
    H, W = 48, 64
    m = np.zeros((H, W), bool)
    m[10:30, 5:41] = True
    # the same box, from a mask and typed by a user (x1/y1 exclusive)
    np.testing.assert_array_equal(box_from_mask(m), box_guidance(5, 10, 41, 30, H, W))
    np.testing.assert_array_equal(box_guidance(5, 10, 41, 30, H, W), m.astype(np.float32))
    # a fractional user box covers every pixel it touches
    np.testing.assert_array_equal(box_guidance(5.2, 10.7, 40.1, 29.5, H, W), m.astype(np.float32))
    # scribbles: the user's image, binarised, whatever its encoding
    for img in (m, m.astype(np.uint8) * 255, m.astype(np.uint8), m.astype(np.float32),
                np.repeat(m[..., None].astype(np.uint8) * 255, 3, axis=2)):
        np.testing.assert_array_equal(scribble_guidance(img), m.astype(np.float32))
    # a point + radius: a blob peaking at the point; the training blob is such a blob
    g = point_guidance(20.5, 30.5, 8, H, W)
    assert g.max() == 1.0 and np.unravel_index(np.argmax(g), g.shape) == (30, 20)
    assert g[30, 20 + 8] == pytest.approx(np.exp(-2), rel=1e-5)  # σ = r / 2
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    blob = blob_from_mask(m, rng_a)
    jx, jy = rng_b.normal(0, 0.1, 2)
    r = 0.25 * (36 + 20) * rng_b.uniform(0.75, 1.25)
    np.testing.assert_array_equal(blob, point_guidance(23 + jx * 36, 20 + jy * 20, r, H, W))


def test_box_on_grid_is_the_box_of_the_sampled_mask():
    """A user's tight box, mapped to the model grid, equals the box the training sampler takes of the
    nearest-neighbour-sampled mask (the cells whose centres the object covers), not every cell the box touches."""
    rng = np.random.default_rng(5)
    H, W, R = 480, 640, 32
    for _ in range(50):
        x0, y0 = int(rng.integers(0, W - 40)), int(rng.integers(0, H - 40))
        x1, y1 = int(rng.integers(x0 + 1, W + 1)), int(rng.integers(y0 + 1, H + 1))
        m = np.zeros((H, W), bool)
        m[y0:y1, x0:x1] = True  # a box-shaped object: its sampled mask is the grid's view of the box
        sampled = resize_nearest(m, R)
        g = box_on_grid(x0, y0, x1, y1, H, W, R)
        if sampled.any():
            np.testing.assert_array_equal(g, box_from_mask(sampled))
        assert g.sum() >= 1
        assert g.sum() <= box_guidance(x0 * R / W, y0 * R / H, x1 * R / W, y1 * R / H, R, R).sum()


# -- RLE parsing ---------------------------------------------------------------------------------------------------


def test_foreground_runs_match_pycocotools():
    rng = np.random.default_rng(0)
    ms = [np.zeros((7, 5), bool), np.ones((7, 5), bool), rng.random((31, 17)) < 0.5, blob_mask(),
          np.pad(np.ones((3, 3), bool), 40)]
    ms[0][3, 2] = False
    for m in ms:
        m = np.asfortranarray(m)
        H, W = m.shape
        s = masks.encode(m)["counts"].encode()
        for pixels in (None, H * W):
            layer, a, b = foreground_runs(np.frombuffer(s, np.uint8), np.array([0, len(s)]), pixels)
            flat = np.zeros(H * W, bool)
            for lo, hi in zip(a, b, strict=True):
                flat[lo:hi] = True
            np.testing.assert_array_equal(flat.reshape(W, H).T, m)
            assert (layer == 0).all()


# -- samples ---------------------------------------------------------------------------------------------------------


def test_sample_format_and_batch(index):
    cfg = SampleConfig(resolution=32)  # the single view (the focus view: tests/test_focus.py)
    s = TrainingSampler(index, cfg, seed=0)
    x = s.sample(0)
    assert x["layout"].shape == (3, 32, 32) and x["layout"].dtype == np.float32
    assert x["layout"].min() >= 0 and x["layout"].max() <= 1
    assert x["target"].shape == (32, 32) and x["target"].dtype == np.float32
    assert set(np.unique(x["target"])) <= {0.0, 1.0} and x["target"].any()
    assert x["box"].shape == (4,) and x["box"].dtype == np.float32
    x0, y0, x1, y1 = x["box"]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    ys, xs = np.nonzero(x["target"])  # the box encloses the resized target
    assert x0 * 32 - 1 <= xs.min() and xs.max() <= x1 * 32 and y0 * 32 - 1 <= ys.min() and ys.max() <= y1 * 32
    assert isinstance(x["obj"], str) and x["obj"] and isinstance(x["context"], str) and x["context"]
    assert x["guidance"] in GUIDANCE_KINDS and isinstance(x["k"], int) and x["k"] >= 1
    b = s.batch([0, 1, 2])
    assert b["layout"].shape == (3, 3, 32, 32) and b["target"].shape == (3, 32, 32) and b["box"].shape == (3, 4)
    assert b["obj"][0] == x["obj"] and len(b["image_id"]) == 3 and b["k"][0] == x["k"]
    np.testing.assert_array_equal(b["layout"][0], x["layout"])


def test_deterministic_in_seed_and_i(index):
    a, b = TrainingSampler(index, SampleConfig.for_tests(), seed=7), TrainingSampler(index, SampleConfig.for_tests(), seed=7)
    for i in (0, 5, 123):
        x, y = a.sample(i), b.sample(i)
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], np.ndarray):
                np.testing.assert_array_equal(x[key], y[key])
            else:
                assert x[key] == y[key]
    differs = lambda x, y: (x["image_id"], x["k"], x["guidance"]) != (y["image_id"], y["k"], y["guidance"]) \
        or not np.array_equal(x["layout"], y["layout"])  # noqa: E731
    assert all(differs(a.sample(i), a.sample(i + 1)) for i in range(5))
    other = TrainingSampler(index, SampleConfig.for_tests(), seed=8)
    assert any(differs(a.sample(i), other.sample(i)) for i in range(5))


@pytest.mark.parametrize("R", [32, 63, 200])  # down, odd, and up-sampling (source is 160×120)
def test_layout_paints_exactly_layers_below_k(ds, index, R):
    rows, rgb = layer_rows(ds), vocab_rgb(ds)
    s = TrainingSampler(index, SampleConfig(resolution=R, guidance_mix=ONLY["none"]), seed=1)
    occluded_checked = 0
    for i in range(25):
        x = s.sample(i)
        img_rows, k = rows[x["image_id"]], x["k"]
        ids, target = reference(img_rows, k, R)
        np.testing.assert_array_equal(x["layout"], colour(ids, rgb))  # colours = the vocabulary table's
        np.testing.assert_array_equal(x["target"], target.astype(np.float32))
        assert x["obj"] == img_rows[k]["label"]
        bx, by, bw, bh = img_rows[k]["bbox"]
        np.testing.assert_allclose(x["box"], [bx / 160, by / 120, (bx + bw) / 160, (by + bh) / 120], atol=1e-6)
        # a pixel where a later painted layer covers an earlier one shows the later one's colour
        rles = [{"size": [r["height"], r["width"]], "counts": r["rle"]} for r in img_rows[:k]]
        small = [resize_nearest(masks.decode(r).astype(bool), R) for r in rles]
        for hi in range(k - 1, 0, -1):
            below = np.logical_or.reduce(small[:hi])
            only_hi = small[hi] & below & ~np.logical_or.reduce([np.zeros_like(below), *small[hi + 1 :]])
            if only_hi.any():
                yy, xx = np.argwhere(only_hi)[0]
                np.testing.assert_array_equal(x["layout"][:, yy, xx], rgb[img_rows[hi]["label_id"]])
                occluded_checked += 1
                break
        # nothing of layers ≥ k is painted: unpainted pixels are background black
        painted = np.logical_or.reduce([np.zeros((R, R), bool), *small])
        assert not x["layout"][:, ~painted].any()
    assert occluded_checked >= 5


def test_targets_are_valid_layers(ds, index):
    rows = layer_rows(ds)
    for insert_stuff in (False, True):
        cfg = SampleConfig(resolution=32, insert_stuff=insert_stuff)
        s = TrainingSampler(index, cfg, seed=0)
        want = sum(1 for v in rows.values() for r in v[1:]
                   if r["area"] >= cfg.min_target_area and (insert_stuff or not r["is_stuff"]))
        assert len(s) == want
        stuff_seen = 0
        for i in range(150):
            x = s.sample(i)
            r = rows[x["image_id"]][x["k"]]
            assert x["k"] >= 1 and r["area"] >= cfg.min_target_area and r["label"] == x["obj"]
            stuff_seen += r["is_stuff"]
        assert (stuff_seen > 0) == insert_stuff
    assert len(index) == len(TrainingSampler(index, SampleConfig(), 0))


def test_guidance_in_samples(ds, index):
    rows, rgb = layer_rows(ds), vocab_rgb(ds)
    R = 48
    kinds = {}
    for kind in GUIDANCE_KINDS:
        s = TrainingSampler(index, SampleConfig(resolution=R, guidance_mix=ONLY[kind]), seed=3)
        for i in range(15):
            x = s.sample(i)
            assert x["guidance"] == kind
            ids, target = reference(rows[x["image_id"]], x["k"], R)
            S = colour(ids, rgb)
            if kind == "none":
                np.testing.assert_array_equal(x["layout"], S)
            elif kind == "box":
                want = apply_guidance(S, box_from_mask(target), 0.7, channel_axis=0)
                np.testing.assert_array_equal(x["layout"], want)
            else:  # G = (S~ − S) / (α(1 − S)) where S < 1
                lift = x["layout"] - S
                assert (lift >= -1e-6).all()
                on = lift.max(axis=0) > 1e-4
                if kind == "scribble":
                    assert on[target].all()  # G ⊇ target: every target pixel is guided
                    assert on.sum() > target.sum()  # dilated
                else:
                    ty, tx = np.argwhere(target).mean(axis=0)
                    g = (lift / np.maximum(0.7 * (1 - S), 1e-6)).max(axis=0)
                    py, px = np.unravel_index(np.argmax(g), g.shape)
                    h, w = np.ptp(np.argwhere(target), axis=0) + 1
                    assert abs(py - ty) <= 0.35 * h + 2 and abs(px - tx) <= 0.35 * w + 2
        kinds[kind] = [s.sample(i)["guidance"] for i in range(20)]
    assert kinds["box"] == ["box"] * 20  # guidance_mix=(0, 1, 0, 0): only boxes
    mixed = TrainingSampler(index, SampleConfig(resolution=16), seed=0)
    assert {mixed.sample(i)["guidance"] for i in range(60)} == set(GUIDANCE_KINDS)


def test_small_targets_train_under_a_box_only(index):
    # Below `box_only_below` pixels a target is always box-guided; at and above it the mix decides as before.
    cut = int(np.median(index.area[index.targets]))
    plain = TrainingSampler(index, SampleConfig(resolution=16, guidance_mix=ONLY["scribble"]), seed=0)
    split = TrainingSampler(index, SampleConfig(resolution=16, guidance_mix=ONLY["scribble"], box_only_below=cut),
                            seed=0)
    small = big = 0
    for i in range(40):
        a, b = plain.sample(i), split.sample(i)
        assert (a["image_id"], a["k"]) == (b["image_id"], b["k"])  # the same target: only its guidance may change
        t = split._draw(i)["t"]
        if index.area[t] < cut:
            assert b["guidance"] == "box" and a["guidance"] == "scribble"
            small += 1
        else:
            assert b["guidance"] == "scribble"
            big += 1
    assert small >= 5 and big >= 5


def test_split_filtering(ds):
    split_of = dict(zip(ds["images"].column("image_id").to_pylist(), ds["images"].column("split").to_pylist(),
                        strict=True))
    train = LayerIndex.from_lake(ds["lake"], "synth", ds["version"])  # default: train
    val = LayerIndex.from_lake(ds["lake"], "synth", ds["version"], split="val")
    both = LayerIndex.from_tables(ds["images"], ds["layers"], ds["captions"], ds["vocabulary"], split=None)
    assert train.split == "train" and val.split == "val"
    assert {split_of[i] for i in train.image_ids} == {"train"} and {split_of[i] for i in val.image_ids} == {"val"}
    assert val.n_images >= 1 and set(train.image_ids) | set(val.image_ids) == set(both.image_ids)
    assert train.n_layers + val.n_layers == both.n_layers == ds["layers"].num_rows
    assert len(train) + len(val) == len(both)
    held_out = TrainingSampler(val, SampleConfig.for_tests(), seed=0)
    assert {held_out.sample(i)["image_id"] for i in range(30)} <= set(val.image_ids)
    via_cfg = TrainingSampler.from_lake(ds["lake"], "synth", ds["version"], SampleConfig(resolution=16, split="val"))
    assert via_cfg.index.split == "val" and len(via_cfg) == len(val)
    # the vocabulary's colours are the table's, not recomputed
    for r in ds["vocabulary"].to_pylist():
        assert train.vocabulary.colours[r["label_id"]].tolist() == [r["r"], r["g"], r["b"]]
        assert train.vocabulary.labels[r["label_id"]] == r["label"]


def test_library_imports_no_orchestrators():
    code = ("import sys, smartmask.training.samples, smartmask.conditioning.guidance; "
            "bad = [m for m in ('prefect', 'ray', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
