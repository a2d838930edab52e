"""Inpainters: what fills a mask with an object, behind one small interface, named by a spec string.

Why one interface: `insert`, its box baseline and the plain SD/SDXL inpainting baselines of the evaluation must
run through the same code, so every inpainter is an object with

    id: str        # kind + source(s) + revision, e.g. "controlnet-sd15:/models/sd15@1a2b...+/models/cn@3c4d..."
    native: int    # the square side it works at (512 for SD1.5, 1024 for SDXL, 64 for the tests' tiny models)
    __call__(image (native, native, 3) uint8, mask (native, native) bool, prompt, negative_prompt, seed,
             *, obj=None) -> (native, native, 3) uint8

`obj` (the object's class name) is optional and only read by the `synthetic` inpainter.

Spec strings (`load_inpainter(spec)`; the CLI's `--inpainter`):

    controlnet-sd15[:BASE[+CONTROLNET]]   StableDiffusionControlNetInpaintPipeline
    controlnet-sdxl[:BASE[+CONTROLNET]]   StableDiffusionXLControlNetInpaintPipeline
    sd-inpaint[:BASE]                     StableDiffusionInpaintPipeline (baseline)
    sdxl-inpaint[:BASE]                   StableDiffusionXLInpaintPipeline (baseline)
    synthetic                             the synthetic world's renderer (synthetic images only; not generative)
    DIR                                   a saved pipeline directory; the kind is read from its model_index.json

BASE and CONTROLNET are local directories or hub ids, each loaded through `smartmask.pretrained.load_pretrained`.
The ControlNet is found, in order: after `+`; in BASE's `controlnet/` subfolder (a saved ControlNet-Inpaint
pipeline); else the kind's default hub id. Omitted sources default to the hub ids in `DEFAULTS` (offline and not
cached: a one-line `ModelNotFound`). Sources are split on the first `:` and the last `+`.

ControlNet condition (`inpaint_condition`): the image in [0, 1] with masked pixels set to `control_fill`: -1 for
SD1.5 (the `control_v11p_sd15_inpaint` convention, diffusers' `make_inpaint_condition`) and 1 (white) for SDXL
(the convention of the default `controlnet-inpaint-dreamer-sdxl`, per its model card; not verified offline, and
`InpaintConfig.control_fill` overrides it). Precision: bf16 on a GPU that has it (else fp16), fp32 on CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from smartmask.pretrained import load_pretrained, model_revision

CONTROLNET_KINDS = ("controlnet-sd15", "controlnet-sdxl")
DIFFUSERS_KINDS = (*CONTROLNET_KINDS, "sd-inpaint", "sdxl-inpaint")
KINDS = (*DIFFUSERS_KINDS, "synthetic")
# kind -> (base, controlnet) hub ids used when the spec leaves them out.
DEFAULTS: dict[str, tuple[str, str | None]] = {
    "controlnet-sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5", "lllyasviel/control_v11p_sd15_inpaint"),
    "controlnet-sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", "destitech/controlnet-inpaint-dreamer-sdxl"),
    "sd-inpaint": ("stable-diffusion-v1-5/stable-diffusion-inpainting", None),
    "sdxl-inpaint": ("diffusers/stable-diffusion-xl-1.0-inpainting-0.1", None),
}
_PIPELINES = {
    "controlnet-sd15": "StableDiffusionControlNetInpaintPipeline",
    "controlnet-sdxl": "StableDiffusionXLControlNetInpaintPipeline",
    "sd-inpaint": "StableDiffusionInpaintPipeline",
    "sdxl-inpaint": "StableDiffusionXLInpaintPipeline",
}
_CONTROL_FILL = {"controlnet-sd15": -1.0, "controlnet-sdxl": 1.0}
_DTYPES = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True, kw_only=True, slots=True)
class InpaintConfig:
    """Inpainting and paste-back settings. Pipeline fields are read by `load_inpainter`, crop/paste fields by
    `insert_object`."""

    steps: int = 30  # with the pipeline's own scheduler (PNDM for SD1.5, Euler for SDXL)
    guidance_scale: float = 7.5
    controlnet_scale: float = 1.0  # ControlNet 1.1's own default weight (diffusers' inpaint pipeline says 0.5)
    strength: float | None = None  # None: the pipeline's default (1.0 for SD1.5, 0.9999 for SDXL)
    control_fill: float | None = None  # masked pixels of the ControlNet condition; None: the kind's convention
    dtype: str = "auto"  # auto: bf16 on a GPU with bf16 (else fp16), fp32 on CPU
    native: int | None = None  # override the side the model works at (default: U-Net sample size x VAE factor)
    negative_prompt: str = "blurry, low quality, deformed, distorted, watermark, text"
    # Crop: side = the dilated mask's long side x (1 + 2 crop_margin), at least min_crop_frac x native (so a small
    # object gets context and is upscaled at most 1 / min_crop_frac times), at most the image's short side.
    crop_margin: float = 0.25
    min_crop_frac: float = 0.5
    # Feather band at native resolution (8 = one latent cell of SD's VAE); scaled to image pixels with the crop.
    dilate_px: int = 8

    def __post_init__(self) -> None:
        if self.steps < 1 or self.guidance_scale < 0 or self.controlnet_scale < 0:
            raise ValueError("InpaintConfig: steps must be >= 1, guidance and controlnet scales >= 0")
        if self.strength is not None and not 0 < self.strength <= 1:
            raise ValueError(f"InpaintConfig: strength must be in (0, 1]; got {self.strength}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"InpaintConfig: dtype must be one of {_DTYPES}; got {self.dtype!r}")
        if self.crop_margin < 0 or not 0 < self.min_crop_frac <= 1 or self.dilate_px < 0:
            raise ValueError("InpaintConfig: crop_margin >= 0, 0 < min_crop_frac <= 1, dilate_px >= 0")

    @classmethod
    def for_tests(cls, **overrides: Any) -> InpaintConfig:
        """Test-size settings for tiny random models: 2 steps, fp32."""
        return cls(**{"steps": 2, "guidance_scale": 2.0, "dtype": "fp32", **overrides})

    def content_hash(self) -> str:
        """16 hex digits over every field (all of them change the output)."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Inpainter(Protocol):
    id: str
    native: int

    def __call__(self, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str, seed: int,
                 *, obj: str | None = None) -> np.ndarray: ...


