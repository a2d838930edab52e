"""Layered layout -> image (`smartmask.design.render`): the synthetic renderer, the ADE20K control painting, and the
ControlNet-seg path on a tiny random pipeline loaded back through the production loader."""

from __future__ import annotations

import numpy as np
import pytest

from smartmask.design import ade20k
from smartmask.design.layered import DesignLayer, LayeredLayout
from smartmask.design.render import (
    DEFAULT_BASE,
    DEFAULT_CONTROLNET,
    NEUTRAL,
    control_image,
    load_renderer,
    parse_renderer,
    render_layout,
    work_size,
)
from smartmask.inference.errors import BadInput
from smartmask.inference.synonyms import COCO_PANOPTIC_LABELS, normalise
from smartmask.pretrained import ModelNotFound
from smartmask.synth.render import PALETTE
from smartmask.synth.world import STUFF, THINGS
from tests.tiny_controlnet import build_tiny_controlnet_seg_pipeline

W, H = 64, 48


def _rect(x0, y0, x1, y1, w=W, h=H):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _ellipse(cx, cy, rx, ry, w=W, h=H):
    yy, xx = np.mgrid[:h, :w]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _scene(labels: dict[str, str] | None = None, context: str = "a person and a dog in a park") -> LayeredLayout:
    """8 layers back to front on a 64x48 canvas; `labels` renames some ({"dog": "cat"})."""
    specs = [
        ("sky", _rect(0, 0, W, 22), True), ("grass", _rect(0, 18, W, H), True),
        ("tree", _ellipse(10, 16, 7, 12), False), ("house", _rect(24, 8, 44, 26), False),
        ("bird", _ellipse(54, 6, 5, 3), False), ("person", _rect(30, 22, 37, 44), False),
        ("dog", _ellipse(14, 38, 8, 5), False), ("car", _rect(44, 30, 62, 42), False),
    ]  # fmt: skip
    rename = labels or {}
    layers = [DesignLayer(label=rename.get(n, n), mask_HW=m, is_stuff=s) for n, m, s in specs]
    return LayeredLayout(width=W, height=H, context=context, layers=layers)


def _interior(layout: LayeredLayout, i: int) -> np.ndarray:
    """Visible pixels of layer i whose 4 neighbours are layer i too: never on an outline."""
    own = np.pad(layout.owner_HW(), 1, constant_values=-2)
    c = own[1:-1, 1:-1] == i
    return c & (own[:-2, 1:-1] == i) & (own[2:, 1:-1] == i) & (own[1:-1, :-2] == i) & (own[1:-1, 2:] == i)


def _family_distance(colour, palette_colour) -> float:
    c, p = np.asarray(colour, np.float64), np.asarray(palette_colour, np.float64)
    scale = np.clip(c @ p / (p @ p), 0.6 * 0.8, 1.4 * 1.15)
    return float(np.abs(c - scale * p).sum())


# ------------------------------------------------------------------------------------------------- synthetic
def test_synthetic_paints_each_layer_in_its_class_colour_family():
    layout = _scene()
    img = render_layout(layout, "synthetic", seed=3)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    medians = {}
    for i, layer in enumerate(layout.layers):
        inner = _interior(layout, i)
        assert inner.sum() >= 4, layer.label
        px = img[inner].astype(np.float64)
        # Tint is clipped to [0.6, 1.4] per channel, shade within [0.8, 1.15]: every pixel's ratio to the
        # palette colour lies in that band (plus one grey level of rounding).
        ratio = px / np.asarray(PALETTE[layer.label], np.float64)
        slack = 1.0 / np.asarray(PALETTE[layer.label], np.float64)
        assert (ratio >= 0.6 * 0.8 - slack).all() and (ratio <= 1.4 * 1.15 + slack).all(), layer.label
        medians[layer.label] = np.median(px, axis=0)
    # Colour family: each layer's median colour is nearest its own class's palette colour (each candidate scaled
    # by its best brightness within the tint x shade band) among the classes present.
    names = list(medians)
    for name in names:
        dist = {n: _family_distance(medians[name], PALETTE[n]) for n in names}
        assert min(dist, key=dist.get) == name, (name, dist)
    # Different classes, different colours.
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            assert np.abs(medians[names[a]] - medians[names[b]]).max() > 10, (names[a], names[b])


