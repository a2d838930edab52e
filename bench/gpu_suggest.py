"""GPU benchmark: latency of 4 SmartMask mask suggestions at 512x512 vs diffusers' StableDiffusionInpaintPipeline.

    python bench/gpu_suggest.py [--n 4] [--steps 20] [--repeats 5] [--warmup 2] [--baseline-dtype fp16] [--lake DIR]
    ./dev sh python bench/gpu_suggest.py --cpu-smoke      # tiny, on CPU: proves the script runs, measures nothing

Runs with no edits where `bench/gpu_train_step.py` runs (PyTorch and transformers, neither this package nor
diffusers installed, no network), reusing its set-up: importing it puts the diffusers wheel of bench/wheels/ and
this checkout ahead of site-packages, and its `sd15_random_dir` writes the full Stable Diffusion 1.5 architecture
with random weights (no weights exist offline) to a temporary directory in diffusers layout. Random weights give
meaningless pictures but the same work per call as trained ones, which is all a latency needs.

Both sides produce 4 outputs for one input (one layout / one image) and are timed from the input on the host to
the outputs on the host (median of `--repeats` calls after `--warmup` >= 1 calls, each timed call between two
torch.cuda.synchronize(); the first warm-up call also counts the U-Net calls and their batch sizes).
  ours:     SmartMask sd15 (loaded through the production loader, `presets.sd15_model(dir, resolution=512)` →
            `SmartMask.build`), every module cast to bf16, diffusers' default attention processor (SDPA on torch 2;
            printed). `sample_masks(model, layout 1x3x512x512, [obj], [ctx], n=4, steps=20, scheduler="dpm")`:
            DPM-Solver++ (2nd order), 20 steps, the three CFG branches batched into ONE U-Net call per step
            (U-Net batch 3*4 = 12, 2x77 text tokens), then VAE decode at 512 and threshold; masks copied to host.
  baseline: `StableDiffusionInpaintPipeline` over the same random components but a 9-channel-input U-Net (the
            inpainting architecture; same weights elsewhere), at its defaults: 50 steps, guidance_scale 7.5
            (batched CFG, U-Net batch 2*4 = 8), strength 1.0, output_type "pil", with num_images_per_prompt=4 on
            a 512x512 PIL image + mask. Its dtype is the one its docs load it in
            (`from_pretrained(..., torch_dtype=torch.float16)`): fp16 (`--baseline-dtype` changes it; fp32 is
            what a call without torch_dtype would give). Scheduler: DDIM with the scheduler config of the SD 1.5
            inpainting checkpoint. Offline impossibilities: no safety checker (safety_checker=None); the
            pipeline is assembled from components each loaded with `from_pretrained(..., torch_dtype)` (what
            the pipeline's own `from_pretrained` does) since no pipeline checkpoint exists; progress bar off.
Work per call: the baseline evaluates the U-Net on 50 x 8 = 400 samples, ours on 20 x 12 = 240 (1.67x fewer);
CLIP and the VAE decode of 4 images at 512 cost about the same on both sides. So at equal speed per U-Net sample
the ratio lands near 1.6-1.7x, and >= 2x needs ours to be faster per sample as well (the printed "U-Net
sample-evaluations" ratio is this count, for comparison with the measured one).
Prints both median latencies, baseline/ours (target >= 2.0), peak GPU memory of each (weights included), U-Net
calls x batch of each, the attention processors in use and the GPU; a JSON row goes to bench/results/ via
bench/_results.py (and to <lake>/runs/kind=bench/ with --lake). `--cpu-smoke` records nothing.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, also when imported from elsewhere
import torch  # noqa: E402
from _results import record  # noqa: E402

# Importing gpu_train_step puts bench/wheels/diffusers-*.whl and this checkout first on sys.path (before
# site-packages) and sets HF_HUB_OFFLINE. diffusers and smartmask are imported only after it (inside functions).
from gpu_train_step import sd15_random_dir, sync  # noqa: E402

TARGET = 2.0
OBJ, CTX = "woman", "a woman beside the river on a sunny day"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# scheduler/scheduler_config.json of the Stable Diffusion 1.5 inpainting checkpoint
# (stable-diffusion-v1-5/stable-diffusion-inpainting).
INPAINT_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)


def latencies(call, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        call()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def unet_calls(unet, call) -> tuple[object, int, list[int]]:
    """Runs `call` once with a hook on `unet`: (its result, number of U-Net forward calls, their batch sizes)."""
    batches: list[int] = []
    handle = unet.register_forward_pre_hook(lambda _m, args, kwargs: batches.append(int(
        (args[0] if args else kwargs["sample"]).shape[0])), with_kwargs=True)
    try:
        result = call()
    finally:
        handle.remove()
    return result, len(batches), sorted(set(batches))


def attention_processors(unet) -> list[str]:
    return sorted({type(p).__name__ for p in unet.attn_processors.values()})


def reset_memory(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(dev: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")


def bench_ours(base: Path, dev: torch.device, res: int, n: int, steps: int, repeats: int, warmup: int) -> dict:
    from smartmask import presets
    from smartmask.model.network import SmartMask
    from smartmask.model.sampling import sample_masks

    reset_memory(dev)
    model = SmartMask.build(presets.sd15_model(str(base), resolution=res)).to(dev, torch.bfloat16).eval()
    layout = torch.rand(1, 3, res, res, generator=torch.Generator().manual_seed(0))  # on the host, as a user's

    def call():
        masks = sample_masks(model, layout, [OBJ], [CTX], n=n, steps=steps, scheduler="dpm")
        return masks.cpu()

    masks, calls, batches = unet_calls(model.unet, call)  # the first warm-up call
    assert masks.shape == (1, n, res, res) and masks.dtype == torch.bool, masks.shape
    times = latencies(call, repeats, max(warmup - 1, 0))
    return {"dtype": str(model.dtype).removeprefix("torch."), "scheduler": "DPMSolverMultistep (dpmsolver++, 2)",
            "steps": steps, "unet_calls": calls, "unet_batch": batches, "attention": attention_processors(model.unet),
            "latency_s": statistics.median(times), "latencies_s": times, "peak_gib": peak_gib(dev)}


def bench_baseline(base: Path, dev: torch.device, res: int, n: int, dtype: torch.dtype, repeats: int,
                   warmup: int, smoke_steps: int | None = None) -> dict:
    import numpy as np
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    reset_memory(dev)
    # The inpainting U-Net: SD 1.5's with conv_in taking 4 latent + 1 mask + 4 masked-image-latent channels.
    # Each component loaded with torch_dtype, as `StableDiffusionInpaintPipeline.from_pretrained(...,
    # torch_dtype=...)` loads them.
    unet = UNet2DConditionModel.from_pretrained(base / "unet", in_channels=9, low_cpu_mem_usage=False,
                                                ignore_mismatched_sizes=True, torch_dtype=dtype)
    pipe = StableDiffusionInpaintPipeline(
        vae=AutoencoderKL.from_pretrained(base / "vae", torch_dtype=dtype),
        text_encoder=CLIPTextModel.from_pretrained(base / "text_encoder", dtype=dtype),
        tokenizer=CLIPTokenizer.from_pretrained(base / "tokenizer"), unet=unet,
        scheduler=DDIMScheduler(**INPAINT_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    ).to(dev)
    pipe.set_progress_bar_config(disable=True)
    default_side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8))
    mask = np.zeros((res, res), np.uint8)
    mask[res // 4 : 3 * res // 4, res // 3 : 2 * res // 3] = 255
    mask_image = Image.fromarray(mask)
    # height/width are the pipeline's defaults (unet.sample_size * vae_scale_factor = 512) on the sd15 run; given
    # explicitly only so the tiny smoke components run at the same resolution as ours.
    overrides = {} if default_side == res else {"height": res, "width": res}
    if smoke_steps is not None:  # --cpu-smoke only; the measurement keeps the default 50
        overrides["num_inference_steps"] = smoke_steps

    def call():
        with warnings.catch_warnings():  # random weights can give NaN pixels; numpy warns when casting them
            warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)
            return pipe(prompt=f"{OBJ}, {CTX}", image=image, mask_image=mask_image, num_images_per_prompt=n,
                        **overrides).images

    images, calls, batches = unet_calls(pipe.unet, call)  # the first warm-up call
    assert len(images) == n and images[0].size == (res, res), (len(images), images[0].size)
    times = latencies(call, repeats, max(warmup - 1, 0))
    params = inspect.signature(type(pipe).__call__).parameters  # the defaults the call above relied on
    return {"dtype": str(pipe.unet.dtype).removeprefix("torch."), "scheduler": type(pipe.scheduler).__name__,
            "steps": overrides.get("num_inference_steps", params["num_inference_steps"].default),
            "guidance_scale": params["guidance_scale"].default, "output_type": params["output_type"].default, "unet_calls": calls, "unet_batch": batches,
            "attention": attention_processors(pipe.unet), "latency_s": statistics.median(times),
            "latencies_s": times, "peak_gib": peak_gib(dev)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4, help="suggestions / images per prompt")
    ap.add_argument("--steps", type=int, default=20, help="our DPM-Solver steps (the baseline keeps its 50)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--baseline-dtype", choices=sorted(DTYPES), default="fp16")
    ap.add_argument("--lake", default=None, help="lake to record the bench row in (default: only bench/results)")
    ap.add_argument("--cpu-smoke", action="store_true")
    a = ap.parse_args()
    import diffusers

    import smartmask

    dev = torch.device("cuda" if torch.cuda.is_available() and not a.cpu_smoke else "cpu")
    if a.cpu_smoke:
        torch.set_num_threads(1)  # on a shared few-core machine, spinning OpenMP threads make it ~10x slower
    if dev.type != "cuda" and not a.cpu_smoke:
        sys.exit("no CUDA device: this is a GPU benchmark (use --cpu-smoke to check that the script runs)")
    # Smoke: 16x16 (8x8 latents under the tiny 2x VAE), 2 steps on both sides, one call each.
    res = 16 if a.cpu_smoke else 512
    steps, repeats, warmup = (2, 1, 1) if a.cpu_smoke else (a.steps, a.repeats, max(a.warmup, 1))
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    print(f"diffusers {diffusers.__version__} from {Path(diffusers.__file__).parent}; smartmask from "
          f"{Path(smartmask.__file__).parent}; torch {torch.__version__}; device {gpu}")

    with tempfile.TemporaryDirectory(prefix="sd15-random-") as tmp:
        t0 = time.perf_counter()
        base = sd15_random_dir(Path(tmp), tiny=a.cpu_smoke)
        print(f"random {'tiny' if a.cpu_smoke else 'SD 1.5'} components written in {time.perf_counter() - t0:.0f} s "
              "(not timed)")
        ours = bench_ours(base, dev, res, a.n, steps, repeats, warmup)
        reset_memory(dev)
        # fp16 kernels on the CPU are far too slow even for the tiny smoke components: the smoke runs the
        # baseline in fp32 (ours stays bf16, so the smoke still exercises our bf16 path).
        base_dtype = torch.float32 if a.cpu_smoke else DTYPES[a.baseline_dtype]
        base_row = bench_baseline(base, dev, res, a.n, base_dtype, repeats, warmup,
                                  smoke_steps=steps if a.cpu_smoke else None)

    ratio = base_row["latency_s"] / ours["latency_s"]
    work = (base_row["unet_calls"] * max(base_row["unet_batch"])) / (ours["unet_calls"] * max(ours["unet_batch"]))
    for name, r in (("ours", ours), ("baseline", base_row)):
        print(f"{name + ':':9} {r['latency_s'] * 1000:8.1f} ms median for {a.n} at {res}x{res} "
              f"({r['dtype']}, {r['scheduler']}, {r['unet_calls']} U-Net calls x batch {r['unet_batch']}, "
              f"attention {'/'.join(r['attention'])}), peak {r['peak_gib']:.2f} GiB")
    print(f"baseline steps / guidance / output type: {base_row['steps']} / {base_row['guidance_scale']} / "
          f"{base_row['output_type']!r} (pipeline defaults{', steps cut for the smoke' if a.cpu_smoke else ''})")
    print(f"speed-up baseline/ours: {ratio:.2f}x (target >= {TARGET}x); U-Net sample-evaluations baseline/ours: "
          f"{work:.2f}x")
    if a.cpu_smoke:
        print("(smoke, not a measurement; nothing recorded)")
        return
    if any("2_0" not in p and "SDPA" not in p.upper() for r in (ours, base_row) for p in r["attention"]):
        print("warning: an attention processor other than SDPA (AttnProcessor2_0) is in use")
    row = {"bench": "gpu_suggest", "device": gpu, "torch": torch.__version__, "diffusers": diffusers.__version__,
           "n": a.n, "resolution": res, "repeats": repeats, "warmup": warmup,
           **{f"ours_{k}": v for k, v in ours.items()}, **{f"baseline_{k}": v for k, v in base_row.items()},
           "ratio": ratio, "unet_work_ratio": work, "target": TARGET, "met": ratio >= TARGET,
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    record("gpu_suggest", row, lake=a.lake)


if __name__ == "__main__":
    main()
