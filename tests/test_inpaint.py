"""Object insertion: tiny random ControlNet-Inpaint / SD-Inpaint / SDXL pipelines loaded through the production
loader, the synthetic inpainter, the crop path for large images and the paste-back's background guarantee."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from smartmask import boxes
from smartmask.inference import paste
from smartmask.inference.inpaint import (
    DEFAULTS,
    DiffusersInpainter,
    InpaintConfig,
    inpaint_condition,
    load_inpainter,
    parse_spec,
)
from smartmask.inference.insert import build_prompt, insert_object
from smartmask.inference.synthetic_inpaint import SyntheticInpainter, paint
from smartmask.pretrained import ModelNotFound
from smartmask.synth.render import PALETTE
from tests.tiny_inpaint import (
    TINY_NATIVE,
    build_tiny_controlnet_sd15,
    build_tiny_sd_inpaint,
    build_tiny_sdxl_controlnet_inpaint,
)
from tests.tiny_models import build_tiny_sd15

CFG = InpaintConfig.for_tests()


def ellipse(H: int, W: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[:H, :W]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def random_image(H: int, W: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(axis=-1)


def assert_background_kept(image: np.ndarray, res) -> None:
    """uint8 comparison: every pixel outside the dilated mask is the input's byte for byte."""
    outside = ~res.dilated
    assert outside.any()
    assert np.array_equal(res.image[outside], image[outside])
    assert res.image.dtype == np.uint8 and res.image.shape == image.shape


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inpaint")
    return {"sd15": build_tiny_sd15(root / "sd15"), "cn": build_tiny_controlnet_sd15(root / "cn"), "root": root}


@pytest.fixture(scope="module")
def cn15(dirs):
    return load_inpainter(f"controlnet-sd15:{dirs['sd15']}+{dirs['cn']}", device="cpu", config=CFG)


class Recording:
    """Calls the real inpainter through; remembers what it was given."""

    def __init__(self, inner):
        self.inner, self.id, self.native, self.seen = inner, inner.id, inner.native, []

    def __call__(self, image, mask, prompt, negative_prompt, seed, *, obj=None):
        self.seen.append((image.shape, mask.shape, prompt))
        return self.inner(image, mask, prompt, negative_prompt, seed, obj=obj)


# ---- ControlNet-Inpaint SD1.5 --------------------------------------------------------------------------------


def test_controlnet_sd15_insert_keeps_background_and_changes_the_mask(cn15, dirs):
    image = random_image(96, 128)
    mask = ellipse(96, 128, 50, 60, 18, 26)
    res = insert_object(image, mask, "boat", "a calm lake", cn15, CFG, seed=3)
    assert_background_kept(image, res)
    assert res.dilated[mask].all() and res.dilated.sum() < 0.6 * mask.size
    assert changed(res.image, image)[mask].mean() > 0.9
    assert res.native == TINY_NATIVE and res.prompt == "a boat, a calm lake"
    assert res.inpainter_id.startswith(f"controlnet-sd15:{dirs['sd15']}@") and f"+{dirs['cn']}@" in res.inpainter_id
    assert set(res.timings) == {"crop", "inpaint", "paste", "total"}
    # Same seed, same pixels (bulk jobs re-run after a kill must reproduce their rows).
    again = insert_object(image, mask, "boat", "a calm lake", cn15, CFG, seed=3)
    assert np.array_equal(again.image, res.image)


def test_controlnet_condition_follows_the_sd15_inpaint_convention_and_reaches_the_model(cn15):
    image = random_image(TINY_NATIVE, TINY_NATIVE, 1)
    mask = np.zeros((TINY_NATIVE, TINY_NATIVE), bool)
    mask[10:40, 20:50] = True
    cond = inpaint_condition(image, mask, -1.0).numpy()[0].transpose(1, 2, 0)
    assert cond.shape == (TINY_NATIVE, TINY_NATIVE, 3)
    assert (cond[mask] == -1.0).all()
    assert np.allclose(cond[~mask], image[~mask] / 255.0)
    # The condition is used: the same call with a white-filled condition gives different pixels.
    white = DiffusersInpainter(cn15.pipe, cn15.kind, cn15.id, cn15.native, InpaintConfig.for_tests(control_fill=1.0), "cpu")
    a = cn15(image, mask, "a boat", "", 0)
    b = white(image, mask, "a boat", "", 0)
    assert a.shape == (TINY_NATIVE, TINY_NATIVE, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)