def test_synthetic_is_deterministic_per_seed_and_each_layer_keeps_its_colour():
    layout = _scene()
    a = render_layout(layout, "synthetic", seed=7)
    assert np.array_equal(a, render_layout(layout, "synthetic", seed=7))
    assert not np.array_equal(a, render_layout(layout, "synthetic", seed=8))
    # A new front layer in the corner: every pixel away from it (and its outline) keeps its colour.
    corner = _rect(0, 40, 6, H)
    more = layout.with_layers([*layout.layers, DesignLayer(label="bench", mask_HW=corner)])
    b = render_layout(more, "synthetic", seed=7)
    near = np.zeros((H, W), bool)
    near[39:, :7] = True
    assert np.array_equal(a[~near], b[~near])
    assert not np.array_equal(a[near], b[near])
    # Relabelling a layer as stuff (fewer random draws) recolours that layer and nothing else.
    c = render_layout(_scene({"tree": "floor"}), "synthetic", seed=7)
    tree = layout.owner_HW() == 2
    assert np.array_equal(a[~tree], c[~tree]) and not np.array_equal(a[tree], c[tree])


def test_synthetic_reads_synonyms_and_paints_unknown_labels_neutral():
    same = _scene({"person": "people", "car": "cars"})
    assert np.array_equal(render_layout(_scene(), "synthetic", seed=1), render_layout(same, "synthetic", seed=1))
    odd = _scene({"dog": "spaceship"})
    img = render_layout(odd, "synthetic", seed=1)
    px = img[_interior(odd, 6)].astype(int)
    assert (np.abs(px[:, 0] - px[:, 1]) <= 1).all() and (np.abs(px[:, 1] - px[:, 2]) <= 1).all()  # grey
    assert (px >= int(NEUTRAL[0] * 0.8) - 1).all() and (px <= int(NEUTRAL[0] * 1.15) + 1).all()


def test_bad_renderer_and_steps_are_one_line_bad_input():
    layout = _scene()
    for spec in ("dall-e", "synthetic:/models/x", ""):
        with pytest.raises(BadInput) as err:
            render_layout(layout, spec)
        assert err.value.field == "renderer" and "\n" not in str(err.value)
    with pytest.raises(BadInput) as err:
        render_layout(layout, "synthetic", steps=0)
    assert err.value.field == "steps"


# --------------------------------------------------------------------------------------------------- ADE20K
def test_ade20k_table_is_the_standard_palette_and_covers_our_labels():
    assert len(ade20k.CLASSES) == 150 and len(set(ade20k.CLASSES)) == 150
    known = {"wall": (120, 120, 120), "sky": (6, 230, 230), "tree": (4, 200, 3), "grass": (4, 250, 7),
             "person": (150, 5, 61), "car": (0, 102, 200), "water": (61, 230, 250), "animal": (255, 0, 122),
             "flag": (92, 0, 255)}  # fmt: skip
    for name, colour in known.items():
        assert ade20k.PALETTE[name] == colour
    assert ade20k.CLASSES[0] == "wall" and ade20k.CLASSES[149] == "flag"
    assert all(cls is None or cls in ade20k.PALETTE for cls in ade20k.TABLE.values())
    # Every synthetic class maps; only the intended merges share a colour (dog/bird -> animal, cloud -> sky).
    mapped = {name: ade20k.ade20k_class(name) for name in (*THINGS, *STUFF)}
    assert None not in mapped.values()
    assert mapped["dog"] == mapped["bird"] == "animal" and mapped["cloud"] == "sky"
    assert mapped["window"] == "windowpane" and mapped["person"] == "person"
    assert len(set(mapped.values())) == len(mapped) - 2
    # Every COCO-panoptic label has a decision: an ADE20K class, or an explicit None in the table.
    for label in COCO_PANOPTIC_LABELS:
        cls = ade20k.ade20k_class(label)
        assert cls is not None or ade20k.TABLE.get(normalise(label), "missing") is None, label
    assert ade20k.ade20k_class("Dogs") == "animal" and ade20k.ade20k_class("people") == "person"
    assert ade20k.ade20k_colour("spaceship") == ade20k.FALLBACK == (0, 0, 0)


