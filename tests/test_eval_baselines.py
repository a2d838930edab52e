"""The evaluator's model baselines: a plain inpainting pipeline (`sd-inpaint:DIR`, its whole crop comes back) and
inpaint + segment (`inpaint-segment:SEGMENTER`, the segmenter's object class inside the box is the mask), and a
baseline that cannot load, which fails its own rows and nothing else.

Models are tiny random ones saved to disk (`tests/tiny_inpaint.py`, `tests/test_segment.py`) and loaded through the
production loaders; the run's inpainter is the synthetic world's renderer; Local-FID and CLIP-Score are the offline
random ones. Baselines only (no SmartMask model), on the first items of a small frozen eval set."""

from __future__ import annotations

import numpy as np
import pytest
from test_segment import build_tiny_mask2former
from tiny_inpaint import build_tiny_sd_inpaint

from smartmask import masks
from smartmask.boxes import box_mask, mask_box
from smartmask.evaluation.config import EvalConfig
from smartmask.evaluation.eval_set import EvalSetConfig, build_eval_set

# Slow tier: tiny diffusers pipelines and a tiny Mask2Former per module (~30 s); the fast tier covers the evaluator
# through tests/test_evaluate.py.
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]
OFFLINE = {"fid_extractor": "random-conv:0", "clip": "tiny-random:0", "inpainter": "synthetic"}
MASK_METRICS = ("n_masks", "empty", "mask_rle", "iou", "boundary_f", "best_of_n_iou", "diversity")


@pytest.fixture(scope="module")
def lake(synthetic_lake_copy, tmp_path_factory) -> dict:
    root = synthetic_lake_copy["lake"]
    es = build_eval_set(root, "small", "synth", synthetic_lake_copy["version"], EvalSetConfig(n_items=6))
    models = tmp_path_factory.mktemp("eval-baseline-models")
    sd = build_tiny_sd_inpaint(models / "sd-inpaint", seed=0)
    m2f = build_tiny_mask2former(models / "mask2former")
    return synthetic_lake_copy | {"eval_set": es, "sd": sd, "m2f": m2f}


def _image(item: dict) -> np.ndarray:
    from smartmask.inference.images import load_image

    return np.asarray(load_image(item["image_uri"]))


def _mask(row: dict, item: dict) -> np.ndarray:
    return masks.decode({"size": [item["height"], item["width"]], "counts": row["mask_rle"]}).astype(bool)


def _by(rows: list[dict]) -> dict[tuple[str, str], dict]:
    out = {(r["method"], r["guidance"]): r for r in rows}
    assert len(out) == len(rows), "one row per method and guidance"
    return out


# -- sd-inpaint:DIR --------------------------------------------------------------------------------------------------
# The Evaluator builds plain pipelines with the default InpaintConfig (30 steps, classifier-free guidance): ~2-4 s a
# call for the tiny pipeline on a loaded 2-core machine. The fast test takes box guidance only; point and scribble
# are a slow test.
def _plain_eval(lake, guidance: tuple[str, ...]) -> dict:
    from smartmask.evaluation.evaluator import Evaluator

    cfg = EvalConfig.for_tests(baselines=("box", f"sd-inpaint:{lake['sd']}"), guidance=guidance, **OFFLINE)
    ev = Evaluator(lake["lake"], "small", cfg)
    item = lake["eval_set"].items[0]
    return {"ev": ev, "item": item, "rows": ev.evaluate(item), "sd": lake["sd"], "guidance": guidance}


def _check_plain_rows(run: dict) -> None:
    rows, item = run["rows"], run["item"]
    assert sorted((r["method"], r["model_version"], r["guidance"]) for r in rows) == sorted(run["ev"].expected())
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]
    by = _by(rows)
    for g in run["guidance"]:
        sd, box = by[("sd-inpaint", g)], by[("box", g)]
        assert sd["model_version"] == "baseline:sd-inpaint" and sd["item_id"] == item["item_id"]
        # Same mask as the box baseline: the guidance region itself.
        for k in MASK_METRICS:
            assert sd[k] == box[k], (g, k, sd[k], box[k])
        assert not sd["empty"] and 0.0 <= sd["iou"] <= 1.0
        # The plain pipeline re-encodes its whole crop; the box baseline pastes back into the input.
        assert sd["l2_bg"] > 0.0 and sd["l2_bg"] > box["l2_bg"], (g, sd["l2_bg"], box["l2_bg"])
        assert len(sd["fake_feat"]) == len(sd["real_feat"]) > 0 and np.isfinite(sd["clip_score"])


