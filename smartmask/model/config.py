"""`ModelConfig`: everything that defines a SmartMask network, JSON-safe for the model registry.

Pure Python (no torch import) so that the CLI and the registry can read and validate configs cheaply.

The presets (`tiny`, `sd15`) and the reasons behind their values live in `smartmask.presets`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("tiny", "sd15")  # built in smartmask.presets
PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")

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
    """A SmartMask network. The presets build it: `smartmask.presets.tiny_model()` / `sd15_model(base_model)`."""

    preset: str
    # Side of the (square) layout S~ and of the mask, in pixels. The U-Net runs at this size (tiny, pixel
    # space) or at resolution / 8 (sd15, latent space).
    resolution: int
    # x0-prediction: a binary mask is a low-entropy target that predicting it directly learns far faster than
    # noise (docs/experiments.md, "Parameterisation"). Kept for sd15 until a GPU run says otherwise.
    prediction_type: str = "sample"
    layout_channels: int  # output channels of the layout encoder E_phi, concatenated to z_t
    layout_width: int = 32  # E_phi's first hidden width; doubled at each stride-2 stage, capped at 256
    # Classifier-free guidance dropout, drawn independently per sample (InstructPix2Pix style): with
    # probability text_dropout both texts become "", with probability layout_dropout the layout is dropped.
    text_dropout: float = 0.1
    layout_dropout: float = 0.1
    num_train_timesteps: int = 1000
    # Training timesteps t = floor(u^p * T), u uniform: p < 1 draws high-noise steps more often, where a mask's
    # shape is decided (x_t at low noise already shows it). sd15 keeps 1: its U-Net was pretrained on uniform steps.
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
    # T_obj mean-pooled into the U-Net's time embedding (diffusers class_embed_type="projection"), so the object
    # name reaches every ResNet block, not only the cross-attention (tiny attends only at 8×8). sd15 (False): SD's
    # cross-attention already reads CLIP at three resolutions.
    object_embedding: bool = False
    # Train the text encoder with the U-Net. Tiny: its CLIP is random-init, so frozen it is an arbitrary random
    # map with nothing to preserve (Latent Diffusion trained its text transformer jointly, from scratch, too).
    # sd15 (False): the pretrained CLIP stays frozen, as in the paper.
    train_text_encoder: bool = False
    # The object-centred view (smartmask.conditioning.focus): E_phi reads the window around a guidance box stacked on
    # the global layout (6 channels), and a box-guided mask is drawn in that window. Tiny: small objects get the
    # whole grid (docs/experiments.md, "Model quality by object size"). sd15 keeps the paper's single view.
    focus_view: bool = False
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

    @property
    def layout_in_channels(self) -> int:
        """Channels of the guided layout the model reads: 3 (RGB), 6 with the focus view (focus, then global)."""
        return 6 if self.focus_view else 3

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
