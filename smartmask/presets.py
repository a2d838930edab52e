"""The two presets, each a whole recipe: the network, how samples are drawn, how it trains, how it samples masks.

- `tiny`: diffusion in PIXEL space at 32×32. A random-init VAE cannot decode masks, and a binary mask at 32×32 is
  already small, so the U-Net denoises the mask itself (1 channel in [-1, 1]). Everything is random-init (U-Net,
  layout encoder, CLIP text encoder) and trains on 2 CPU cores in minutes.
- `sd15`: U-Net / VAE / CLIP text encoder from a Stable Diffusion 1.5 checkpoint in diffusers layout (a local
  directory or a hub id, through `smartmask.pretrained.load_pretrained`). The mask is repeated to 3 channels,
  encoded by the frozen VAE, and diffusion runs in latent space (resolution / 8).

The measurements behind each value are in docs/experiments.md. Test-size configs are not presets: they are the
configs' `for_tests()` factories.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartmask.inference.suggest import SuggestConfig
from smartmask.model.config import ModelConfig
from smartmask.training.loop import TrainConfig
from smartmask.training.samples import SampleConfig

# The tiny U-Net (~1.4M parameters): 3 levels (32, 16, 8), attention (self + cross to the texts) only at 8×8:
# attention at 32×32 made a CPU step ~10× slower, and the layout reaches the U-Net through conv_in at full
# resolution anyway. `in_channels` / `out_channels` come from the network (mask + layout channels; 1 out).
TINY_UNET: dict[str, Any] = {
    "sample_size": 32,
    "layers_per_block": 1,
    "block_out_channels": (32, 64, 64),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
# The tiny CLIP text encoder (random-init, trained with the U-Net); its tokenizer is
# `network.tiny_clip_tokenizer()` (1000 tokens: 998 BPE tokens, then <|startoftext|>=998, <|endoftext|>=999).
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": 1000,
    "max_position_embeddings": 77,
    "bos_token_id": 998,
    "eos_token_id": 999,
    "pad_token_id": 999,
}


def tiny_model(**overrides: Any) -> ModelConfig:
    """Pixel-space 32×32, a ~1.4M-parameter U-Net, random-init tiny CLIP; trains on 2 CPU cores."""
    values: dict[str, Any] = dict(
        preset="tiny",
        resolution=32,
        layout_channels=8,
        layout_width=32,
        # Cosine schedule: at 32×32 in pixel space a linear schedule is nearly pure noise over its last quarter
        # (Nichol & Dhariwal 2021); the cosine schedule spreads the signal-to-noise ratio evenly.
        beta_schedule="squaredcos_cap_v2",
        clip_sample=True,
        timestep_power=0.6,  # high-noise steps drawn more often: the shape is decided there
        unet=TINY_UNET,
        text=TINY_TEXT,
        max_text_tokens=32,  # template captions of the synthetic world are ~10-25 word tokens
        # Each class of the synthetic world is a shape template, so the object name matters: pooled into the time
        # embedding it reaches every block, not only the one 8×8 attention level; and a random-init CLIP has
        # nothing to preserve, so it trains with the U-Net.
        object_embedding=True,
        train_text_encoder=True,
        # The object-centred view: under a box the mask is drawn in a window around it, so a 1%-object gets the
        # whole grid instead of 3×3 cells (+0.100 vs -0.067 over the box at image size, equal 400 steps).
        focus_view=True,
    )
    values.update(overrides)
    return ModelConfig(**values)


def sd15_model(base_model: str, **overrides: Any) -> ModelConfig:
    """Latent space (VAE /8) at 256×256 masks, everything but E_φ initialised from `base_model`."""
    values: dict[str, Any] = dict(
        preset="sd15",
        resolution=256,
        # A semantic layout carries more per 8×8 patch than the 4 VAE channels InstructPix2Pix concatenates; the
        # extra conv_in input channels start at zero, so they cost nothing at step 0.
        layout_channels=16,
        layout_width=32,
        # Stable Diffusion 1.5's own schedule, so the pretrained U-Net sees the noise levels it knows.
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        base_model=str(base_model),
        max_text_tokens=77,
    )
    values.update(overrides)
    return ModelConfig(**values)


@dataclass(frozen=True, kw_only=True, slots=True)
class Recipe:
    """Everything a preset decides. `smartmask train` runs `model` / `sample` / `train`; `suggest` is how a model
    trained this way samples masks by default."""

    preset: str
    model: ModelConfig
    sample: SampleConfig
    train: TrainConfig
    suggest: SuggestConfig


# The tiny preset's smallest training target, as a share of the image: the default eval set's floor
# (EvalSetConfig.min_area_frac). It was 1% while the model drew on the global 32×32 grid only (a smaller object is a
# few cells there); the object-centred view gives a small object the whole grid, and training on small targets
# lifted the < 1% bin at equal steps (docs/experiments.md, "Quality levers"). Below 1% they train under a box only.
TINY_TARGET_FLOOR = 0.0005
TINY_BOX_ONLY_BELOW = 0.01


def tiny(min_target_area: int = 16, box_only_below: int = 0) -> Recipe:
    """The tiny preset. `min_target_area`: the smallest target in source pixels; targets below `box_only_below`
    pixels train under a box only (both for a dataset: `tiny_target_areas`), where the object-centred view makes them learnable (SampleConfig.box_only_below)."""
    return Recipe(
        preset="tiny",
        model=tiny_model(),
        # Box-heavy guidance mix (none / box / blob / scribble): the box is the control users give most, and a few
        # minutes of CPU training cannot learn all four equally well.
        sample=SampleConfig(resolution=32, min_target_area=min_target_area, guidance_mix=(0.1, 0.6, 0.15, 0.15),
                            focus_view=True, box_only_below=box_only_below),
        train=TrainConfig(steps=2000, batch_size=32, lr=1e-3, warmup_steps=20, checkpoint_every=50, val_every=50,
                          ema_decay=0.99),
        suggest=SuggestConfig(),
    )


def sd15(base_model: str) -> Recipe:
    """The sd15 preset from a Stable Diffusion 1.5 directory or hub id."""
    if not base_model:
        raise ValueError("the sd15 preset needs a base model (a Stable Diffusion 1.5 directory or hub id)")
    model = sd15_model(base_model)
    return Recipe(preset="sd15", model=model, sample=SampleConfig(resolution=model.resolution),
                  train=TrainConfig(lr=1e-5), suggest=SuggestConfig())


def recipe(preset: str, *, base_model: str | None = None, min_target_area: int = 16,
           box_only_below: int = 0) -> Recipe:
    if preset == "tiny":
        return tiny(min_target_area, box_only_below)
    if preset == "sd15":
        return sd15(base_model or "")
    raise ValueError(f"unknown preset {preset!r}: expected tiny or sd15")


def target_floor_area(lake: Path, name: str, version: str, frac: float = TINY_TARGET_FLOOR) -> int:
    """`frac` of a dataset version's median image area in pixels, at least 16: by default the tiny preset's smallest
    target (TINY_TARGET_FLOOR)."""
    return _share(_median_image_area(lake, name, version), frac)


def tiny_target_areas(lake: Path, name: str, version: str, floor: float = TINY_TARGET_FLOOR) -> dict[str, int]:
    """`tiny`'s two areas for a dataset version from one read of its image sizes: `min_target_area` (`floor` of the
    median image) and `box_only_below` (TINY_BOX_ONLY_BELOW of it)."""
    median = _median_image_area(lake, name, version)
    return {"min_target_area": _share(median, floor), "box_only_below": _share(median, TINY_BOX_ONLY_BELOW)}


def _share(median: int | None, frac: float) -> int:
    return max(16, int(frac * median)) if median is not None else 16


def _median_image_area(lake: Path, name: str, version: str) -> int | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from smartmask.lake.paths import dataset_dir

    t = pq.read_table(dataset_dir(lake, name, version) / "images", columns=["width", "height"])
    areas = pc.multiply(pc.cast(t.column("width"), "int64"), pc.cast(t.column("height"), "int64"))
    return pc.approximate_median(areas).as_py() if t.num_rows else None
