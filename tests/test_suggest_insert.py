"""`smartmask suggest` and `smartmask insert` end to end through the production loaders: a tiny random Mask2Former,
a registered tiny SmartMask and a tiny SD1.5 ControlNet-Inpaint, each saved and loaded back; bad input exits 2;
peak memory on a 4000×3000 photo vs a 512×512 one."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_segment import build_tiny_mask2former
from tiny_inpaint import build_tiny_controlnet_sd15
from tiny_models import build_tiny_sd15
from typer.testing import CliRunner

from flows.cli import app
from smartmask import presets
from smartmask.conditioning.guidance import mask_box
from smartmask.config import RebuildConfig, SynthConfig
from smartmask.inference.suggest import fit_to_box
from smartmask.rebuild import rebuild
from smartmask.registry import register
from smartmask.synth import generate
from smartmask.training.loop import InProcess, TrainConfig, config_dict, run_training
from smartmask.training.samples import SampleConfig

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A small synthetic lake with a registered tiny SmartMask (2 real training steps), plus tiny model dirs."""
    tmp = tmp_path_factory.mktemp("suggest")
    generate(tmp / "w", 12, seed=3, config=SynthConfig(width=160, height=120, min_things=3, max_things=6), workers=1)
    lake = tmp / "lake"
    version = rebuild(f"cocoa:{tmp / 'w' / 'annotations.json'}", tmp / "w" / "images", "synth", lake,
                      RebuildConfig.for_tests())["version"]
    model_cfg, sample_cfg = presets.tiny_model(), SampleConfig.for_tests()
    train = TrainConfig(steps=2, batch_size=2, checkpoint_every=2, val_every=2, val_batches=1, log_every=1)
    ex = InProcess()
    metrics = run_training(model_cfg=model_cfg, sample_cfg=sample_cfg, train_cfg=train, lake=lake, dataset="synth",
                           dataset_version=version, run_dir=lake / "runs" / "kind=train" / "run=t", ex=ex,
                           work_dir=tmp / "ck")
    mv = register(lake, ex.reports[-1][1], model_cfg, config_dict(model_cfg, sample_cfg, train), "synth", version,
                  "t", metrics)
    sd = build_tiny_sd15(tmp / "sd15")
    cn = build_tiny_controlnet_sd15(tmp / "cn")
    return {"lake": lake, "version": version, "model": mv, "seg": build_tiny_mask2former(tmp / "m2f"),
            "image": tmp / "w" / "images" / "000000000001.png", "inpainter": f"controlnet-sd15:{sd}+{cn}"}


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _ok(result) -> Path:
    assert result.exit_code == 0, (result.output, result.exception)
    return Path(result.stdout.strip().splitlines()[-1])


def test_suggest_with_a_segmenter_writes_masks_overlay_and_records(world, tmp_path):
    out = _ok(_run("suggest", world["image"], "--object", "person", "--context", "a park", "--segmenter",
                   world["seg"], "--lake", world["lake"], "--n", "3", "--steps", "4", "--out", tmp_path / "s"))
    summary = json.loads((out / "suggest.json").read_text())
    assert summary["model_version"] == world["model"]
    assert summary["layout_source"].startswith("segmenter:mask2former:")
    assert summary["control"] == {"kind": "none"}
    assert len(summary["suggestions"]) + summary["duplicates_dropped"] == 3
    assert summary["suggestions"]  # the per-suggestion checks below run at least once
    H, W = np.asarray(Image.open(world["image"])).shape[:2]
    for s in summary["suggestions"]:
        m = np.asarray(Image.open(out / s["mask"]))
        assert m.shape == (H, W) and set(np.unique(m)) <= {0, 255}
        rec = json.loads((out / f"suggestion-{s['rank']}.json").read_text())
        assert rec["rank"] == s["rank"] and rec["object"] == "person"
    assert (out / "overlay.png").exists() and (out / "layout.png").exists()


