"""`ModelConfig`: everything that defines a SmartMask network, JSON-safe for the model registry.

Pure Python (no torch import) so that the CLI and the registry can read and validate configs cheaply.

Two presets (DESIGN.md, "Presets"):

- `tiny`: diffusion in PIXEL space at low resolution (32x32). A random-init VAE cannot decode masks, and a
  binary mask at 32x32 is already small, so the U-Net denoises the mask itself (1 channel, scaled to [-1, 1]).
  Everything is random-init (U-Net, layout encoder, CLIP text encoder) and trainable on 2 CPU cores in minutes.
- `sd15`: U-Net / VAE / CLIP text encoder from a Stable Diffusion 1.5 checkpoint in diffusers layout (a local
  directory or a hub id, loaded through `smartmask.models.load_pretrained`). The mask is repeated to 3 channels,
  scaled to [-1, 1], encoded by the frozen VAE, and diffusion runs in latent space (resolution / 8).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("tiny", "sd15")
PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")

# The tiny U-Net (~1.4M parameters): 3 levels (32x32, 16x16, 8x8), attention (self + cross to the texts) only at
# 8x8. `in_channels` / `out_channels` are set by the network from the preset (1 mask channel + `layout_channels`;
# 1 output channel), so they are not part of this dict. Measured on this project's 2-core CPU, forward + backward
# at batch 32: attention at 32x32 (("CrossAttnDownBlock2D", "DownBlock2D"), 0.8M params) ~4.5 s per step, almost
# all of it in 1024-token self-attention; attention at 16x16 ~0.9 s; this layout ~0.45 s. The layout reaches the
# U-Net through conv_in at full resolution, so the fine mask shape never needs full-resolution attention.
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
# The tiny CLIP text encoder (random-init, frozen); its tokenizer is `network.tiny_clip_tokenizer()`
# (1000 tokens: 998 BPE tokens, then <|startoftext|>=998, <|endoftext|>=999).
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


def _frozen(value: Any) -> Any:
    """JSON lists → tuples (recursively), so a config equals itself after a JSON round trip."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {str(k): _frozen(v) for k, v in value.items()}
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """A SmartMask network. `ModelConfig.tiny()` / `ModelConfig.sd15(base_model)` are the presets."""

    preset: str
    # Side of the (square) layout S~ and of the mask, in pixels. The U-Net runs at this size (tiny, pixel
    # space) or at resolution / 8 (sd15, latent space).
    resolution: int
    # x0-prediction by default. Measured on 2 CPU cores (DESIGN.md, "Presets"): a 1M-parameter pixel-space U-Net
    # at 32x32 with box guidance, 180 s of training, reached mask IoU 0.79 predicting x0 ("sample") against only
    # 0.20 predicting noise ("epsilon"). A binary mask is a low-entropy target: predicting it directly gives a
    # useful signal at every timestep, while at low noise an epsilon-predictor must recover tiny residuals and at
    # high noise its x0 estimate (x_t - sqrt(1-a) eps) / sqrt(a) amplifies errors. Kept for sd15 too until a GPU
    # run shows otherwise (SD's U-Net was pretrained for epsilon; "epsilon" is one field away).
    prediction_type: str = "sample"
    layout_channels: int  # output channels of the layout encoder E_phi, concatenated to z_t
    layout_width: int = 32  # E_phi's first hidden width; doubled at each stride-2 stage, capped at 256
    # Classifier-free guidance dropout, drawn independently per sample (InstructPix2Pix style): with
    # probability text_dropout both texts become "", with probability layout_dropout the layout is dropped.
    text_dropout: float = 0.1
    layout_dropout: float = 0.1
    num_train_timesteps: int = 1000
    # Training timesteps t = floor(u^p * T), u uniform: p = 1 is the usual uniform draw; p < 1 draws high-noise
    # steps more often. For x0-prediction of a binary mask the low-noise steps teach little (x_t already shows
    # the mask); the shape is decided at high noise. Tiny: p = 0.6, measured on 2 cores at an equal 150 s budget
    # (held-out box-guided IoU 0.516 vs 0.478 uniform). sd15 keeps 1: its U-Net was pretrained on uniform steps.
    timestep_power: float = 1.0
    beta_schedule: str
    beta_start: float = 0.0001
    beta_end: float = 0.02
    # Clip predicted x0 to [-1, 1] while sampling: right for a pixel-space mask (tiny), wrong for VAE latents.
    clip_sample: bool = False
    unet: dict[str, Any] = field(default_factory=dict)  # UNet2DConditionModel kwargs (tiny; ignored for sd15)
    text: dict[str, Any] = field(default_factory=dict)  # CLIPTextConfig kwargs (tiny; ignored for sd15)
    base_model: str | None = None  # sd15: a Stable-Diffusion-1.5-layout directory or hub id
    max_text_tokens: int  # per text (T_obj and T_context each), padded/truncated to this many tokens
    # T_obj mean-pooled (over its max_text_tokens CLIP states) into the U-Net's time embedding (diffusers
    # class_embed_type="projection"), so the object name reaches every ResNet block at every resolution, not
    # only the cross-attention. Tiny: its only attention is at 8x8, and without this the model ignored the text
    # (text scale 0 sampled as well as 3). sd15 (False): SD's cross-attention reads CLIP at 64, 32 and 16 latents.
    object_embedding: bool = False
    # Train the text encoder with the U-Net. Tiny: its CLIP is random-init, so frozen it is an arbitrary random
    # map with nothing to preserve (Latent Diffusion trained its text transformer jointly, from scratch, too).
    # sd15 (False): the pretrained CLIP stays frozen, as in the paper.
    train_text_encoder: bool = False
    seed: int = 0  # initialisation of everything that is random-init (tiny: all; sd15: E_phi, new conv_in rows)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unet", _frozen(dict(self.unet)))
        object.__setattr__(self, "text", _frozen(dict(self.text)))
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            problems.append(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            problems.append(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if not (math.isfinite(self.timestep_power) and self.timestep_power > 0):
            problems.append(f"timestep_power must be positive, got {self.timestep_power}")
        for name in ("text_dropout", "layout_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1]")
        for name in ("resolution", "layout_channels", "layout_width", "num_train_timesteps", "max_text_tokens"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be positive")
        if self.preset == "sd15":
            if not self.base_model:
                problems.append("preset 'sd15' needs base_model (a Stable Diffusion 1.5 directory or hub id)")
            if self.resolution % 8:
                problems.append(f"sd15 resolution must be a multiple of 8 (the VAE's factor), got {self.resolution}")
        if self.preset == "sd15" and self.object_embedding:
            problems.append("object_embedding is a tiny-preset option (sd15 reads T_obj by cross-attention)")
        if self.preset == "tiny":
            positions = self.text.get("max_position_embeddings", 77)
            if self.max_text_tokens > positions:
                problems.append(f"max_text_tokens {self.max_text_tokens} exceeds the text encoder's {positions}")
            if self.unet.get("cross_attention_dim") != self.text.get("hidden_size"):
                problems.append("tiny: unet.cross_attention_dim must equal text.hidden_size")
        if problems:
            raise ValueError("; ".join(problems))

    # -- presets ----------------------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **overrides: Any) -> ModelConfig:
        """Pixel-space 32x32, a ~1.4M-parameter U-Net, random-init tiny CLIP; trains on 2 CPU cores."""
        values: dict[str, Any] = dict(
            preset="tiny",
            resolution=32,
            layout_channels=8,
            layout_width=32,
            # Cosine schedule: at 32x32 in pixel space a linear schedule is nearly pure noise over its last
            # quarter (Nichol & Dhariwal 2021); the cosine schedule spreads the signal-to-noise ratio evenly.
            beta_schedule="squaredcos_cap_v2",
            clip_sample=True,
            timestep_power=0.6,
            unet=TINY_UNET,
            text=TINY_TEXT,
            # Template captions of the synthetic world are ~10-25 word tokens.
            max_text_tokens=32,
            # Both measured on 2 cores at an equal 150 s budget (held-out / training-split box-guided IoU, box
            # 0.543 / 0.555): 0.578 / 0.596 without them, 0.609 / 0.609 with them, and the text now matters
            # (0.552 on held-out scenes at text scale 0). Each shape class of the world is a template, so the
            # object name plus the box nearly fixes the mask (class-mean shape fitted to the box: 0.665).
            object_embedding=True,
            train_text_encoder=True,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def sd15(cls, base_model: str, **overrides: Any) -> ModelConfig:
        """Latent space (VAE /8) at 256x256 masks, everything but E_phi initialised from `base_model`."""
        values: dict[str, Any] = dict(
            preset="sd15",
            resolution=256,
            # A semantic layout carries more per 8x8 patch than the 4 VAE channels InstructPix2Pix concatenates;
            # the extra conv_in input channels start at zero, so they cost nothing at step 0.
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
        return cls(**values)

    # -- serialisation ----------------------------------------------------------------------------------------
    @property
    def pixel_space(self) -> bool:
        return self.preset == "tiny"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists); `from_dict(json.loads(json.dumps(d)))` equals this config."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {', '.join(unknown)}")
        return cls(**{k: _frozen(v) for k, v in data.items()})

    def content_hash(self) -> str:
        """16 hex digits over the canonical JSON of this config."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
