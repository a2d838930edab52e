"""The object-centred view (smartmask/conditioning/focus.py): the sampler's window view is exactly what `suggest`
paints for the same scene and box, a window's mask goes back to the image where it came from, and a focus model
reads 6 channels and answers inside the box."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from smartmask import masks, presets
from smartmask.boxes import box_pixels, xywh_to_xyxy
from smartmask.conditioning.focus import (
    FOCUS_MARGIN,
    box_in_window,
    box_window,
    full_window,
    paste_window,
    sample_window,
    window_samples,
    window_to_grid,
)
from smartmask.conditioning.grid import resize_grid, resize_nearest
from smartmask.conditioning.guidance import GUIDANCE_KINDS, apply_guidance, box_from_mask, box_on_grid
from smartmask.inference.layout import layout_from_lake, layout_image
from smartmask.inference.suggest import to_image
from smartmask.lake.paths import dataset_dir
from smartmask.masks import mask_iou
from smartmask.training.samples import LayerIndex, SampleConfig, TrainingSampler

ONLY = {kind: tuple(1.0 if k == kind else 0.0 for k in GUIDANCE_KINDS) for kind in GUIDANCE_KINDS}
R = 32


@pytest.fixture(scope="module")
def layers(synthetic_lake):
    d = dataset_dir(synthetic_lake["lake"], "synth", synthetic_lake["version"])
    rows = pq.read_table(d / "layers", columns=["image_id", "layer", "bbox", "rle", "height", "width",
                                                "is_stuff"]).to_pylist()
    return {(r["image_id"], r["layer"]): r for r in rows}


def test_full_window_is_the_global_grid():
    for H, W, r in ((120, 160, 32), (480, 640, 32), (20, 30, 64), (7, 5, 32)):
        ys, xs, in_y, in_x = window_samples(H, W, r, full_window(H, W))
        gy, gx = resize_grid(H, W, r)
        np.testing.assert_array_equal(ys, gy)
        np.testing.assert_array_equal(xs, gx)
        assert in_y.all() and in_x.all()


def test_box_window_puts_the_box_in_the_central_80_percent():
    w = box_window(10, 20, 30, 60)
    assert w == pytest.approx((10 - 2.5, 20 - 5, 30 + 2.5, 60 + 5))
    cells = box_in_window((10, 20, 30, 60), w, R)
    lo, hi = R * FOCUS_MARGIN / (1 + 2 * FOCUS_MARGIN), R * (1 + FOCUS_MARGIN) / (1 + 2 * FOCUS_MARGIN)
    assert cells == pytest.approx((lo, lo, hi, hi))


def test_sampler_focus_view_is_what_suggest_paints(synthetic_lake, layers):
    lake, version = synthetic_lake["lake"], synthetic_lake["version"]
    index = LayerIndex.from_lake(lake, "synth", version, split=None)
    s = TrainingSampler(index, SampleConfig(resolution=R, guidance_mix=ONLY["box"], focus_view=True), seed=3)
    at_edge = 0
    for i in range(16):
        x = s.sample(i)
        assert x["layout"].shape == (6, R, R) and x["target"].shape == (R, R)
        scene, vocab = layout_from_lake(lake, f"synth@{version}", x["image_id"], x["k"])
        H, W = scene.height, scene.width
        row = layers[(x["image_id"], x["k"])]
        box = xywh_to_xyxy(*row["bbox"])
        window = box_window(*box)
        at_edge += window[0] < 0 or window[1] < 0 or window[2] > W or window[3] > H
        focus = apply_guidance(layout_image(scene, vocab, R, window),
                               box_on_grid(*box_in_window(box, window, R), R, R, R))
        gt = masks.decode({"size": [H, W], "counts": row["rle"]}).astype(bool)
        # The global view's box is the sampled target's (as without the focus view; a 5-pixel cell can miss the
        # mask's extreme column); in the window the object is upsampled and it is the box `suggest` draws.
        glob = apply_guidance(layout_image(scene, vocab, R), box_from_mask(resize_nearest(gt, R)))
        np.testing.assert_array_equal(x["layout"][:3], focus.transpose(2, 0, 1))
        np.testing.assert_array_equal(x["layout"][3:], glob.transpose(2, 0, 1))
        np.testing.assert_array_equal(x["target"], sample_window(gt, R, window, False))
        np.testing.assert_array_equal(x["target_global"], resize_nearest(gt, R))
        np.testing.assert_allclose(x["window"], np.array(window) / [W, H, W, H], atol=1e-6)
    assert at_edge >= 1  # a window past the image's edge was painted too (nothing there)


def test_without_a_box_the_focus_view_is_the_global_one(synthetic_lake):
    index = LayerIndex.from_lake(synthetic_lake["lake"], "synth", synthetic_lake["version"], split=None)
    for kind in ("none", "blob", "scribble"):
        s = TrainingSampler(index, SampleConfig(resolution=R, guidance_mix=ONLY[kind], focus_view=True), seed=5)
        plain = TrainingSampler(index, SampleConfig(resolution=R, guidance_mix=ONLY[kind]), seed=5)
        for i in range(4):
            x, y = s.sample(i), plain.sample(i)
            np.testing.assert_array_equal(x["layout"][:3], x["layout"][3:])
            np.testing.assert_array_equal(x["layout"][3:], y["layout"])  # the same draw as without the view
            np.testing.assert_array_equal(x["target"], y["target"])
            np.testing.assert_array_equal(x["window"], [0, 0, 1, 1])


def test_paste_window_puts_the_mask_back_where_it_came_from(synthetic_lake, layers):
    done = 0
    for row in layers.values():
        if row["is_stuff"] or row["layer"] == 0:
            continue
        H, W = row["height"], row["width"]
        gt = masks.decode({"size": [H, W], "counts": row["rle"]}).astype(bool)
        box = xywh_to_xyxy(*row["bbox"])
        window = box_window(*box)
        back = paste_window(sample_window(gt, R, window, False).astype(np.float32), window, H, W)
        c0, r0, c1, r1 = box_pixels(*window, H, W)
        assert not back[:r0].any() and not back[r1:].any() and not back[:, :c0].any() and not back[:, c1:].any()
        # Small objects are upsampled into the window, so they come back nearly whole; large ones lose a cell's edge.
        assert mask_iou(back, gt) > (0.9 if gt.sum() < 0.01 * H * W else 0.75), row
        done += 1
        if done == 40:
            break
    assert done == 40


def test_full_window_paste_is_the_global_resize_inside_the_border():
    p = np.random.default_rng(0).random((R, R)).astype(np.float32)
    for H, W in ((120, 160), (48, 64)):
        # The same bicubic resize; at the border the window's zero padding (outside: not the object) differs from
        # the plain resize's edge, hence `suggest` takes `to_image` when there is no window.
        pasted, plain = paste_window(p, full_window(H, W), H, W), to_image(p, H, W)
        np.testing.assert_array_equal(pasted[8:-8, 8:-8], plain[8:-8, 8:-8])


def test_window_to_grid_lands_on_the_global_grid():
    H, W = 120, 160
    gt = np.zeros((H, W), bool)
    gt[40:90, 30:70] = True
    window = box_window(30, 40, 70, 90)
    on_grid = window_to_grid(sample_window(gt, R, window, False), window, H, W)
    assert mask_iou(on_grid, resize_nearest(gt, R)) > 0.9
    assert not window_to_grid(np.zeros((R, R), bool), window, H, W).any()


def test_a_focus_model_reads_six_channels_and_answers_inside_the_box(tmp_path, synthetic_lake):
    import torch

    from smartmask.inference.pipeline import SmartMaskPipeline
    from smartmask.inference.suggest import Control, SuggestConfig
    from smartmask.model import SmartMask

    cfg = presets.tiny_model(focus_view=True)
    SmartMask.build(cfg).save(tmp_path / "m")
    model = SmartMask.load(tmp_path / "m")  # through the production loader
    assert model.config.focus_view and model.layout_encoder.net[0].in_channels == 6
    lake, version = synthetic_lake["lake"], synthetic_lake["version"]
    scene, vocab = layout_from_lake(lake, f"synth@{version}", *_first_image(lake, version), 2)
    pipe = SmartMaskPipeline(model.eval(), vocab=vocab, lake=lake)
    box = (20.0, 30.0, 60.0, 100.0)
    torch.manual_seed(0)
    found = pipe.suggest("person", "a park", scene=scene, control=Control("box", box=box),
                         config=SuggestConfig(n=2, steps=2, dedupe_iou=None))
    c0, r0, c1, r1 = box_pixels(*box, scene.height, scene.width)
    for m in found.masks:
        assert m.shape == (scene.height, scene.width)
        assert not m[:r0].any() and not m[r1:].any() and not m[:, :c0].any() and not m[:, c1:].any()
    free = pipe.suggest("person", "a park", scene=scene, config=SuggestConfig(n=1, steps=2))
    assert free.masks[0].shape == (scene.height, scene.width)
    with pytest.raises(ValueError, match="layout must be"):  # a 3-channel layout is refused, not misread
        from smartmask.model.sampling import sample_masks

        sample_masks(model, torch.zeros(1, 3, R, R), ["person"], [""], n=1, steps=1)


def test_training_refuses_a_model_and_samples_that_disagree(tmp_path, synthetic_lake):
    from smartmask.training.loop import InProcess, TrainConfig, run_training

    with pytest.raises(ValueError, match="focus_view"):
        run_training(model_cfg=presets.tiny_model(focus_view=False), sample_cfg=SampleConfig.for_tests(),
                     train_cfg=TrainConfig.for_tests(), lake=synthetic_lake["lake"], dataset="synth",
                     dataset_version=synthetic_lake["version"], run_dir=tmp_path / "run", ex=InProcess(),
                     work_dir=tmp_path / "work")


def _first_image(lake, version) -> tuple[str]:
    d = dataset_dir(lake, "synth", version)
    return (sorted(pq.read_table(d / "images", columns=["image_id"]).column("image_id").to_pylist())[0],)


def test_a_sub_pixel_box_gets_a_one_pixel_window_and_pastes_cheaply():
    window = box_window(100.0, 100.0, 100.0001, 200.0)
    assert window[2] - window[0] == pytest.approx(1.0) and window[3] - window[1] == pytest.approx(125.0)
    p = np.ones((R, R), np.float32)
    out = paste_window(p, window, 480, 640)  # was a ~260 GB pad before the window had a minimum size
    assert out.shape == (480, 640) and out[:, 100].any() and not out[:, :99].any() and not out[:, 102:].any()