@pytest.mark.parametrize("control", ["bbox", "point", "scribble"])
def test_suggest_controls_on_a_ground_truth_layout(world, tmp_path, control):
    H, W = 120, 160
    args = {"bbox": ["--bbox", "40,30,90,110"], "point": ["--point", "60,70,20"]}.get(control)
    if control == "scribble":
        s = np.zeros((H, W), np.uint8)
        s[60:64, 50:100] = 255
        Image.fromarray(s).save(tmp_path / "scribble.png")
        args = ["--scribble", tmp_path / "scribble.png"]
    out = _ok(_run("suggest", world["image"], "--object", "dog", "--context", "a dog", "--layout-from",
                   f"synth@{world['version']}:1:2", "--lake", world["lake"], "--n", "2", "--steps", "3",
                   "--out", tmp_path / "o", *args))
    summary = json.loads((out / "suggest.json").read_text())
    assert summary["control"]["kind"] == ("box" if control == "bbox" else control)
    assert summary["layout_source"] == f"ground-truth:synth@{world['version']}:1:2"
    if control == "bbox":  # a box bounds the suggestion, and each one is stretched onto it (the tight-box default)
        assert summary["fit_box"] is True
        fitted = 0
        for s in summary["suggestions"]:
            m = np.asarray(Image.open(out / s["mask"])) > 0
            assert not m[:, :40].any() and not m[:, 90:].any() and not m[:30].any() and not m[110:].any()
            assert s["empty"] == (not m.any())
            if not s["empty"]:
                x0, y0, x1, y1 = s["bbox"]
                assert abs(x0 - 40) <= 1 and abs(y0 - 30) <= 1 and abs(x1 - 90) <= 1 and abs(y1 - 110) <= 1
                assert mask_box(m) == tuple(s["bbox"])  # the recorded box is the written mask's
                fitted += 1
        assert fitted >= 1, summary["suggestions"]  # the stretch onto the box was checked, not skipped


def test_loose_box_only_cuts_suggestions_to_the_box(world, tmp_path):
    common = ["suggest", world["image"], "--object", "dog", "--context", "a dog", "--layout-from",
              f"synth@{world['version']}:1:2", "--lake", world["lake"], "--n", "2", "--steps", "3",
              "--bbox", "40,30,90,110"]
    tight = _ok(_run(*common, "--out", tmp_path / "tight"))
    loose = _ok(_run(*common, "--loose-box", "--out", tmp_path / "loose"))
    assert json.loads((loose / "suggest.json").read_text())["fit_box"] is False
    compared = 0
    for a, b in zip(json.loads((tight / "suggest.json").read_text())["suggestions"],
                    json.loads((loose / "suggest.json").read_text())["suggestions"], strict=True):
        cut = np.asarray(Image.open(loose / b["mask"])) > 0
        fitted = np.asarray(Image.open(tight / a["mask"])) > 0
        assert not cut[:, :40].any() and not cut[:, 90:].any() and not cut[:30].any() and not cut[110:].any()
        if a["seed"] == b["seed"] and not b["empty"]:
            assert np.array_equal(fitted, fit_to_box(cut, (40, 30, 90, 110)))
            compared += 1
    assert compared >= 1  # at least one tight suggestion was checked to be its loose one stretched onto the box


def test_fit_to_box_stretches_the_mask_onto_the_box():
    m = np.zeros((60, 80), bool)
    m[20:30, 30:40] = True  # a 10x10 square inside the box
    m[25, 40:44] = True  # and a 1-pixel-high arm to its right
    out = fit_to_box(m, (10, 5, 70, 55))  # a 60x50 box
    assert mask_box(out) == (10, 5, 70, 55)
    assert not out[:5].any() and not out[55:].any() and not out[:, :10].any() and not out[:, 70:].any()
    # the shape is kept: the square fills most of the box, the arm becomes a stretched band on the right
    assert out[5:55, 10:52].mean() > 0.95 and out[5:55, 58:70].mean() < 0.3
    assert not fit_to_box(np.zeros((60, 80), bool), (10, 5, 70, 55)).any()
    stray = m.copy()
    stray[0:3, 0:3] = True  # outside the box: not the object, ignored (the same cut as --loose-box)
    assert np.array_equal(fit_to_box(stray, (10, 5, 70, 55)), out)
    big = np.ones((60, 80), bool)  # larger than the box: shrunk into it, not cut
    assert mask_box(fit_to_box(big, (10, 5, 70, 55))) == (10, 5, 70, 55)