def _check_plain_outputs(run: dict) -> None:
    """The scored output (recomputed: the item's seed makes it deterministic) differs from the input outside the
    coarse region, and nowhere outside the crop `insert_object` would inpaint for that region."""
    from smartmask.evaluation.evaluator import guidance_inputs
    from smartmask.evaluation.metrics import default_bg_dilation, norm_l2_bg
    from smartmask.inference.insert import insert_object

    ev, item = run["ev"], run["item"]
    image = _image(item)
    H, W = image.shape[:2]
    gt = masks.decode({"size": [H, W], "counts": item["gt_rle"]}).astype(bool)
    (b,) = [b for b in ev.baselines if b.name == "sd-inpaint"]
    pipe = ev._plain_pipe(b.spec)
    assert pipe.inpainter.id.startswith(f"sd-inpaint:{run['sd']}@")
    side = int(pipe.inpainter.native)

    class Blank:  # insert_object's crop for this region at the pipeline's native side, without running it
        id, native = "blank", side

        def __call__(self, img, mask, prompt, negative, seed, obj=None):
            return np.zeros((self.native, self.native, 3), np.uint8)

    by = _by(run["rows"])
    for g in run["guidance"]:
        _, coarse = guidance_inputs(item, g)
        out = ev._baseline(b, item, image, g)
        assert not out.error and out.image.shape == image.shape and out.image.dtype == np.uint8
        assert np.array_equal(out.masks[0], coarse)
        changed = np.any(out.image != image, axis=-1)
        assert (changed & ~coarse).any(), g
        x0, y0, x1, y1 = insert_object(image, coarse, item["object"], item["context"], Blank(),
                                       pipe.inpaint_config).crop_box
        inside = np.zeros((H, W), bool)
        inside[max(y0, 0):min(y1, H), max(x0, 0):min(x1, W)] = True
        assert not (changed & ~inside).any(), g  # nothing outside the crop is touched
        # The row's Norm. L2-BG is this output's.
        assert by[("sd-inpaint", g)]["l2_bg"] == pytest.approx(
            norm_l2_bg(out.image, image, gt, default_bg_dilation(H, W)), rel=1e-6)


@pytest.fixture(scope="module")
def plain(lake):
    return _plain_eval(lake, ("box",))


def test_plain_inpaint_rows(plain):
    _check_plain_rows(plain)


def test_plain_inpaint_output_is_the_whole_crop(plain):
    _check_plain_outputs(plain)


@pytest.mark.slow
def test_plain_inpaint_point_and_scribble(lake):
    run = _plain_eval(lake, ("point", "scribble"))
    _check_plain_rows(run)
    _check_plain_outputs(run)


# -- inpaint-segment:SEGMENTER ---------------------------------------------------------------------------------------
def _check_inside_box(rows: list[dict], items: dict) -> int:
    """Every inpaint-segment row: ok, its mask inside the guidance region's box, consistent. Returns the number of
    non-empty masks."""
    from smartmask.evaluation.evaluator import guidance_inputs

    nonempty = 0
    for r in rows:
        if r["method"] != "inpaint-segment":
            continue
        item = items[r["item_id"]]
        assert r["status"] == "ok", r["error"]
        assert r["model_version"] == "baseline:inpaint-segment"
        _, coarse = guidance_inputs(item, r["guidance"])
        m = _mask(r, item)
        box = box_mask(mask_box(coarse), *coarse.shape)
        assert not (m & ~box).any(), (r["item_id"], r["guidance"])
        assert r["empty"] == (not m.any())
        assert 0.0 <= r["iou"] <= 1.0 and 0.0 <= r["boundary_f"] <= 1.0
        assert r["n_masks"] == 1 and r["best_of_n_iou"] == r["iou"] and r["diversity"] is None
        if r["empty"]:
            assert r["iou"] == 0.0
        # The inpainted image (before segmenting) is the output: insertion metrics are there either way.
        assert r["l2_bg"] >= 0.0 and len(r["fake_feat"]) == len(r["real_feat"]) > 0
        nonempty += int(not r["empty"])
    return nonempty


