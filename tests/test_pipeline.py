"""`SmartMaskPipeline`: built once from plain arguments, its models loaded once and reused across requests, its errors
in the library's words with the request field named (the CLI turns the field into its flag)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from test_segment import build_tiny_mask2former
from tiny_models import register_tiny_smartmask
from typer.testing import CliRunner

from flows.cli import app
from smartmask.inference.errors import BadInput
from smartmask.inference.images import load_image
from smartmask.inference.pipeline import SmartMaskPipeline
from smartmask.inference.suggest import Control, SuggestConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(synthetic_lake_copy, tmp_path_factory):
    """The shared synthetic lake (a private copy) with a registered random-init tiny SmartMask."""
    tmp = tmp_path_factory.mktemp("pipeline")
    lake = synthetic_lake_copy["lake"]
    mv = register_tiny_smartmask(lake, synthetic_lake_copy["version"], tmp, "pipeline-test")
    image = synthetic_lake_copy["world"] / "images" / "000000000001.png"
    return {"lake": lake, "model": mv, "image": image, "seg": build_tiny_mask2former(tmp / "m2f")}


def test_built_from_plain_arguments_and_models_load_once(world):
    args = (str(world["lake"]), world["model"])
    pickle.dumps(args)  # what a Ray actor receives: strings, nothing heavy
    pipe = SmartMaskPipeline.from_lake(*args, segmenter=str(world["seg"]), inpainter="synthetic")
    pixels = load_image(world["image"])
    model = pipe.model
    first = pipe.suggest("person", "a park", image=pixels, config=SuggestConfig(n=2, steps=2))
    segmenter = pipe._segmenter
    assert segmenter is not None and first.scene.source.startswith("segmenter:")
    second = pipe.suggest("table", "a park", image=pixels, config=SuggestConfig(n=2, steps=2, seed=1))
    assert pipe.model is model and pipe._segmenter is segmenter  # loaded once, reused
    assert second.request["object"] == "table" and second.request["model_version"] == world["model"]
    H, W = pixels.shape[:2]
    found = pipe.suggest("person", "a park", image=pixels, layout_from="synth:1:2",
                         control=Control.parse(H, W, bbox="40,30,100,90"), config=SuggestConfig(n=2, steps=2))
    done = pipe.insert("person", "a park", image=pixels, suggestions=found)
    painter = pipe.inpainter
    pipe.insert("person", "a park", image=pixels, suggestions=found, pick=len(found.masks))
    assert pipe.inpainter is painter
    assert np.array_equal(done.image[~done.dilated], pixels[~done.dilated])
    assert done.mask_source == f"smartmask:{world['model']}"


@pytest.mark.parametrize(("call", "field"), [
    (lambda p, px: p.suggest("", "ctx", image=px, layout_from="synth:1:1"), "object"),
    (lambda p, px: p.suggest("person", "ctx", image=px), "layout"),  # no segmenter, no ground truth
    (lambda p, px: p.suggest("person", "ctx", image=px, layout_from="synth"), "layout"),
    (lambda p, px: p.suggest("person", "ctx", image=px, layout_from="synth:1:99"), "layout"),
    (lambda p, px: Control.parse(*px.shape[:2], bbox="1,2,3"), "box"),
    (lambda p, px: Control.parse(*px.shape[:2], bbox="0,0,9999,10"), "box"),
    (lambda p, px: Control.parse(*px.shape[:2], point="5,5,-1"), "point"),
    (lambda p, px: Control.parse(*px.shape[:2], bbox="0,0,5,5", point="1,1"), "control"),
    (lambda p, px: SuggestConfig(n=0), "n"),
    (lambda p, px: p.insert("person", "ctx", image=px, mask=np.zeros(px.shape[:2], bool)), "mask"),
    (lambda p, px: p.insert("person", "ctx", image=px, mask=np.ones(px.shape[:2], bool)), "inpainter"),
])
def test_errors_speak_the_library_s_words_and_name_the_field(world, call, field):
    pipe = SmartMaskPipeline.from_lake(world["lake"], world["model"])
    pixels = load_image(world["image"])
    with pytest.raises(BadInput) as e:
        call(pipe, pixels)
    assert e.value.field == field
    msg = str(e.value)
    assert "\n" not in msg and "--" not in msg, msg  # one line, no CLI flag


def test_cli_names_the_flag_of_a_library_error(world):
    r = CliRunner().invoke(app, ["suggest", str(world["image"]), "--object", "person", "--context", "x",
                                 "--bbox", "0,0,9999,10", "--layout-from", "synth:1:1", "--lake", str(world["lake"])])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == ["error: --bbox: box 0,0,9999,10 lies outside the 160x120 image"]
    r = CliRunner().invoke(app, ["suggest", str(world["image"]), "--object", "person", "--context", "x",
                                 "--lake", str(world["lake"])])
    assert r.exit_code == 2 and r.stderr.startswith("error: --layout-from/--segmenter: no layout")