def test_insert_keeps_every_pixel_outside_the_dilated_mask(world, tmp_path):
    out = _ok(_run("insert", world["image"], "--object", "person", "--context", "a park", "--layout-from",
                   "synth:1:3", "--lake", world["lake"], "--bbox", "30,20,110,115", "--n", "2", "--steps", "3",
                   "--inpainter", world["inpainter"], "--inpaint-steps", "2", "--out", tmp_path / "i"))
    before = np.asarray(Image.open(world["image"]).convert("RGB"))
    after = np.asarray(Image.open(out / "inserted.png"))
    dilated = np.asarray(Image.open(out / "dilated-mask.png")) > 0
    mask = np.asarray(Image.open(out / "mask.png")) > 0
    assert after.dtype == np.uint8 and after.shape == before.shape
    assert mask.any() and (dilated | ~mask).all()  # the dilated mask contains the mask
    assert np.array_equal(after[~dilated], before[~dilated])  # uint8, bit for bit
    assert np.any(after[mask] != before[mask])
    rec = json.loads((out / "insert.json").read_text())
    assert rec["mask_source"] == f"smartmask:{world['model']}" and rec["inpainter"].startswith("controlnet-sd15:")


def test_box_baseline_changes_pixels_inside_the_whole_box(world, tmp_path):
    x0, y0, x1, y1 = 40, 30, 100, 100
    out = _ok(_run("insert", world["image"], "--object", "boat", "--context", "a lake", "--mask-from", "box",
                   "--bbox", f"{x0},{y0},{x1},{y1}", "--lake", world["lake"], "--inpainter", world["inpainter"],
                   "--inpaint-steps", "2", "--out", tmp_path / "b"))
    before = np.asarray(Image.open(world["image"]).convert("RGB"))
    after = np.asarray(Image.open(out / "inserted.png"))
    changed = np.any(after != before, axis=2)
    box = changed[y0:y1, x0:x1]
    assert box.mean() > 0.9 and box.any(axis=0).all() and box.any(axis=1).all()
    dilated = np.asarray(Image.open(out / "dilated-mask.png")) > 0
    assert not changed[~dilated].any()


def _bomb(path: Path) -> Path:
    Image.new("1", (9000, 9000)).save(path)  # 81 MP of zeros: a few KB on disk
    return path


@pytest.mark.parametrize("case", ["not-an-image", "bomb", "bbox-outside", "empty-object", "unknown-model",
                                  "no-layout", "missing-segmenter", "bad-point"])
def test_bad_input_exits_2_with_one_line(world, tmp_path, case):
    image = world["image"]
    extra: list = ["--layout-from", "synth:1:2"]
    obj = "person"
    if case == "not-an-image":
        image = tmp_path / "notes.png"
        image.write_text("hello")
    elif case == "bomb":
        image = _bomb(tmp_path / "bomb.png")
    elif case == "bbox-outside":
        extra += ["--bbox", "100,50,400,90"]
    elif case == "empty-object":
        obj = "  "
    elif case == "unknown-model":
        extra += ["--model", "0123456789abcdef"]
    elif case == "no-layout":
        extra = []
    elif case == "missing-segmenter":
        extra = ["--segmenter", str(tmp_path / "nope")]
    elif case == "bad-point":
        extra += ["--point", "12,abc"]
    r = _run("suggest", image, "--object", obj, "--context", "c", "--lake", world["lake"], "--steps", "2",
             "--out", tmp_path / "o", *extra)
    assert r.exit_code == 2, (r.output, r.exception)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert not (tmp_path / "o" / "suggest.json").exists()


_PEAK = textwrap.dedent("""
    # argv: WARMUP_IMAGE WARMUP_BOX WARMUP_OUT -- CLI ARGS... (`insert IMAGE ... --bbox BOX ... --out OUT`)
    import json, resource, sys, tracemalloc
    import torch
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile
    torch.set_num_threads(1)
    from flows.cli import app

    sep = sys.argv.index("--")
    (warm_image, warm_box, warm_out), args = sys.argv[1:4], sys.argv[sep + 1:]
    # A first insert on a small image imports everything the path imports lazily (diffusers, transformers...), so
    # the measured one counts what the insertion allocates, not module objects. Nothing is cached between the two:
    # the measured call loads its models again.
    warm = list(args)
    warm[1], warm[warm.index("--bbox") + 1], warm[warm.index("--out") + 1] = warm_image, warm_box, warm_out
    assert app(warm, standalone_mode=False) in (None, 0), "the warm-up insert failed"

    def torch_cpu_peak(prof) -> int:
        # torch's CPU allocator reports every allocation and free to the profiler with its running total of live
        # bytes (ProfiledCPUMemoryReporter): the peak of that total over the call.
        stack, events = list(prof.profiler.kineto_results.experimental_event_tree()), []
        while stack:
            e = stack.pop()
            stack.extend(e.children)
            if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu":
                events.append((e.start_time_ns, e.extra_fields.total_allocated, e.extra_fields.alloc_size))
        events.sort()
        base = events[0][1] - events[0][2]  # live before the first one
        return max(total for _, total, _ in events) - base

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        tracemalloc.start()  # numpy registers its array buffers with tracemalloc
        assert app(args, standalone_mode=False) in (None, 0), "the measured insert failed"
        numpy_peak = tracemalloc.get_traced_memory()[1]  # before the profiler turns its events into Python objects
        tracemalloc.stop()
    print("PEAK", json.dumps({"python_numpy": numpy_peak, "torch_cpu": torch_cpu_peak(prof),
                              "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), file=sys.stderr)
""")