def test_inpaint_segment_rows(lake):
    """The tiny random Mask2Former through `PanopticSegmenter.load`: on these items it finds none of the objects
    (its labels map onto person/table/sky/water/wall only), so the masks are empty, which is a valid outcome; the
    stand-in segmenter below covers non-empty masks."""
    from smartmask.evaluation.evaluator import Evaluator

    cfg = EvalConfig.for_tests(baselines=("box", f"inpaint-segment:{lake['m2f']}"),
                               guidance=("box", "point", "scribble"), **OFFLINE)
    ev = Evaluator(lake["lake"], "small", cfg)
    items = lake["eval_set"].items[:2]
    rows = [r for it in items for r in ev.evaluate(it)]
    assert len(rows) == len(items) * 6
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]
    _check_inside_box(rows, {it["item_id"]: it for it in items})


def test_inpaint_segment_keeps_the_object_class_inside_the_box(lake):
    """A stand-in segmenter that finds the object's class over the whole image (and another class too): the mask is
    exactly the guidance region's box, whatever its shape."""
    from smartmask.evaluation.evaluator import Evaluator, guidance_inputs
    from smartmask.inference.layout import Region

    class Everywhere:
        calls = 0

        def segment(self, image, vocab):
            Everywhere.calls += 1
            H, W = image.shape[:2]
            full = np.ones((H, W), bool)
            return type("Seg", (), {"regions": [Region(obj, obj, full, False, 0.9),
                                                Region("sky", "sky", full.copy(), True, 0.9)]})()

    spec = str(lake["m2f"])
    cfg = EvalConfig.for_tests(baselines=(f"inpaint-segment:{spec}",), guidance=("box", "point", "scribble"),
                               **OFFLINE)
    ev = Evaluator(lake["lake"], "small", cfg)
    ev._segmenters[spec] = Everywhere()
    item = lake["eval_set"].items[0]
    obj = item["object"]
    assert obj != "sky"
    rows = ev.evaluate(item)
    assert Everywhere.calls == 3
    assert _check_inside_box(rows, {item["item_id"]: item}) == 3
    for r in rows:
        _, coarse = guidance_inputs(item, r["guidance"])
        assert np.array_equal(_mask(r, item), box_mask(mask_box(coarse), *coarse.shape)), r["guidance"]


# -- a baseline that cannot load -------------------------------------------------------------------------------------
def test_failing_baseline_fails_only_its_rows(lake, tmp_path):
    from smartmask.evaluation.evaluator import Evaluator

    missing = tmp_path / "no-such-model"
    cfg = EvalConfig.for_tests(baselines=("box", "oracle", f"sd-inpaint:{missing}"), guidance=("box", "point"),
                               **OFFLINE)
    ev = Evaluator(lake["lake"], "small", cfg)  # models load lazily: construction does not fail
    item = lake["eval_set"].items[0]
    rows = ev.evaluate(item)
    assert sorted((r["method"], r["model_version"], r["guidance"]) for r in rows) == sorted(ev.expected())
    by = _by(rows)
    for g in ("box", "point"):
        bad = by[("sd-inpaint", g)]
        assert bad["status"] == "failed" and bad["model_version"] == "baseline:sd-inpaint"
        assert str(missing) in bad["error"] and "\n" not in bad["error"], bad["error"]
        assert "iou" not in bad and "l2_bg" not in bad
        for m in ("box", "oracle"):
            assert by[(m, g)]["status"] == "ok", by[(m, g)]["error"]
            assert 0.0 <= by[(m, g)]["iou"] <= 1.0


def test_inpaint_segment_without_inpainter_fails_only_its_rows(lake):
    """`--inpainter none`: inpaint + segment has nothing to segment (failed rows saying so); the box baseline's mask
    metrics are still there."""
    from smartmask.evaluation.evaluator import Evaluator

    cfg = EvalConfig.for_tests(baselines=("box", f"inpaint-segment:{lake['m2f']}"), guidance=("box",),
                               **(OFFLINE | {"inpainter": "none"}))
    rows = Evaluator(lake["lake"], "small", cfg).evaluate(lake["eval_set"].items[0])
    by = _by(rows)
    assert set(by) == {("box", "box"), ("inpaint-segment", "box")}
    bad = by[("inpaint-segment", "box")]
    assert bad["status"] == "failed" and "inpainter" in bad["error"] and "\n" not in bad["error"]
    assert by[("box", "box")]["status"] == "ok" and by[("box", "box")].get("l2_bg") is None