def test_box_baseline_changes_the_whole_box(cn15):
    image = random_image(96, 128, 2)
    box = (30, 20, 90, 70)
    mask = boxes.box_mask(box, 96, 128)
    assert mask.sum() == 60 * 50
    res = insert_object(image, mask, "dog", "", cn15, CFG, seed=0)
    assert_background_kept(image, res)
    inside = changed(res.image, image)[20:70, 30:90]
    assert inside.any(axis=1).all() and inside.any(axis=0).all()  # every row and every column of the box
    assert inside.mean() >= 0.9


def test_large_image_is_inpainted_on_a_native_crop(cn15):
    H, W = 600, 800
    image = random_image(H, W, 4)
    mask = ellipse(H, W, 300, 500, 60, 90)
    rec = Recording(cn15)
    res = insert_object(image, mask, "person", "a park", rec, CFG, seed=1)
    assert rec.seen == [((TINY_NATIVE, TINY_NATIVE, 3), (TINY_NATIVE, TINY_NATIVE), "a person, a park")]
    x0, y0, x1, y1 = res.crop_box
    assert x1 - x0 == y1 - y0 and 180 <= x1 - x0 < 600  # a square around the mask, not the image
    assert res.native == TINY_NATIVE
    ys, xs = np.nonzero(res.dilated)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    assert_background_kept(image, res)
    assert changed(res.image, image)[mask].mean() > 0.9


# ---- SDXL ControlNet-Inpaint and the plain inpainting baseline ------------------------------------------------


def test_sdxl_controlnet_inpaint_end_to_end(dirs):
    path = build_tiny_sdxl_controlnet_inpaint(dirs["root"] / "sdxl")
    inp = load_inpainter(str(path), device="cpu", config=CFG)  # kind read from model_index.json
    assert inp.id.startswith(f"controlnet-sdxl:{path}@") and f"+{path / 'controlnet'}@" in inp.id
    assert inp.native == TINY_NATIVE
    image = random_image(64, 80, 5)
    mask = ellipse(64, 80, 30, 40, 12, 16)
    res = insert_object(image, mask, "lamp", "a living room", inp, CFG, seed=0)
    assert_background_kept(image, res)
    assert changed(res.image, image)[mask].mean() > 0.9


def test_sd_inpaint_baseline_through_the_same_interface(dirs):
    path = build_tiny_sd_inpaint(dirs["root"] / "sdi")
    inp = load_inpainter(f"sd-inpaint:{path}", device="cpu", config=CFG)
    assert inp.id.startswith(f"sd-inpaint:{path}@") and "+" not in inp.id
    image = random_image(96, 128, 6)
    mask = ellipse(96, 128, 40, 70, 20, 25)
    res = insert_object(image, mask, "chair", "a kitchen", inp, CFG, seed=2)
    assert_background_kept(image, res)
    assert changed(res.image, image)[mask].mean() > 0.9


# ---- Specs ----------------------------------------------------------------------------------------------------


