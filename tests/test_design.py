"""Iterative design (`smartmask.design.designer`, `smartmask design`): a tiny random SmartMask registered in a copy of
the session's synthetic lake, the prior planner fitted on it, the synthetic inpainter for designs into a photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from smartmask.design.background import StuffStats, plan_background, scene_kind
from smartmask.design.designer import DesignConfig, Designer, resolve_object
from smartmask.inference.errors import BadInput
from smartmask.planner.base import PlannerError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SYNTH_LABELS = ("", "bench", "bird", "boat", "dog", "floor", "grass", "house", "person", "sky", "table", "tree",
                "wall", "water")


@pytest.fixture(scope="module")
def lake_model(synthetic_lake_copy, tmp_path_factory):
    from tiny_models import register_tiny_smartmask

    lake = synthetic_lake_copy["lake"]
    work = tmp_path_factory.mktemp("design-model")
    version = register_tiny_smartmask(lake, synthetic_lake_copy["version"], work, "design-tests")
    return synthetic_lake_copy | {"model": version}


@pytest.fixture(scope="module")
def designer(lake_model):
    return Designer.from_lake(lake_model["lake"], DesignConfig.for_tests(model=lake_model["model"]))


@pytest.fixture(scope="module")
def designed(designer, lake_model):
    cfg = DesignConfig.for_tests(model=lake_model["model"])
    return cfg, designer.design(cfg)


# -- the background rule ---------------------------------------------------------------------------------------


def test_scene_kind_reads_the_context_and_the_objects():
    assert scene_kind("a cosy living room with a sofa") == "indoor"
    assert scene_kind("a park by the river") == "outdoor"
    assert scene_kind("a quiet scene", ["lamp", "table", "chair"]) == "indoor"
    assert scene_kind("a quiet scene", ["boat", "tree"]) == "outdoor"
    assert scene_kind("a quiet scene") == "outdoor"  # a tie


def test_background_bands_use_only_vocabulary_labels():
    plan = plan_background("a boat on the lake", ["boat"], SYNTH_LABELS, seed=3)
    assert (plan.kind, plan.upper, plan.ground, plan.water, plan.source) == ("outdoor", "sky", "grass", "water",
                                                                              "rule")
    assert 0.30 <= plan.line <= 0.46 and plan.line < plan.water_band[0] < plan.water_band[1] <= 1.0
    layers = plan.layers(160, 120, seed=3)
    assert [lay.label for lay in layers] == ["sky", "grass", "water"]
    assert all(lay.origin == "background" and lay.is_stuff for lay in layers)
    cut = round(plan.line * 120)
    assert layers[0].mask_HW[cut - 1].all() and not layers[0].mask_HW[-1].any()  # sky above, reaching past
    assert layers[1].mask_HW[cut].all() and not layers[1].mask_HW[cut - 1].any()
    room = plan_background("a kitchen", [], SYNTH_LABELS, seed=0)
    assert (room.upper, room.ground, room.water) == ("wall", "floor", None) and 0.42 <= room.line <= 0.58
    # a vocabulary with COCO's names still finds its stuff; one without any leaves the canvas empty
    coco = plan_background("a street", [], ["", "sky-other-merged", "person"], seed=0)
    assert (coco.upper, coco.ground) == ("sky-other-merged", None)
    assert plan_background("a park", [], ["", "person", "dog"], seed=0) is None


def test_background_follows_the_dataset_statistics(synthetic_lake):
    stats = StuffStats.from_lake(synthetic_lake["lake"], "synth", synthetic_lake["version"])
    assert stats is not None and stats.lines["outdoor"] and stats.lines["indoor"]
    lines = set(stats.lines["outdoor"])
    plans = [plan_background("a park", [], SYNTH_LABELS, seed=s, stats=stats) for s in range(5)]
    assert all(p.source.startswith("statistics:synth@") and p.line in lines for p in plans)
    # the synthetic world puts its horizon at 30-46 % of the height: the statistics agree
    assert min(lines) >= 0.25 and max(lines) <= 0.5


# -- designing from scratch -------------------------------------------------------------------------------------


def test_design_from_an_empty_canvas_places_every_object(designed, designer):
    cfg, result = designed
    assert len(cfg.objects) >= 6 and len(result.steps) == len(cfg.objects)
    layers = result.layout.layers
    n_bg = sum(lay.origin == "background" for lay in layers)
    assert [lay.label for lay in layers[:n_bg]] == ["sky", "grass", "water"]  # "a park with a lake"
    assert result.placed == cfg.objects, [s.line() for s in result.steps]
    designed_layers = layers[n_bg:]
    assert [lay.label for lay in designed_layers] == list(cfg.objects)
    for lay, step in zip(designed_layers, result.steps, strict=True):
        assert lay.origin == "design" and lay.planner == designer.planner.id and lay.planner
        assert lay.box == step.box and lay.seed == step.mask_seed and lay.mask_HW.any()
        x0, y0, x1, y1 = lay.box
        rows, cols = np.flatnonzero(lay.mask_HW.any(1)), np.flatnonzero(lay.mask_HW.any(0))
        # fitted to the box (as `suggest --bbox`): the mask lies within the box's pixels
        assert x0 - 1 <= cols[0] and cols[-1] <= x1 and y0 - 1 <= rows[0] and rows[-1] <= y1
        assert step.proposals and 1 <= len(step.tried) <= cfg.n_boxes
        assert step.plausibility is not None and set(step.plausibility) >= {"plausible", "reason"}
    seeds = [s.seed for s in result.steps]
    assert len(set(seeds)) == len(seeds)
    assert json.dumps(result.record())  # JSON-safe


def test_design_is_reproducible(designer, designed):
    cfg, first = designed
    again = designer.design(cfg)
    assert [lay.label for lay in again.layout.layers] == [lay.label for lay in first.layout.layers]
    assert all(np.array_equal(a.mask_HW, b.mask_HW) for a, b in zip(again.layout.layers, first.layout.layers,
                                                                      strict=True))


def test_designed_layout_is_stored_and_reloads(designed, lake_model):
    from smartmask.design import store

    _, result = designed
    stored = store.save_layout(lake_model["lake"], result.layout, operation="design")
    assert stored.layout_id and stored.version == 1
    back = store.load_layout(lake_model["lake"], stored.layout_id)
    assert [lay.label for lay in back.layers] == [lay.label for lay in result.layout.layers]
    for a, b in zip(back.layers, result.layout.layers, strict=True):
        assert np.array_equal(a.mask_HW, b.mask_HW) and a.origin == b.origin
        assert a.seed == b.seed and a.planner == b.planner
        assert (a.box is None) == (b.box is None) and (a.box is None or np.allclose(a.box, b.box))


def test_a_designed_layout_renders_through_both_renderers(designed, tmp_path):
    """A designed layout of >= 6 objects renders through the synthetic renderer and through the
    segmentation-ControlNet path (a tiny random SD 1.5 + ControlNet, saved and loaded back as real weights are)."""
    from smartmask.design.render import control_image, load_renderer, render_layout
    from tests.tiny_controlnet import build_tiny_controlnet_seg_pipeline

    cfg, result = designed
    layout = result.layout
    assert sum(lay.origin == "design" for lay in layout.layers) >= 6
    H, W = layout.height, layout.width
    synthetic = render_layout(layout, "synthetic", seed=0)
    assert synthetic.shape == (H, W, 3) and synthetic.dtype == np.uint8
    own = layout.owner_HW()
    seen = [i for i in range(len(layout.layers)) if (own == i).any()]
    means = {layout.layers[i].label: synthetic[own == i].mean(0) for i in seen}
    assert len({tuple(np.round(m)) for m in means.values()}) == len(means)  # every class its own colour
    seg = load_renderer(f"controlnet-seg:{build_tiny_controlnet_seg_pipeline(tmp_path / 'pipe')}", device="cpu")
    image = render_layout(layout, seg, seed=0, steps=2)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8 and image.std() > 0
    control = control_image(layout, W, H)  # what the ControlNet saw: one ADE20K colour per visible layer
    for i in seen:
        assert len(np.unique(control[own == i], axis=0)) == 1, layout.layers[i].label


def test_unknown_object_is_named():
    assert resolve_object("a Dog", SYNTH_LABELS) == "dog"
    assert resolve_object("benches", SYNTH_LABELS) == "bench"
    with pytest.raises(BadInput, match="'spaceship' is not in the model's vocabulary") as e:
        resolve_object("spaceship", SYNTH_LABELS)
    assert e.value.field == "objects"
    with pytest.raises(BadInput) as e:
        DesignConfig(objects=("dog",), context="x", canvas=(160, 120), photo="a.png")
    assert e.value.field == "canvas"


class FailsFor:
    """The prior planner, except that it cannot answer for one class (an answer it could not parse, say)."""

    def __init__(self, planner, obj: str):
        self.inner, self.obj, self.id = planner, obj, planner.id

    def propose(self, scene, obj, context, *, n=4, seed=0):
        if obj == self.obj:
            raise PlannerError(f"no box for {obj}: the answer had none")
        return self.inner.propose(scene, obj, context, n=n, seed=seed)


def test_a_planner_failure_costs_one_object_not_the_design(designer, lake_model):
    cfg = DesignConfig.for_tests(model=lake_model["model"], objects=("tree", "dog", "bench"))
    failing = Designer(designer.pipe, FailsFor(designer.planner, "dog"), stuff=designer.stuff)
    result = failing.design(cfg)
    assert result.placed == ("tree", "bench") and result.failed == ("dog",)
    dog = result.steps[1]
    assert (dog.status, dog.reason) == ("failed", "planner_error") and "no box for dog" in dog.detail
    assert "FAILED" in dog.line()
    assert [lay.label for lay in result.layout.layers if lay.origin == "design"] == ["tree", "bench"]


def test_garbage_llava_answers_are_counted_and_the_design_completes(designer, lake_model, tmp_path_factory):
    from tiny_llava import build_tiny_llava

    from smartmask.planner.llava import LlavaPlanner

    class Garbled(LlavaPlanner):
        """The tiny LLaVA planner, but its first answers are prose and it never answers for a bench."""

        garbage_left = 3

        def answer(self, image, prompt, seed):
            if self.garbage_left > 0 or "a bench go next" in prompt:
                self.garbage_left -= 1
                return "the tree should go somewhere nice"
            return super().answer(image, prompt, seed)

    loaded = LlavaPlanner.load(str(build_tiny_llava(tmp_path_factory.mktemp("llava") / "llava")))
    planner = Garbled(loaded.model, loaded.processor, planner_id=loaded.id, vocabulary=loaded.vocabulary,
                      resolution=loaded.resolution)
    cfg = DesignConfig.for_tests(model=lake_model["model"], objects=("tree", "bench", "bird"), n_boxes=2)
    result = Designer(designer.pipe, planner, stuff=designer.stuff).design(cfg)
    tree, bench, bird = result.steps
    assert tree.planner_stats["malformed"] == 3 and tree.planner_stats["boxes"] == 2
    assert (bench.status, bench.reason) == ("failed", "planner_error") and "malformed" in bench.detail
    assert bench.planner_stats["malformed"] == bench.planner_stats["answers"] == 8  # tries_per_box x n, all prose
    assert bird.planner_stats["malformed"] == 0
    # the design went on past the bench (random boxes may still give empty masks: not the planner's failure)
    assert tree.reason != "planner_error" and bird.reason != "planner_error" and "bench" not in result.placed
    assert all(lay.planner == planner.id for lay in result.layout.layers if lay.origin == "design")
    assert json.loads(json.dumps(result.record()))["steps"][1]["planner_stats"]["malformed"] == 8


# -- designing into a photo -------------------------------------------------------------------------------------


def _photo(lake_model, min_layers=3):
    from smartmask.lake.paths import dataset_dir

    d = dataset_dir(lake_model["lake"], "synth", lake_model["version"])
    rows = pq.read_table(d / "images", columns=["image_id", "uri", "n_layers"]).to_pylist()
    row = next(r for r in sorted(rows, key=lambda r: r["image_id"]) if r["n_layers"] >= min_layers)
    return row["uri"], f"synth@{lake_model['version']}:{row['image_id']}"


def test_design_into_a_photo_inserts_each_object_and_keeps_the_rest(lake_model):
    from smartmask.inference.images import load_image

    uri, ref = _photo(lake_model)
    cfg = DesignConfig.for_tests(model=lake_model["model"], canvas=None, photo=uri, layout_from=ref,
                                 objects=("person", "dog"), context="a person with a dog in a park")
    result = Designer.from_lake(lake_model["lake"], cfg).design(cfg)
    before = load_image(uri)
    photo_layers = [lay for lay in result.layout.layers if lay.origin == "photo"]
    assert photo_layers and result.layout.layers[: len(photo_layers)] == tuple(photo_layers)
    assert not any(lay.origin == "background" for lay in result.layout.layers)
    assert result.placed == ("person", "dog")
    assert all(s.inserted for s in result.steps)
    assert np.array_equal(result.input_image, before)
    outside = ~result.changed_HW
    assert np.array_equal(result.image[outside], before[outside])  # insert's contract, over both passes
    assert np.any(result.image != before)
    for lay in result.layout.layers[len(photo_layers):]:
        assert not (lay.mask_HW & outside).any()  # every inserted mask lies inside what changed


# -- the CLI ----------------------------------------------------------------------------------------------------


def _cli(*args):
    from typer.testing import CliRunner

    from flows.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_designs_stores_and_writes(lake_model, tmp_path):
    out = tmp_path / "out"
    res = _cli("design", "--context", "a park with a lake", "--objects", "tree,dog,bird", "--canvas", "160,120",
               "--steps", "4", "--n", "2", "--boxes", "2", "--model", lake_model["model"],
               "--lake", str(lake_model["lake"]), "--out", str(out))
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    layout_id, _, version = lines[-1].partition("@")
    assert layout_id and version == "1"
    assert any(line.startswith("1. tree:") for line in lines)
    assert (out / "layout.png").is_file() and (out / "legend.png").is_file()
    record = json.loads((out / "design.json").read_text())
    assert record["layout_id"] == layout_id and len(record["steps"]) == 3


@pytest.mark.parametrize(("args", "flag"), [
    (("--canvas", "160x120"), "--canvas"),
    (("--canvas", "4,4"), "--canvas"),
    (("--objects", "tree,spaceship"), "--objects"),
    (("--planner", "oracle"), "--planner"),
    (("--planner", "prior:nosuchdataset"), "--planner"),
    (("--planner", "llava:0123456789abcdef"), "--planner"),
    (("--image", "missing.png"), "--image"),
])  # fmt: skip
def test_cli_bad_input_is_one_line_naming_the_flag(lake_model, args, flag):
    base = {"--context": "a park", "--objects": "tree", "--lake": str(lake_model["lake"])}
    base |= dict(zip(args[::2], args[1::2], strict=True))
    res = _cli("design", *[x for kv in base.items() for x in kv])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag}"), err
    if "spaceship" in args[1]:
        assert "spaceship" in err[0]


def test_demo_design_step_stores_and_renders(lake_model):
    from PIL import Image

    from flows.demo import DEMO_DESIGN, design_step

    out = design_step(lake_model["lake"], lake_model["model"])
    assert out["objects"] == len(DEMO_DESIGN["objects"]) >= 6 and out["placed"], out["lines"]
    folder = lake_model["lake"] / "layouts" / f"layout={out['ref'].split('@')[0]}" / "version=1"
    assert Path(out["folder"]).resolve() == folder.resolve() and out["ref"].endswith("@1")
    for name in ("layout.png", "layout_legend.png"):
        assert (folder / name).is_file(), name
    rendered = Path(out["rendered"])  # a render run beside the published version, never inside it
    assert rendered.parent.parent.name == "kind=layout_render" and not rendered.is_relative_to(folder)
    W, H = DEMO_DESIGN["canvas"]
    assert Image.open(rendered).size == (W, H)