def test_control_image_paints_each_visible_layer_in_its_ade20k_colour():
    layout = _scene({"car": "spaceship"})
    layout = layout.with_layers([*layout.layers[:1], *layout.layers[2:]])  # no grass: the sky leaves a gap
    img = control_image(layout)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    own = layout.owner_HW()
    for i, layer in enumerate(layout.layers):
        ys, xs = np.nonzero(own == i)
        assert ys.size, layer.label
        expect = (0, 0, 0) if layer.label == "spaceship" else ade20k.PALETTE[ade20k.ade20k_class(layer.label)]
        assert tuple(img[ys[0], xs[0]]) == expect, layer.label
        assert (img[own == i] == expect).all(), layer.label
    assert (own == -1).any() and (img[own == -1] == 0).all()
    assert tuple(img[38, 14]) == ade20k.PALETTE["animal"]  # the dog
    # Resized for the U-Net: nearest neighbour, so only the layout's own colours, never a blend.
    big = control_image(layout, 96, 72)
    assert big.shape == (72, 96, 3)
    allowed = {tuple(c) for c in img.reshape(-1, 3)}
    assert {tuple(c) for c in big.reshape(-1, 3)} == allowed


def test_parse_renderer_and_work_size(tmp_path):
    assert parse_renderer("synthetic") == ("synthetic", None, None)
    assert parse_renderer("controlnet-seg") == ("controlnet-seg", DEFAULT_BASE, DEFAULT_CONTROLNET)
    assert parse_renderer("controlnet-seg:/m/sd+/m/cn") == ("controlnet-seg", "/m/sd", "/m/cn")
    (tmp_path / "controlnet").mkdir()
    (tmp_path / "controlnet" / "config.json").write_text("{}")
    assert parse_renderer(f"controlnet-seg:{tmp_path}")[2] == str(tmp_path / "controlnet")
    assert work_size(1024, 768, 512) == (512, 384)
    assert work_size(61, 45, 64) == (64, 48)
    assert work_size(3000, 20, 512) == (512, 8)


def test_controlnet_source_missing_offline_is_one_line_model_not_found():
    with pytest.raises(ModelNotFound) as err:
        render_layout(_scene(), "controlnet-seg:nobody/not-cached-sd15+nobody/not-cached-seg", device="cpu")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------- ControlNet
@pytest.fixture(scope="module")
def tiny_seg(tmp_path_factory):
    path = build_tiny_controlnet_seg_pipeline(tmp_path_factory.mktemp("tiny-seg") / "pipe")
    return load_renderer(f"controlnet-seg:{path}", device="cpu")


def test_controlnet_seg_renders_at_the_layout_size(tiny_seg):
    assert tiny_seg.id.startswith("controlnet-seg:") and tiny_seg.native == 64
    layout = _scene()
    a = render_layout(layout, tiny_seg, seed=0, steps=2)
    assert a.shape == (H, W, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_layout(layout, tiny_seg, seed=0, steps=2))
    assert not np.array_equal(a, render_layout(layout, tiny_seg, seed=1, steps=2))
    # Not a multiple of 8: rendered at 64x48 and resized back.
    odd = LayeredLayout(width=61, height=45, context="a dog", layers=[
        DesignLayer(label="grass", mask_HW=_rect(0, 0, 61, 45, 61, 45), is_stuff=True),
        DesignLayer(label="dog", mask_HW=_ellipse(30, 25, 10, 8, 61, 45)),
    ])  # fmt: skip
    assert render_layout(odd, tiny_seg, steps=2).shape == (45, 61, 3)


def test_controlnet_seg_is_conditioned_on_the_ade20k_painting(tiny_seg):
    """The pipeline sees the labels only through their ADE20K colours: dog and cat (both "animal") render
    identically, dog and car (different colours) do not."""
    dog = render_layout(_scene(), tiny_seg, seed=0, steps=2)
    cat = render_layout(_scene({"dog": "cat"}), tiny_seg, seed=0, steps=2)
    car = render_layout(_scene({"dog": "car"}), tiny_seg, seed=0, steps=2)
    assert np.array_equal(dog, cat)
    assert not np.array_equal(dog, car)