def test_specs_parse_to_kinds_and_sources(dirs, tmp_path):
    assert parse_spec("controlnet-sd15") == parse_spec("controlnet-sd15:")
    spec = parse_spec("controlnet-sd15")
    assert (spec.base, spec.controlnet) == DEFAULTS["controlnet-sd15"]
    spec = parse_spec(f"controlnet-sd15:{dirs['sd15']}")  # no controlnet/ inside: the default hub ControlNet
    assert (spec.base, spec.controlnet) == (str(dirs["sd15"]), DEFAULTS["controlnet-sd15"][1])
    spec = parse_spec("controlnet-sdxl:org/base+org/cn")
    assert (spec.kind, spec.base, spec.controlnet) == ("controlnet-sdxl", "org/base", "org/cn")
    assert parse_spec("sdxl-inpaint").base == DEFAULTS["sdxl-inpaint"][0]
    assert parse_spec("synthetic").kind == "synthetic"
    for bad in ("", "dall-e", "sd-inpaint:a/b+c/d", "synthetic:x", str(tmp_path)):
        with pytest.raises(ValueError) as err:
            parse_spec(bad)
        assert "\n" not in str(err.value)


def test_default_hub_model_offline_is_one_line_model_not_found():
    with pytest.raises(ModelNotFound) as err:
        load_inpainter("controlnet-sd15", device="cpu", config=CFG)
    assert "\n" not in str(err.value) and "stable-diffusion-v1-5" in str(err.value)


# ---- The synthetic inpainter ----------------------------------------------------------------------------------


def test_synthetic_inpainter_paints_the_class_palette_colour():
    image = np.full((120, 160, 3), 128, np.uint8)
    mask = ellipse(120, 160, 60, 80, 30, 40)
    inp = load_inpainter("synthetic", config=CFG)
    assert inp.id == "synthetic"
    res = insert_object(image, mask, "cars", "a road", inp, CFG)  # plural names map to the class
    assert_background_kept(image, res)
    core = ellipse(120, 160, 60, 80, 24, 34)  # away from the outline and the resampled edge
    ratio = res.image[core].astype(np.float64) / np.asarray(PALETTE["car"], np.float64)
    assert ratio.min() > 0.85 and ratio.max() < 1.12  # palette x shade (1.08 at the top, 0.9 at the bottom)
    assert (np.ptp(ratio, axis=1) < 0.06).all()  # one shade factor for all three channels
    top, bottom = res.image[40, 80].astype(float), res.image[80, 80].astype(float)
    assert (top > bottom).all()  # lighter at the top than at the bottom
    assert changed(res.image, image)[mask].all()


def test_synthetic_outline_and_box_baseline():
    mask = np.zeros((32, 32), bool)
    mask[8:24, 6:26] = True
    rgb = paint("boat", mask)
    inner, border = rgb[12:20, 10:22].astype(float).mean(), rgb[8, 10:22].astype(float).mean()
    assert border < 0.65 * inner  # the renderer's thing outline (x 0.5) on the mask's border
    image = np.full((60, 90, 3), 40, np.uint8)
    box = boxes.box_mask((10, 5, 70, 50), 60, 90)
    res = insert_object(image, box, "boat", "", SyntheticInpainter(), CFG)
    assert_background_kept(image, res)
    assert changed(res.image, image)[box].all()


def test_synthetic_unknown_class_is_one_line_error():
    image = np.full((40, 40, 3), 90, np.uint8)
    mask = ellipse(40, 40, 20, 20, 8, 8)
    with pytest.raises(ValueError, match="cannot paint 'unicorn'") as err:
        insert_object(image, mask, "unicorn", "a meadow", SyntheticInpainter(), CFG)
    assert "\n" not in str(err.value)


# ---- Bad input, geometry, memory ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, mask, obj, match",
    [
        (np.zeros((40, 50, 3), np.uint8), np.zeros((40, 50), bool), "boat", "mask is empty"),
        (np.zeros((40, 50, 3), np.uint8), np.ones((40, 60), bool), "boat", "mask is 60x40 but the image is 50x40"),
        (np.zeros((40, 50, 3), np.uint8), np.ones((40, 50), np.uint8), "boat", "bool"),
        (np.zeros((40, 50, 3), np.float32), np.ones((40, 50), bool), "boat", "uint8"),
        (np.zeros((40, 50, 4), np.uint8), np.ones((40, 50), bool), "boat", "RGB"),
        (np.zeros((40, 50, 3), np.uint8), np.ones((40, 50), bool), "  ", "object name is empty"),
    ],
)
def test_bad_input_is_a_one_line_value_error(image, mask, obj, match):
    with pytest.raises(ValueError, match=match) as err:
        insert_object(image, mask, obj, "x", SyntheticInpainter(), CFG)
    assert "\n" not in str(err.value)