class ContentFiltered(ValueError):
    """The pipeline's safety checker flagged the result (diffusers returns a black image then). One line."""


@dataclass(frozen=True, slots=True)
class InpainterSpec:
    kind: str
    base: str | None = None  # None for synthetic
    controlnet: str | None = None  # controlnet kinds only


def parse_spec(spec: str) -> InpainterSpec:
    """A spec string -> kind and sources (see the module docstring). Unusable spec -> one-line ValueError."""
    s = str(spec).strip()
    if not s:
        raise ValueError(f"empty inpainter spec; expected one of {', '.join(KINDS)} (KIND[:BASE[+CONTROLNET]])")
    kind, _, rest = s.partition(":")
    if kind == "synthetic":
        if rest:
            raise ValueError(f"inpainter 'synthetic' takes no source; got {s!r}")
        return InpainterSpec("synthetic")
    if kind not in DIFFUSERS_KINDS:
        if Path(s).expanduser().is_dir():
            return _spec_from_dir(s)
        raise ValueError(
            f"unknown inpainter {s!r}: expected one of {', '.join(KINDS)} (KIND[:BASE[+CONTROLNET]]) "
            f"or a saved pipeline directory"
        )
    default_base, default_cn = DEFAULTS[kind]
    base, _, cn = rest.rpartition("+") if "+" in rest else (rest, "", "")
    base, cn = base.strip() or default_base, cn.strip()
    if kind not in CONTROLNET_KINDS:
        if cn:
            raise ValueError(f"inpainter {kind!r} takes no ControlNet; got {s!r}")
        return InpainterSpec(kind, base)
    if not cn:
        sub = Path(base).expanduser() / "controlnet"
        cn = str(sub) if (sub / "config.json").is_file() else default_cn
    return InpainterSpec(kind, base, cn)


def _spec_from_dir(path: str) -> InpainterSpec:
    index = Path(path).expanduser() / "model_index.json"
    try:
        cls = json.loads(index.read_text())["_class_name"]
    except (OSError, ValueError, KeyError, TypeError):
        cls = None
    kind = next((k for k, name in _PIPELINES.items() if name == cls), None)
    if kind is None:
        raise ValueError(
            f"cannot tell which inpainter {path!r} is (model_index.json names {cls!r}); "
            f"prefix it with its kind: {', '.join(DIFFUSERS_KINDS)}"
        )
    return parse_spec(f"{kind}:{path}")


