"""Evaluation metrics: per-item metrics, bootstrap intervals, Local-FID (against clean-fid) and CLIP-Score."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from smartmask.evaluation.clip_score import ClipScorer, prompt_for, tiny_clip
from smartmask.evaluation.fid import (
    ExtractorUnavailable,
    features,
    frechet_distance,
    inception_weights_path,
    load_extractor,
    local_fid,
    object_crop,
)
from smartmask.evaluation.intervals import bootstrap_mean, bootstrap_statistic, paired_difference, significant
from smartmask.evaluation.metrics import (
    background_psnr_mse,
    best_of_n_iou,
    boundary_f,
    default_bg_dilation,
    default_tolerance,
    diversity,
    norm_l2_bg,
)


def _rect(H: int, W: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance vs clean-fid
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed, n_a, n_b, d, rank_deficient",
    [(0, 200, 150, 8, False), (1, 50, 60, 16, False), (2, 20, 30, 64, True), (3, 10, 12, 32, True),
     (4, 100, 20, 32, True)],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")  # inside clean-fid
def test_frechet_distance_equals_clean_fid(seed, n_a, n_b, d, rank_deficient):
    from cleanfid.fid import fid_from_feats

    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_a, d))
    b = rng.normal(0.3, 1.2, size=(n_b, d)) + rng.normal(size=d) * 0.1
    ours, theirs = frechet_distance(a, b), fid_from_feats(a, b)
    if rank_deficient:  # N < D: values O(10-100), and clean-fid's sqrtm of a singular product is itself off ~1e-8
        assert ours == pytest.approx(theirs, rel=1e-6)
    else:  # values O(1)-O(10)
        assert 0.5 < theirs < 20
        assert abs(ours - theirs) < 1e-6
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_in_one_dimension_is_the_closed_form():
    rng = np.random.default_rng(5)
    a, b = rng.normal(1.0, 2.0, size=(7, 1)), rng.normal(size=(9, 1))
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    assert frechet_distance(a, b) == pytest.approx((a.mean() - b.mean()) ** 2 + (sa - sb) ** 2, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Background preservation
# ---------------------------------------------------------------------------------------------------------------


def test_norm_l2_bg_zero_outside_and_monotone_in_background_noise():
    rng = np.random.default_rng(0)
    H, W = 48, 64
    image = rng.uniform(0.2, 0.8, size=(H, W, 3))
    mask = _rect(H, W, 20, 10, 40, 30)
    px = default_bg_dilation(H, W)
    assert px == 1
    out = image.copy()
    out[mask] = rng.uniform(0, 1, size=(int(mask.sum()), 3))  # inside changed arbitrarily
    assert norm_l2_bg(out, image, mask, px) == 0.0
    assert background_psnr_mse(out, image, mask, px) == (math.inf, 0.0)
    # uint8 images are compared on the [0, 1] scale too
    as_u8 = (image * 255).round().astype(np.uint8)
    out_u8 = as_u8.copy()
    out_u8[mask] = 0
    assert norm_l2_bg(out_u8, as_u8, mask, px) == 0.0

    noise = rng.normal(size=image.shape)
    scores, mses = [], []
    for level in (0.01, 0.05, 0.2):
        noisy = out + level * noise
        scores.append(norm_l2_bg(noisy, image, mask, px))
        mses.append(background_psnr_mse(noisy, image, mask, px)[1])
    assert 0 < scores[0] < scores[1] < scores[2]
    assert 0 < mses[0] < mses[1] < mses[2]
    bg = ~ndimage.binary_dilation(mask, iterations=1)  # radius 1 disk == 4-neighbour cross
    expected = np.linalg.norm((0.2 * noise)[bg]) / np.linalg.norm(image[bg])
    assert scores[2] == pytest.approx(expected, rel=1e-12)
    psnr = background_psnr_mse(out + 0.05 * noise, image, mask, px)[0]
    assert psnr == pytest.approx(10 * math.log10(1 / mses[1]))


# ---------------------------------------------------------------------------------------------------------------
# Mask metrics
# ---------------------------------------------------------------------------------------------------------------


def _boundary_f_full_image(pred, gt, tol):
    """Reference: the same definition on the whole image, no cropping."""
    pb = pred & ~ndimage.binary_erosion(pred, border_value=0)
    gb = gt & ~ndimage.binary_erosion(gt, border_value=0)
    p = np.mean(ndimage.distance_transform_edt(~gb)[pb] <= tol)
    r = np.mean(ndimage.distance_transform_edt(~pb)[gb] <= tol)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_boundary_f_identical_within_and_beyond_tolerance():
    H, W = 120, 160
    tol = default_tolerance(H, W)
    assert tol == 2  # round(0.008 * 200)
    gt = _rect(H, W, 50, 40, 90, 80)
    assert boundary_f(gt, gt) == 1.0
    within = np.roll(gt, tol, axis=1)  # every boundary pixel moves by exactly tol
    assert boundary_f(within, gt) == 1.0
    beyond = np.roll(gt, (tol + 3, tol + 3), axis=(0, 1))
    assert boundary_f(beyond, gt) < 0.5
    assert boundary_f(beyond, gt, tol_px=(tol + 3) * math.sqrt(2)) == 1.0  # the shift's Euclidean length
    empty = np.zeros((H, W), bool)
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(empty, gt) == 0.0 and boundary_f(gt, empty) == 0.0


def test_boundary_f_crop_equals_whole_image_on_blobs_touching_the_border():
    rng = np.random.default_rng(1)
    H, W = 60, 80
    for _ in range(5):
        noise = ndimage.gaussian_filter(rng.normal(size=(2, H, W)), (0, 4, 4))
        pred, gt = noise[0] > 0.05, noise[1] > 0.05
        pred[:, :3] = True  # on the image border: the border counts as outside
        for tol in (1, 3):
            assert boundary_f(pred, gt, tol) == pytest.approx(_boundary_f_full_image(pred, gt, tol), abs=1e-12)


def test_best_of_n_and_diversity_on_hand_made_masks():
    left, right = _rect(8, 8, 0, 0, 4, 8), _rect(8, 8, 4, 0, 8, 8)
    quarter = _rect(8, 8, 0, 0, 4, 4)
    assert best_of_n_iou([right, left], left) == 1.0
    assert best_of_n_iou([right, quarter], left) == 0.5
    assert best_of_n_iou([right], left) == 0.0
    assert math.isnan(best_of_n_iou([], left))
    assert diversity([left, right]) == 1.0
    assert diversity([left, left.copy()]) == 0.0
    assert diversity([left, right, left]) == pytest.approx(2 / 3)  # pairs: 0, 1, 0 IoU
    assert diversity([left, quarter]) == 0.5
    assert diversity([left]) is None
    empty = np.zeros((8, 8), bool)
    assert diversity([empty, empty]) == 0.0  # two empty masks count as IoU 1


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------------------------


def test_bootstrap_mean_deterministic_and_covers_the_mean():
    rng = np.random.default_rng(0)
    values = list(rng.normal(0.4, 0.2, size=40)) + [None, float("nan")]
    first, again = bootstrap_mean(values, seed=3), bootstrap_mean(values, seed=3)
    assert first == again  # bit-identical
    assert first.n == 40
    assert first.low < first.value < first.high
    assert first.value == pytest.approx(np.mean(values[:40]))
    assert bootstrap_mean(values, seed=4) != first
    nothing = bootstrap_mean([None, float("nan")])
    assert nothing.n == 0 and math.isnan(nothing.value) and math.isnan(nothing.low) and not significant(nothing)
    one = bootstrap_mean([0.7, None])
    assert (one.value, one.low, one.high, one.n) == (0.7, 0.7, 0.7, 1)


def test_paired_difference_identical_zero_and_shifted_significant():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.2, 0.9, size=30)
    same = paired_difference(a, a.copy())
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0) and not significant(same)
    b = a - 0.1 + rng.normal(0, 0.02, size=30)
    b[3] = np.nan  # dropped with its pair
    diff = paired_difference(a, b)
    assert diff.n == 29 and diff.low > 0 and significant(diff)
    assert not significant(paired_difference(b, b + rng.normal(0, 0.02, size=30)))
    with pytest.raises(ValueError):
        paired_difference(a, a[:-1])


def test_bootstrap_statistic_resamples_the_same_items_as_bootstrap_mean():
    rng = np.random.default_rng(2)
    x = rng.normal(size=25)
    by_mean = bootstrap_mean(x, n_boot=300, seed=7)
    by_stat = bootstrap_statistic(np.mean, x, n_boot=300, seed=7)
    assert by_stat.value == pytest.approx(by_mean.value, abs=1e-15)
    assert by_stat.low == pytest.approx(by_mean.low, abs=1e-12)
    assert by_stat.high == pytest.approx(by_mean.high, abs=1e-12)
    # paired set-level statistic: FID of version A minus version B against the same real items
    real = rng.normal(size=(30, 3))
    fake_a, fake_b = real + rng.normal(0, 0.1, size=(30, 3)), real + 1.0 + rng.normal(0, 0.1, size=(30, 3))

    def fid_gap(r, fa, fb):
        return frechet_distance(r, fb) - frechet_distance(r, fa)

    gap = bootstrap_statistic(fid_gap, real, fake_a, fake_b, n_boot=50, seed=0)
    assert gap == bootstrap_statistic(fid_gap, real, fake_a, fake_b, n_boot=50, seed=0)
    assert gap.n == 30 and significant(gap) and gap.low < gap.value < gap.high


# ---------------------------------------------------------------------------------------------------------------
# Local-FID: crops and extractors
# ---------------------------------------------------------------------------------------------------------------


def test_object_crop_square_inside_and_padded():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(80, 100, 3), dtype=np.uint8)
    full = object_crop(image, (80, 30, 98, 50))
    assert full.shape == (299, 299, 3) and full.dtype == np.uint8
    # side = round(20 * 1.2) = 24; centred it would end at x = 101 > 100, so it is shifted left to stay inside
    native = object_crop(image, (80, 30, 98, 50), size=24)
    np.testing.assert_array_equal(native, image[28:52, 76:100])
    small = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    padded = object_crop(small, (0, 0, 30, 20), size=36)  # side 36 > 30 and > 20: edge replication
    np.testing.assert_array_equal(padded[8:28, 3:33], small)
    np.testing.assert_array_equal(padded[0, 3:33], small[0])
    np.testing.assert_array_equal(padded[:, 0], padded[:, 3])
    with pytest.raises(ValueError):
        object_crop(image, (10, 10, 10, 20))


def _crops(seed: int, smooth: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(6):
        img = rng.integers(0, 256, size=(40, 48, 3)).astype(np.float64)
        if smooth:
            img = ndimage.gaussian_filter(img, (6, 6, 0)) * 0.5 + 60
        out.append(object_crop(img.clip(0, 255).astype(np.uint8), (8, 6, 36, 30)))
    return np.stack(out)


def test_random_conv_extractor_deterministic_and_local_fid():
    import torch

    state = torch.get_rng_state()
    one, two = load_extractor("random-conv:0"), load_extractor("random-conv:0")
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG stream is untouched
    assert one.name == "random-conv-v1(seed=0,d=64)"
    noisy, smooth = _crops(0, smooth=False), _crops(1, smooth=True)
    f1, f2 = features(one, noisy, batch=4), features(two, noisy)
    assert f1.shape == (6, 64) and f1.dtype == np.float64
    np.testing.assert_array_equal(f1, f2)
    other = features(load_extractor("random-conv:1"), noisy)
    assert not np.allclose(other, f1)
    same = local_fid(f1, f1)
    differ = local_fid(f1, features(one, smooth))
    assert abs(same) < 1e-9 and differ > 1e-3


def test_inception_missing_weights_is_one_clear_error():
    if inception_weights_path().is_file():
        pytest.skip("clean-fid's Inception weights are present")
    with pytest.raises(ExtractorUnavailable, match="inception-2015-12-05.pt"):
        load_extractor("inception")
    assert load_extractor("auto").name.startswith("random-conv-v1(seed=0")


# ---------------------------------------------------------------------------------------------------------------
# CLIP-Score
# ---------------------------------------------------------------------------------------------------------------


def _clip_inputs():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(5, 40, 48, 3), dtype=np.uint8)
    texts = [prompt_for(o) for o in ("dog", "a red car", "cat", "tree", "person on a bench")]
    return crops, texts


def test_tiny_clip_scores_deterministic_in_range():
    crops, texts = _clip_inputs()
    scorer = ClipScorer.load("tiny-random:0", batch=2)
    assert scorer.backbone == "tiny-random-clip(seed=0)" and scorer.scale == "cos"
    scores = scorer.score(crops, texts)
    assert scores.shape == (5,) and scores.dtype == np.float64
    assert np.all(np.abs(scores) <= 1.0)
    np.testing.assert_array_equal(scores, ClipScorer.load("tiny-random:0", batch=2).score(crops, texts))
    # another batch size pads and multiplies differently: equal to float32 rounding only
    np.testing.assert_allclose(scores, ClipScorer.load("tiny-random:0").score(crops, texts), rtol=0, atol=1e-6)
    assert not np.allclose(scores, ClipScorer.load("tiny-random:1").score(crops, texts))
    assert texts[0] == "a photo of dog"


def test_clip_scorer_loads_a_saved_model_through_the_production_loader(tmp_path):
    crops, texts = _clip_inputs()
    model, tokenizer, processor = tiny_clip(0)
    folder = tmp_path / "clip"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded = ClipScorer.load(str(folder))
    assert loaded.backbone.startswith(f"{folder}@")
    in_memory = ClipScorer(model, tokenizer, processor, backbone="tiny").score(crops, texts)
    np.testing.assert_allclose(loaded.score(crops, texts), in_memory, rtol=0, atol=1e-7)


def test_background_scores_equal_the_definitions():
    """`Background` (what the evaluator uses: B computed once per item) gives the same numbers as `norm_l2_bg` and
    `background_psnr_mse` computed from scratch, on outputs changed inside and outside the object."""
    from smartmask.evaluation.metrics import Background, background_psnr_mse, norm_l2_bg

    rng = np.random.default_rng(5)
    inp = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    obj = np.zeros((60, 80), bool)
    obj[20:40, 30:50] = True
    bg = Background(inp, obj, 3)
    outs = [inp.copy(), inp.copy(), inp.copy()]
    outs[1][22:38, 32:48] = 0  # inside the object only
    outs[2][5:15, 5:70] = rng.integers(0, 256, (10, 65, 3), dtype=np.uint8)  # background damaged
    for out in outs:
        l2, psnr, mse = bg.score(out)
        ref_psnr, ref_mse = background_psnr_mse(out, inp, obj, 3)
        assert l2 == pytest.approx(norm_l2_bg(out, inp, obj, 3), rel=1e-12, abs=1e-15)
        assert mse == pytest.approx(ref_mse, rel=1e-12, abs=1e-18)
        assert psnr == ref_psnr or psnr == pytest.approx(ref_psnr, rel=1e-12)
    assert bg.score(outs[0])[0] == 0.0 and bg.score(outs[1])[0] == 0.0 and bg.score(outs[2])[0] > 0.0
