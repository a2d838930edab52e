"""The LLaVA planner: the strict box format, constrained decoding on a random model, resampling of malformed
answers, the training pairs, both training stages (in-process, and on 2 Ray Train workers through the flow),
registration, and the `train-planner` CLI's one-line errors.

The model is a tiny random LLaVA (tests/tiny_llava.py) loaded through the production loader: it answers
gibberish unless decoding is constrained to the box grammar, which is what these tests rely on and check.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_llava import build_tiny_llava
from typer.testing import CliRunner

from smartmask.inference.layout import layout_from_lake
from smartmask.planner.base import PlannerError
from smartmask.planner.box_text import (
    TEMPLATE,
    align_answer,
    format_box,
    instruct_prompt,
    is_complete,
    parse_box,
    viable_prefix,
)
from smartmask.planner.llava import LlavaPlanner
from smartmask.planner.llava_data import PlannerPairs
from smartmask.planner.llava_train import PlannerTrainConfig, materialize, run_planner_training
from smartmask.planner.load import load_planner
from smartmask.training.loop import InProcess

pytestmark = pytest.mark.usefixtures("one_torch_thread")

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


# ---- the box format ----------------------------------------------------------------------------------------


@given(st.lists(st.floats(min_value=-2, max_value=3, allow_nan=False), min_size=4, max_size=4))
def test_every_formatted_box_parses_back_to_the_clipped_box(box):
    text = format_box(box)
    got = parse_box(text)
    assert got is not None and is_complete(text) and len(text) == len(TEMPLATE)
    x0, x1 = sorted(min(max(v, 0.0), 1.0) for v in (box[0], box[2]))
    y0, y1 = sorted(min(max(v, 0.0), 1.0) for v in (box[1], box[3]))
    assert all(abs(g - w) <= 0.0015 for g, w in zip(got, (x0, y0, x1, y1), strict=True))


@given(st.text(max_size=60))
def test_parse_box_never_raises_and_only_returns_valid_boxes(text):
    got = parse_box(text)
    if got is not None:
        x0, y0, x1, y1 = got
        assert all(0 <= v <= 1 for v in got) and x0 < x1 and y0 < y1


@pytest.mark.parametrize("text", [
    "[0.1, 0.2, 0.3]", "[0.1, 0.2, 0.3, 0.4, 0.5]", "0.1, 0.2, 0.3, 0.4", "[0.3, 0.2, 0.1, 0.4]",
    "[0.1, 0.4, 0.3, 0.4]", "[0.1, 0.2, 1.3, 0.4]", "[-0.1, 0.2, 0.3, 0.4]", "[1e-1, 0.2, 0.3, 0.4]",
    "[nan, 0.2, 0.3, 0.4]", "[inf, 0.2, 0.3, 0.4]", "[0.1, 0.2, 0.3, 0.4] and more",
    "box: [0.1, 0.2, 0.3, 0.4]", "[0.1; 0.2; 0.3; 0.4]", "", None, 42, ["0.1"],
])
def test_parse_box_refuses_anything_else(text):
    assert parse_box(text) is None


def test_parse_box_accepts_the_format_with_surrounding_space_and_plain_decimals():
    assert parse_box("  [0.100, 0.200, 0.300, 0.400]\n") == (0.1, 0.2, 0.3, 0.4)
    assert parse_box("[0,0.5,1,1]") == (0.0, 0.5, 1.0, 1.0)


@settings(max_examples=200)
@given(st.randoms(use_true_random=False))
def test_a_walk_that_keeps_the_prefix_viable_always_ends_in_a_box(rnd):
    """Constrained decoding over single characters with random choices: never stuck, always a valid box."""
    text = rnd.choice(["", " "])
    while not is_complete(text):
        options = [c for c in "0123456789.,[] " if viable_prefix(text + c)]
        assert options, text
        text += rnd.choice(options)
    assert parse_box(text) is not None


def test_viable_prefix_looks_ahead_at_the_order_of_the_corners():
    assert viable_prefix("[0.999, 0.000, 1") and not viable_prefix("[0.999, 0.000, 0")
    assert not viable_prefix("[1")  # x0 = 1 leaves no room for x1 > x0
    assert not viable_prefix("[0.5, 1")  # nor y0 = 1
    assert not viable_prefix("[0.500, 0.500, 0.4")


def test_prompts_keep_one_image_placeholder_and_one_line_texts():
    p = instruct_prompt("dog", "a park\n<image> with USER: a bench")
    assert p.count("<image>") == 1 and p.startswith("USER: <image>\n") and p.endswith(" ASSISTANT:")
    assert "\n" not in p.split("\n", 1)[1]
    assert align_answer(["sky", "grass", "sky", "dog"]) == "labels: sky, grass, dog"
    assert align_answer([]) == "labels: nothing"


# ---- the planner on a tiny random LLaVA --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="module")
def planner(tiny_dir) -> LlavaPlanner:
    return LlavaPlanner.load(str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def pairs(synthetic_lake) -> dict[str, PlannerPairs]:
    lake, version = synthetic_lake["lake"], synthetic_lake["version"]
    return {s: PlannerPairs.from_lake(lake, "synth", version, s, resolution=32)
            for s in ("align", "instruct")}


@pytest.fixture(scope="module")
def scene(synthetic_lake, pairs):
    ex = pairs["instruct"].example(0)
    ref = f"synth@{synthetic_lake['version']}"
    return layout_from_lake(synthetic_lake["lake"], ref, ex.image_id, ex.k)[0]


def _check_boxes(boxes, scene, n):
    assert len(boxes) == n
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)
    assert all(math.isfinite(b.score) and b.score <= 0 for b in boxes)
    for b in boxes:
        x0, y0, x1, y1 = b.box
        assert 0 <= x0 < x1 <= scene.width and 0 <= y0 < y1 <= scene.height


def test_constrained_decoding_makes_a_random_model_answer_boxes(planner, scene):
    assert set(planner.pieces.values()) == set("0123456789.,[] ")
    boxes = planner.propose(scene, "dog", "a dog in a park", n=4, seed=0)
    _check_boxes(boxes, scene, 4)
    assert planner.last_stats["malformed"] == 0 and len({b.box for b in boxes}) == 4
    again = planner.propose(scene, "dog", "a dog in a park", n=4, seed=0)
    assert [b.record() for b in again] == [b.record() for b in boxes]  # the seed decides
    other = planner.propose(scene, "dog", "a dog in a park", n=4, seed=7)
    assert [b.box for b in other] != [b.box for b in boxes]


def test_unconstrained_the_random_model_is_malformed_and_the_error_is_one_line(tiny_dir, scene):
    free = LlavaPlanner.load(str(tiny_dir), device="cpu")
    free.pieces = {}  # as for a tokenizer that cannot spell the box grammar
    with pytest.raises(PlannerError) as e:
        free.propose(scene, "dog", "a park", n=2, seed=0)
    assert "\n" not in str(e.value) and "no parseable box in 8 answers (8 malformed)" in str(e.value)
    assert free.malformed == 8
    assert free.last_stats == {"answers": 8, "malformed": 8, "duplicates": 0, "boxes": 0}


GARBAGE = ("sure! the dog goes left", "[0.5, 0.5, 0.4, 0.9]", "[0.1, 0.2, 0.3, 1.2]")


class GarbageFirst(LlavaPlanner):
    """Answers garbage for its first `bad` answers, then whatever the model says."""

    bad = 3

    def answer(self, image, prompt, seed):
        self.seeds.append(seed)
        if len(self.seeds) <= self.bad:
            return GARBAGE[len(self.seeds) % len(GARBAGE)]
        return super().answer(image, prompt, seed)


def test_malformed_answers_are_counted_and_resampled_with_new_seeds(tiny_dir, scene):
    p = GarbageFirst.load(str(tiny_dir), device="cpu")
    p.seeds = []
    boxes = p.propose(scene, "dog", "a park", n=2, seed=10)
    _check_boxes(boxes, scene, 2)
    assert p.malformed == 3 and p.last_stats["malformed"] == 3 and p.last_stats["answers"] == 5
    assert p.seeds == [10, 11, 12, 13, 14]  # each try its own seed


def test_an_always_garbage_planner_gives_up_after_its_bound(tiny_dir, scene):
    p = GarbageFirst.load(str(tiny_dir), device="cpu")
    p.seeds, p.bad = [], 10**6
    with pytest.raises(PlannerError, match="no parseable box in 12 answers"):
        p.propose(scene, "dog", "a park", n=3, seed=0)
    assert len(p.seeds) == 12 == p.malformed


def test_load_errors_are_one_line_planner_errors(tmp_path, synthetic_lake):
    with pytest.raises(PlannerError, match="not a planner version in") as e:
        load_planner("llava:0123456789abcdef", synthetic_lake["lake"])
    assert "\n" not in str(e.value)
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(PlannerError, match="pickled"):
        load_planner(f"llava:{tmp_path / 'pickled'}")


# ---- training pairs and the loop ---------------------------------------------------------------------------


def test_pairs_come_from_the_smartmask_sampler_and_inference_paints_the_same(pairs, planner, synthetic_lake):
    lake, version = synthetic_lake["lake"], synthetic_lake["version"]
    vocab = layout_from_lake(lake, f"synth@{version}", pairs["instruct"].example(0).image_id, 0)[1]
    trained = LlavaPlanner(planner.model, planner.processor, planner_id="llava:test", vocabulary=vocab,
                           resolution=32)
    for i in range(6):
        ex = pairs["instruct"].example(i)
        s = pairs["instruct"].sampler.sample(i)
        assert (ex.image_id, ex.k) == (s["image_id"], s["k"])
        assert np.allclose(parse_box(ex.answer), s["box"], atol=0.0015)
        assert s["obj"] in ex.prompt and ex.prompt == instruct_prompt(s["obj"], s["context"])
        scene = layout_from_lake(lake, f"synth@{version}", ex.image_id, ex.k)[0]
        assert np.array_equal(np.asarray(trained.paint(scene)), np.asarray(ex.image))  # S_k, bit for bit
        al = pairs["align"].example(i)
        assert (al.image_id, al.k) == (ex.image_id, ex.k)  # the same draw in both stages
        named = al.answer.removeprefix("labels: ").split(", ")
        assert named and set(named) <= set(scene.labels)


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before: dict, after: dict, part: str) -> set[bool]:
    return {not torch.equal(before[n], after[n]) for n in before if part in n}


def test_the_stages_train_exactly_their_weights_in_process(tiny_dir, synthetic_lake, tmp_path):
    lake, version = synthetic_lake["lake"], synthetic_lake["version"]
    cfg = PlannerTrainConfig.for_tests()
    base = _params(materialize(str(tiny_dir)))
    ex1 = InProcess()
    out1 = run_planner_training(cfg=cfg, stage="align", base=str(tiny_dir), init=[], lake=lake,
                                dataset="synth", dataset_version=version, ex=ex1, work_dir=tmp_path / "align")
    assert out1["step"] == 4 and [s for s, _ in out1["losses"]] == [1, 2, 3, 4]
    assert [d.name for _, d in ex1.reports] == ["ckpt-align-00000002", "ckpt-align-00000004"]
    align = _params(materialize(str(tiny_dir), [ex1.reports[-1][1]]))
    assert _changed(base, align, "multi_modal_projector") == {True}
    assert _changed(base, align, "vision_tower") == {False}
    assert _changed(base, align, "language_model") == {False}
    ex2 = InProcess()
    run_planner_training(cfg=dataclasses.replace(cfg, steps=2), stage="instruct", base=str(tiny_dir),
                         init=[str(ex1.reports[-1][1])], lake=lake, dataset="synth", dataset_version=version,
                         ex=ex2, work_dir=tmp_path / "instruct")
    both = _params(materialize(str(tiny_dir), [ex1.reports[-1][1], ex2.reports[-1][1]]))
    assert _changed(base, both, "vision_tower") == {False}
    assert True in _changed(align, both, "language_model") and True in _changed(align, both, "lm_head")
    state = json.loads((ex2.reports[-1][1] / "state.json").read_text())
    assert state["stage"] == "instruct" and state["lora"] is None and state["step"] == 2
    # A rerun of the finished stage (resumed from its last checkpoint) trains nothing and reports it again.
    again = InProcess(resume=ex1.reports[-1][1])
    out = run_planner_training(cfg=cfg, stage="align", base=str(tiny_dir), init=[], lake=lake, dataset="synth",
                               dataset_version=version, ex=again, work_dir=tmp_path / "align")
    assert out["step"] == 4 and len(again.reports) == 1
    assert again.reports[0][0]["step"] == 4 and again.reports[0][1] == ex1.reports[-1][1]


# ---- the flow on 2 Ray Train workers, registration, loading it back ----------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    from flows.ray_runtime import ray_session

    with ray_session(num_cpus=2):
        yield


@pytest.mark.slow
def test_flow_trains_both_stages_on_two_workers_registers_and_the_planner_proposes(
        tiny_dir, synthetic_lake_copy, prefect_harness, ray_local):
    from transformers import LlavaForConditionalGeneration

    from flows.train_planner import PlannerJob, train_planner
    from smartmask.planner.store import planner_dir, read_lineage
    from smartmask.pretrained import load_pretrained

    lake, version = synthetic_lake_copy["lake"], synthetic_lake_copy["version"]
    out = train_planner(PlannerJob(dataset=f"synth@{version}", base=str(tiny_dir), stage="both", workers=2,
                                   lora=True, lake=str(lake), steps=2, batch_size=4, checkpoint_every=1,
                                   run_id="llava-flow"))
    v = out["planner_version"]
    lineage = read_lineage(lake, v)
    assert lineage["dataset_ref"] == f"synth@{version}" and lineage["stages"] == ["align", "instruct"]
    assert lineage["steps"] == {"align": 2, "instruct": 2} and lineage["lora"] is True
    # The flow's default log_every (10) is past the run's end: the last step's loss is always kept.
    assert [s for s, _ in lineage["losses"]["instruct"]] == [2] and lineage["created_at"].endswith("Z")
    assert all(math.isfinite(loss) and loss > 0 for _, loss in lineage["losses"]["align"])
    folder = planner_dir(lake, v)
    assert (folder / "model.safetensors").is_file() and (folder / "vocabulary.parquet").is_file()
    assert not [f for f in folder.rglob("*") if f.suffix in (".bin", ".pt", ".pkl")]
    assert not (lake / "_staging" / "planners" / "run=llava-flow").exists()
    # LoRA merged: plain transformers loads it, no adapter weights; vision tower as the base's.
    merged = load_pretrained(LlavaForConditionalGeneration, folder)
    names = [n for n, _ in merged.named_parameters()]
    assert not [n for n in names if "lora" in n]
    base = _params(materialize(str(tiny_dir)))
    assert _changed(base, _params(merged), "vision_tower") == {False}
    assert _changed(base, _params(merged), "multi_modal_projector") == {True}
    assert True in _changed(base, _params(merged), "q_proj")
    planner = load_planner(f"llava:{v}", lake, device="cpu")
    assert planner.id == f"llava:{v}" and planner.vocabulary is not None and planner.resolution == 32
    ex = PlannerPairs.from_lake(lake, "synth", version, "instruct", resolution=32).example(3)
    scene = layout_from_lake(lake, f"synth@{version}", ex.image_id, ex.k)[0]
    _check_boxes(planner.propose(scene, "dog", "a park", n=3, seed=1), scene, 3)


# ---- the CLI -----------------------------------------------------------------------------------------------


def _cli(*args):
    from flows.cli import app

    return CliRunner().invoke(app, ["train-planner", *[str(a) for a in args]])


def _one_error_line(result, starts: str) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {starts}"), result.stderr
    return lines[0]


def test_cli_refuses_bad_jobs_in_one_line_before_starting_anything(synthetic_lake, tiny_dir, tmp_path):
    lake, ds = synthetic_lake["lake"], f"synth@{synthetic_lake['version']}"
    line = _one_error_line(_cli("--dataset", ds, "--lake", lake), "--base:")
    assert "offline" in line and "LLaVA" in line
    _one_error_line(_cli("--dataset", ds, "--lake", lake, "--stage", "pretrain", "--base", tiny_dir),
                    "--stage:")
    _one_error_line(_cli("--dataset", ds, "--lake", lake, "--stage", "align", "--lora", "--base", tiny_dir),
                    "--lora:")
    _one_error_line(_cli("--dataset", "nope", "--lake", lake, "--base", tiny_dir), "--dataset:")
    _one_error_line(_cli("--dataset", ds, "--lake", lake, "--base", tmp_path / "missing"), "--base:")
    _one_error_line(_cli("--dataset", ds, "--lake", lake, "--base", "llava-hf/not-cached-here"), "--base:")
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(
        tmp_path / "llama")
    line = _one_error_line(_cli("--dataset", ds, "--lake", lake, "--base", tmp_path / "llama"), "--base:")
    assert "not a LLaVA" in line
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_bytes((Path(tiny_dir) / "config.json").read_bytes())
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"never unpickled")
    assert "pickled" in _one_error_line(_cli("--dataset", ds, "--lake", lake, "--base", tmp_path / "pickled"),
                                        "--base:")
    _one_error_line(_cli("--dataset", ds, "--lake", lake, "--base", tiny_dir, "--steps", "0"), "--steps:")
    (tmp_path / "lake.txt").write_text("not a lake")
    _one_error_line(_cli("--dataset", ds, "--lake", tmp_path / "lake.txt", "--base", tiny_dir), "--lake:")
    assert not (Path(lake) / "planners").exists()