def load_inpainter(spec: str, device: str | None = None, config: InpaintConfig | None = None) -> Inpainter:
    """The inpainter a spec names, on `device` (default: CUDA when available, else CPU)."""
    cfg = config or InpaintConfig()
    parsed = parse_spec(spec)
    if parsed.kind == "synthetic":
        from smartmask.inference.synthetic_inpaint import SyntheticInpainter

        return SyntheticInpainter(native=cfg.native or SyntheticInpainter.DEFAULT_NATIVE)
    return DiffusersInpainter.load(parsed, device, cfg)


def _torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def inpaint_condition(image: np.ndarray, mask: np.ndarray, fill: float):
    """The ControlNet-Inpaint condition: (1, 3, H, W) float32 tensor, the image in [0, 1] with `mask` set to
    `fill` (-1 for `control_v11p_sd15_inpaint`)."""
    import torch

    cond = image.astype(np.float32) / np.float32(255.0)
    cond[mask] = fill
    return torch.from_numpy(np.ascontiguousarray(cond.transpose(2, 0, 1)))[None]


class DiffusersInpainter:
    """A diffusers (ControlNet-)inpainting pipeline behind the `Inpainter` interface."""

    def __init__(self, pipe, kind: str, id: str, native: int, config: InpaintConfig, device: str):
        self.pipe, self.kind, self.id, self.native, self.config, self.device = pipe, kind, id, native, config, device

    @classmethod
    def load(cls, spec: InpainterSpec, device: str | None, cfg: InpaintConfig) -> DiffusersInpainter:
        import diffusers
        import torch

        device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = _torch_dtype(cfg.dtype, device)
        pipe_cls = getattr(diffusers, _PIPELINES[spec.kind])
        kwargs: dict[str, Any] = {"dtype": dtype}
        ident = f"{spec.kind}:{spec.base}@{model_revision(spec.base)}"
        if spec.controlnet is not None:
            kwargs["controlnet"] = load_pretrained(diffusers.ControlNetModel, spec.controlnet, dtype=dtype)
            ident += f"+{spec.controlnet}@{model_revision(spec.controlnet)}"
        pipe = load_pretrained(pipe_cls, spec.base, **kwargs)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        native = cfg.native or int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        if native % int(pipe.vae_scale_factor):
            raise ValueError(f"inpainter native side {native} is not a multiple of the VAE factor {pipe.vae_scale_factor}")
        return cls(pipe, spec.kind, ident, native, cfg, device)

    def __call__(self, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str, seed: int,
                 *, obj: str | None = None) -> np.ndarray:
        import torch
        from PIL import Image

        n = self.native
        if image.shape != (n, n, 3) or image.dtype != np.uint8 or mask.shape != (n, n) or mask.dtype != bool:
            raise ValueError(
                f"{self.kind} inpainter takes a ({n}, {n}, 3) uint8 image and a ({n}, {n}) bool mask; "
                f"got {image.shape} {image.dtype} and {mask.shape} {mask.dtype}"
            )
        cfg = self.config
        kwargs: dict[str, Any] = dict(
            prompt=prompt, negative_prompt=negative_prompt or None,
            image=Image.fromarray(image), mask_image=Image.fromarray(mask.astype(np.uint8) * np.uint8(255)),
            height=n, width=n, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
            # A CPU generator: the same seed gives the same noise on any device.
            generator=torch.Generator("cpu").manual_seed(int(seed)), output_type="np",
        )  # fmt: skip
        if cfg.strength is not None:
            kwargs["strength"] = cfg.strength
        if self.kind in CONTROLNET_KINDS:
            fill = cfg.control_fill if cfg.control_fill is not None else _CONTROL_FILL[self.kind]
            kwargs["control_image"] = inpaint_condition(image, mask, fill)
            kwargs["controlnet_conditioning_scale"] = cfg.controlnet_scale
        with torch.inference_mode():
            out = self.pipe(**kwargs)
        return output_pixels(out, self.id, f"the inpainted image for {prompt!r}")


def output_pixels(out, who: str, what: str) -> np.ndarray:
    """The first image of a diffusers pipeline's output (`output_type="np"`) as (H, W, 3) uint8. `ContentFiltered`
    when its safety checker flagged it: a black image must never pass for a result."""
    flagged = getattr(out, "nsfw_content_detected", None)
    if flagged and any(flagged):
        raise ContentFiltered(f"{who}: the safety checker flagged {what}")
    pixels = np.asarray(out.images[0], dtype=np.float32)
    if not np.isfinite(pixels).all():
        raise RuntimeError(f"{who}: the pipeline returned non-finite pixels (try dtype='fp32')")
    return (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