def _peak_insert(world, image: Path, box: str, out: Path) -> dict:
    """Peak bytes one `smartmask insert` allocates: Python objects and numpy arrays (tracemalloc) and torch CPU
    tensors (the profiler's allocator events), each from the start of the call; in a fresh process."""
    warm = out.parent / "warm.png"
    if not warm.exists():
        _photo(warm, 512, 512)
    r = subprocess.run([sys.executable, "-c", _PEAK, str(warm), "150,120,350,460", str(out) + "-warmup", "--",
                        "insert", str(image), "--object", "person", "--context",
                        "a person on a street", "--segmenter", str(world["seg"]), "--lake", str(world["lake"]),
                        "--bbox", box, "--n", "2", "--steps", "2", "--inpainter", world["inpainter"],
                        "--inpaint-steps", "2", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stderr.rsplit("PEAK", 1)[1].strip().splitlines()[0])


def _photo(path: Path, W: int, H: int) -> Path:
    """A smooth synthetic 'photo' (gradients and a disc): cheap to encode at 4000×3000."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([xx / W * 255, yy / H * 255, ((xx - W / 2) ** 2 + (yy - H / 2) ** 2 < (H / 4) ** 2) * 200.0], -1)
    Image.fromarray(img.astype(np.uint8)).save(path, compress_level=1)
    return path


# One byte per pixel is one full-size uint8 plane or bool mask. The insertion keeps the photo, the output and a few
# masks at full size (paste.py: "Full-size arrays are only uint8 ... or bool"; measured ~11.6 B/px: decoded photo and
# its decode copy, output, mask, dilated mask, one bool mask per layout region); one float32 RGB copy of the photo
# alone would add 12 B/px.
MAX_BYTES_PER_EXTRA_PIXEL = 16


@pytest.mark.slow
def test_large_photo_insert_peak_memory(world, tmp_path):
    """What one insert allocates on a 4000x3000 photo vs a 512x512 one (45.8x the pixels), in fresh processes.

    The models only ever see a crop at their native side, so their tensors (torch's CPU allocator, as the profiler
    reports it) cost the same within 2x. The pixels themselves cannot: the decoded photo alone is 36 MB, more than
    half of the whole 512x512 insert, so the Python/numpy side (tracemalloc) is bounded per extra pixel instead,
    at a few full-size uint8/bool planes. (Process RSS, measured before, was dominated by ~1 GB of libraries and
    would have hidden a float copy of the photo.) PIL's own decode/encode buffers are in neither count."""
    small = _peak_insert(world, _photo(tmp_path / "small.png", 512, 512), "150,120,350,460", tmp_path / "s")
    big = _peak_insert(world, _photo(tmp_path / "big.png", 4000, 3000), "1200,700,2700,2700", tmp_path / "b")
    per_pixel = (big["python_numpy"] - small["python_numpy"]) / (4000 * 3000 - 512 * 512)
    print(f"insert peak, 512x512 vs 4000x3000: torch CPU {small['torch_cpu'] / 2**20:.1f} vs "
          f"{big['torch_cpu'] / 2**20:.1f} MiB; Python/numpy {small['python_numpy'] / 2**20:.1f} vs "
          f"{big['python_numpy'] / 2**20:.1f} MiB ({per_pixel:.1f} B per extra pixel); "
          f"RSS {small['rss_kb'] / 1024:.0f} vs {big['rss_kb'] / 1024:.0f} MiB")
    assert 0 < big["torch_cpu"] <= 2 * small["torch_cpu"], (small, big)
    assert per_pixel <= MAX_BYTES_PER_EXTRA_PIXEL, (small, big)
    inserted = np.asarray(Image.open(tmp_path / "b" / "inserted.png"))
    assert inserted.shape == (3000, 4000, 3)