def test_box_mask_rejects_boxes_outside_the_image():
    assert boxes.box_mask((0.5, 0.5, 2.2, 1.0), 4, 4).sum() == 3  # every pixel the box touches
    for bad in ((0, 0, 0, 3), (-1, 0, 3, 3), (0, 0, 5, 3), (2, 2, 1, 3), (0, 0, float("nan"), 1)):
        with pytest.raises(ValueError):
            boxes.box_mask(bad, 4, 4)


def test_crop_geometry_pads_past_the_border_and_never_loses_a_small_mask():
    crop = paste.square_crop((0, 10, 40, 40), 50, 300, margin=0.25, min_side=32)
    assert crop.side == 50 and crop.x0 == 0 and crop.y0 == 0  # capped by the short side, shifted inside
    wide = paste.square_crop((100, 0, 180, 50), 50, 300, margin=0.0, min_side=0)
    assert wide.side == 80 and wide.y0 == -15  # longer than the image is high: centred, edge-padded
    image = random_image(50, 300)
    pixels = paste.extract(image, wide)
    assert pixels.shape == (80, 80, 3)
    assert np.array_equal(pixels[15:65], image[:, 100:180]) and np.array_equal(pixels[0], image[0, 100:180])
    big = np.zeros((1000, 1000), bool)
    big[517, 333] = True
    small = paste.mask_to_native(big, 64)
    assert small.sum() == 1 and small[517 * 64 // 1000, 333 * 64 // 1000]


def test_large_image_insert_allocates_no_full_size_float_arrays():
    H, W = 3000, 4000
    image = np.full((H, W, 3), 100, np.uint8)
    mask = np.zeros((H, W), bool)
    mask[1350:1650, 1800:2200] = ellipse(300, 400, 150, 200, 150, 200)
    inp = SyntheticInpainter()
    insert_object(image[:512, :512], mask[:512, :512] | boxes.box_mask((200, 200, 300, 300), 512, 512), "boat",
                  "", inp, CFG)  # warm-up: imports, PIL  # fmt: skip
    tracemalloc.start()
    res = insert_object(image, mask, "boat", "a lake", inp, CFG)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The output (uint8, 36 MB) and the dilated mask (bool, 12 MB) are full size; one float32 copy of the image
    # alone would be 144 MB.
    assert peak < 1.6 * image.nbytes, f"peak {peak / 2**20:.0f} MiB"
    assert_background_kept(image, res)
    assert build_prompt("apple", "") == "an apple" and build_prompt("the boat", " a  lake ") == "the boat, a lake"


def test_paste_back_in_row_chunks_equals_one_pass(monkeypatch):
    image = random_image(150, 200, 7)
    mask = ellipse(150, 200, 70, 90, 40, 60) & ~ellipse(150, 200, 70, 90, 10, 10)
    inp = SyntheticInpainter(native=96)
    results = []
    for rows in (10_000, 7):
        monkeypatch.setattr(paste, "_ROWS_PER_CHUNK", rows)
        results.append(insert_object(image, mask, "tree", "", inp, CFG))
    one, chunked = results
    assert one.feather_px > 2
    assert np.array_equal(one.dilated, chunked.dilated)
    # No seams: PIL resamples each chunk's rows from the same source (its box only moves the sampling grid by
    # float rounding), so chunks differ from one pass by at most 1 level, and only inside the dilated mask.
    diff = np.abs(one.image.astype(np.int16) - chunked.image.astype(np.int16)).max(axis=-1)
    assert diff.max() <= 1 and not diff[~one.dilated].any()
