"""GPU benchmark: one SmartMask sd15 training step at 512x512 in bf16 vs a plain InstructPix2Pix-style U-Net step.

    python bench/gpu_train_step.py [--batch 16] [--steps 20] [--out bench/results]

Made to run with no edits on a GPU machine that has PyTorch and transformers but neither this package nor
diffusers installed and no network: diffusers comes from the wheel in bench/wheels/ (pure Python, imported
straight from the zip), smartmask from this checkout's source tree. No weights exist there either, so both models
are the full Stable Diffusion 1.5 architecture with random weights, written once to a temp directory in
diffusers layout and loaded through the production loader (`presets.sd15_model(dir)` → `SmartMask.build`).

Both runs: bf16 autocast, SDPA attention (diffusers' default on torch 2), AdamW over the U-Net (and, for
SmartMask, the layout encoder E_phi), frozen VAE and CLIP text encoder, 512x512 images → 64x64 latents.
  ours:     SmartMask.training_loss: VAE-encode the target mask, E_phi(layout) concatenated to z_t
            (conv_in 4 → 4+16), two CLIP sequences (T_obj ++ T_context, 154 tokens) for cross-attention.
  baseline: diffusers UNet2DConditionModel with an 8-channel conv_in (InstructPix2Pix): VAE-encode target and
            conditioning image, concatenate latents, one CLIP sequence (77 tokens), epsilon MSE.
Prints samples/s, peak memory, MFU (model FLOPs counted with torch.utils.flop_counter on one step, against the
GPU's dense bf16 peak) and ours/baseline throughput. Targets on an H100: ratio >= 1.0, MFU >= 40%.
`--cpu-smoke` runs the same code tiny on CPU (a check that the script works, not a measurement: records nothing).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
for whl in sorted((HERE / "wheels").glob("diffusers-*.whl")):
    sys.path.insert(0, str(whl))  # before site-packages: the bundled diffusers wins
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense, no sparsity


def peak_tflops() -> float:
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), float("nan"))


def sd15_random_dir(out: Path, tiny: bool) -> Path:
    """A Stable-Diffusion-1.5-layout directory with random weights (no weights can be downloaded)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from smartmask.model.network import tiny_clip_tokenizer

    torch.manual_seed(0)
    if tiny:
        unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                    attention_head_dim=8, norm_num_groups=32)
        vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                            num_attention_heads=4, vocab_size=1000, max_position_embeddings=77))
    else:  # the SD 1.5 configs (runwayml/stable-diffusion-v1-5), written out
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=512)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                            num_attention_heads=12, vocab_size=49408, max_position_embeddings=77,
                                            projection_dim=768, hidden_act="quick_gelu"))
    for sub, m in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        m.save_pretrained(out / sub)
    tiny_clip_tokenizer().save_pretrained(out / "tokenizer")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(out / "scheduler")
    return out


def timed(step, n: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - t0) / n


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def count_flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return float(fc.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--cpu-smoke", action="store_true")
    a = ap.parse_args()
    import diffusers

    from smartmask import presets
    from smartmask.model.network import SmartMask

    dev = torch.device("cuda" if torch.cuda.is_available() and not a.cpu_smoke else "cpu")
    res = 64 if a.cpu_smoke else 512
    batch, steps, warmup = (2, 2, 1) if a.cpu_smoke else (a.batch, a.steps, a.warmup)
    print(f"diffusers {diffusers.__version__} from {Path(diffusers.__file__).parent}; torch {torch.__version__}; "
          f"device {torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'cpu'}")
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    scratch = Path(tempfile.mkdtemp(prefix="sd15-random-"))
    atexit.register(shutil.rmtree, scratch, True)
    base = sd15_random_dir(scratch, tiny=a.cpu_smoke)

    # ours
    model = SmartMask.build(presets.sd15_model(str(base), resolution=res)).to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    g = torch.Generator().manual_seed(0)
    batch_ours = {"layout": torch.rand(batch, 3, res, res, generator=g).to(dev),
                  "target": (torch.rand(batch, res, res, generator=g) > 0.5).float().to(dev),
                  "obj": ["woman"] * batch, "context": ["a woman beside the river on a sunny day"] * batch}

    def step_ours():
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = model.training_loss(batch_ours)
        loss.backward()
        opt.step()

    t_ours = timed(step_ours, steps, warmup)
    mem_ours = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    flops_ours = count_flops(step_ours)
    model.to("cpu")  # free the GPU for the baseline (the closure above keeps the objects alive)
    opt.state.clear()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    # baseline: plain diffusers InstructPix2Pix-style step
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(base / "unet", in_channels=8, low_cpu_mem_usage=False,
                                                ignore_mismatched_sizes=True).to(dev).train()
    vae = AutoencoderKL.from_pretrained(base / "vae").to(dev).eval().requires_grad_(False)
    text = CLIPTextModel.from_pretrained(base / "text_encoder").to(dev).eval().requires_grad_(False)
    sched = DDPMScheduler.from_pretrained(base / "scheduler")
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    image = torch.rand(batch, 3, res, res, generator=g).to(dev) * 2 - 1
    cond = torch.rand(batch, 3, res, res, generator=g).to(dev) * 2 - 1
    ids = torch.randint(0, 1000, (batch, 77), generator=g).to(dev)

    def step_base():
        opt.zero_grad(set_to_none=True)
        with autocast:
            with torch.no_grad():
                lat = vae.encode(image).latent_dist.sample() * vae.config.scaling_factor
                cond_lat = vae.encode(cond).latent_dist.mode()
                hidden = text(ids)[0]
            noise = torch.randn_like(lat)
            t = torch.randint(0, sched.config.num_train_timesteps, (batch,), device=dev)
            noisy = sched.add_noise(lat, noise, t)
            pred = unet(torch.cat([noisy, cond_lat], 1), t, hidden).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        loss.backward()
        opt.step()

    t_base = timed(step_base, steps, warmup)
    mem_base = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    flops_base = count_flops(step_base)
    peak = peak_tflops()
    row = {"bench": "gpu_train_step", "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu-smoke",
           "batch": batch, "resolution": res, "ours_samples_per_s": batch / t_ours,
           "baseline_samples_per_s": batch / t_base, "ratio": t_base / t_ours, "ours_peak_gib": mem_ours,
           "baseline_peak_gib": mem_base, "ours_tflop_per_step": flops_ours / 1e12,
           "ours_mfu": flops_ours / t_ours / 1e12 / peak, "baseline_mfu": flops_base / t_base / 1e12 / peak,
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"ours:     {row['ours_samples_per_s']:.2f} samples/s, peak {mem_ours:.1f} GiB, "
          f"{row['ours_tflop_per_step']:.2f} TFLOP/step, MFU {row['ours_mfu'] * 100:.1f}% (target >= 40% on H100)")
    print(f"baseline: {row['baseline_samples_per_s']:.2f} samples/s, peak {mem_base:.1f} GiB, "
          f"MFU {row['baseline_mfu'] * 100:.1f}%")
    print(f"ratio ours/baseline throughput: {row['ratio']:.2f} (target >= 1.0)")
    if a.cpu_smoke:  # tiny components on a CPU: the script works, nothing was measured, nothing is recorded
        print("(smoke, not a measurement: nothing recorded)")
        return
    sys.path.insert(0, str(HERE))
    from _results import code_version, machine

    row = {"bench": "gpu_train_step", **row, "code_version": code_version(), "machine": machine()}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_train_step-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
