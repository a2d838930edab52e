"""A layered layout rendered to an image: by the synthetic world's renderer, or by SD 1.5 + a segmentation ControlNet.

    render_layout(layout, "synthetic", seed=3)                          # the synthetic world's look, no model
    render_layout(layout, "controlnet-seg:/models/sd15-seg", steps=30)  # diffusers, loaded offline-aware

Renderer specs (`parse_renderer`; the CLI's `--renderer`):

    synthetic                          `smartmask.synth.render.rgb` over one world Instance per layer: the class's
                                       palette colour x a tint and shade drawn from (seed, layer index), outlines
                                       on the front side of every boundary. Not generative; deterministic.
    controlnet-seg[:BASE[+CONTROLNET]] `StableDiffusionControlNetPipeline`: BASE is an SD 1.5 pipeline directory
                                       or hub id; the ControlNet is CONTROLNET, else BASE's `controlnet/`
                                       subfolder (a saved ControlNet pipeline), else `DEFAULT_CONTROLNET`.

Both load through `smartmask.pretrained.load_pretrained` (safetensors only; offline, a hub id must be cached). The
ControlNet's condition is the layout's visible labels painted in the ADE20K palette (`smartmask.design.ade20k`),
the prompt is the layout's context. The pipeline works at a size whose long side is the model's native side
(U-Net sample size x VAE factor: 512 for SD 1.5) and whose sides are multiples of the VAE factor; the result is
resized back to the layout's size. Labels the synthetic world does not know are painted `NEUTRAL` grey (shaded and
outlined like any layer); labels ADE20K does not know are black in the control image (`ade20k.FALLBACK`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from smartmask.design import ade20k
from smartmask.design.layered import LayeredLayout
from smartmask.devices import check_device
from smartmask.inference.errors import BadInput
from smartmask.inference.inpaint import _torch_dtype, output_pixels
from smartmask.inference.synonyms import map_label
from smartmask.pretrained import load_pretrained, model_revision
from smartmask.synth import render as synth_render
from smartmask.synth.world import _SHADE, STUFF, Instance, _tint

KINDS = ("synthetic", "controlnet-seg")
DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_CONTROLNET = "lllyasviel/control_v11p_sd15_seg"
DEFAULT_STEPS = 30
GUIDANCE_SCALE = 7.5
CONTROLNET_SCALE = 1.0  # ControlNet 1.1's own default weight
NEGATIVE_PROMPT = "blurry, low quality, deformed, distorted, watermark, text"
NEUTRAL = (128, 128, 128)  # the synthetic renderer's colour for labels the world has no palette entry for
# `synth.render.rgb` reads every colour from its PALETTE by class name, so an unknown label is drawn as this palette
# class with the tint that turns its colour into NEUTRAL (any class with no zero channel would do).
_NEUTRAL_AS = "wall"


class Renderer(Protocol):
    id: str

    def __call__(self, layout: LayeredLayout, *, seed: int = 0, steps: int | None = None) -> np.ndarray: ...


def parse_renderer(spec: str) -> tuple[str, str | None, str | None]:
    """(kind, base, controlnet) for a renderer spec (module docstring); unusable -> `BadInput` field "renderer"."""
    s = str(spec).strip()
    kind, _, rest = s.partition(":")
    rest = rest.strip()
    if kind == "synthetic":
        if rest:
            raise BadInput(f"renderer 'synthetic' takes no source; got {s!r}", "renderer")
        return "synthetic", None, None
    if kind != "controlnet-seg":
        raise BadInput(f"unknown renderer {s!r}: expected synthetic or controlnet-seg[:BASE[+CONTROLNET]]", "renderer")
    base, _, cn = rest.rpartition("+") if "+" in rest else (rest, "", "")
    base, cn = base.strip() or DEFAULT_BASE, cn.strip()
    if not cn:
        sub = Path(base).expanduser() / "controlnet"
        cn = str(sub) if (sub / "config.json").is_file() else DEFAULT_CONTROLNET
    return kind, base, cn


def load_renderer(spec: str, device: str | None = None) -> Renderer:
    """The renderer a spec names; diffusers models go to `device` (default: CUDA when available, else CPU)."""
    kind, base, cn = parse_renderer(spec)
    if kind == "synthetic":
        return SyntheticRenderer()
    return SegControlNetRenderer.load(base, cn, device)


def render_layout(layout: LayeredLayout, renderer: str | Renderer, *, seed: int = 0, lake=None,
                  steps: int | None = None, device: str | None = None) -> np.ndarray:
    """(layout.height, layout.width, 3) uint8: `layout` rendered by `renderer` (a spec string or a loaded
    `Renderer`, to render many layouts with one model load). `steps`: diffusion steps (default `DEFAULT_STEPS`;
    the synthetic renderer has none). `lake` is accepted for front ends that hold one; neither renderer reads it."""
    del lake
    if steps is not None and int(steps) < 1:
        raise BadInput(f"steps must be >= 1, got {steps}", "steps")
    r = load_renderer(renderer, device) if isinstance(renderer, str) else renderer
    image = r(layout, seed=int(seed), steps=steps)
    if image.shape != (layout.height, layout.width, 3) or image.dtype != np.uint8:
        raise RuntimeError(f"renderer {r.id} returned {image.shape} {image.dtype}, "
                           f"not ({layout.height}, {layout.width}, 3) uint8")
    return image


# ---------------------------------------------------------------------------------------------- synthetic
def synthetic_class(label: str) -> str | None:
    """The synthetic world's palette class for a label ("couch" -> "sofa", "people" -> "person"), or None."""
    return map_label(label, synth_render.PALETTE)  # synonyms' default table targets exactly these classes


def _instance(layer, index: int, seed: int) -> Instance:
    # One generator per (seed, layer index): a layer's colour depends on the seed and its place only, not on how
    # many numbers the layers behind it drew (a stuff layer draws fewer than a thing), so relabelling one layer
    # recolours that layer alone.
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, index])
    cls = synthetic_class(layer.label)
    stuff = layer.is_stuff or cls in STUFF
    # The same draws the world makes (`world._stuff`, `world._make`), so a rendering looks like its images.
    tint = _tint(rng, 0.03) if stuff else _tint(rng)
    if stuff:
        shade = _SHADE.get(cls, (1.0, 1.0))
    else:
        shade = (float(rng.uniform(1.0, 1.15)), float(rng.uniform(0.8, 0.95)))
    if cls is None:
        cls = _NEUTRAL_AS
        tint = tuple(n / c for n, c in zip(NEUTRAL, synth_render.PALETTE[_NEUTRAL_AS], strict=True))
    inst = Instance(cls, np.zeros((0, 2)), (index,), stuff=stuff, tint=tint, shade=shade)
    rows = np.flatnonzero(layer.mask_HW.any(axis=1))
    cols = np.flatnonzero(layer.mask_HW.any(axis=0))
    # rgb() shades across the amodal box's rows; an empty mask owns no pixel, so any box does.
    inst.cache["box"] = ((int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1) if rows.size
                         else (0, 1, 0, 1))
    return inst


def render_synthetic(layout: LayeredLayout, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 in the synthetic world's style; pixels no layer covers are black (as in `rgb`)."""
    order = [_instance(layer, i, seed) for i, layer in enumerate(layout.layers)]
    owner = layout.owner_HW().astype(np.int16)
    visible = np.bincount(owner[owner >= 0].ravel(), minlength=len(order)).astype(np.int64)
    amodal = np.array([int(layer.mask_HW.sum()) for layer in layout.layers], dtype=np.int64)
    return synth_render.rgb(synth_render.Layers(order, owner, visible, amodal))


class SyntheticRenderer:
    id = "synthetic"

    def __call__(self, layout: LayeredLayout, *, seed: int = 0, steps: int | None = None) -> np.ndarray:
        return render_synthetic(layout, seed)


# ----------------------------------------------------------------------------------------- ControlNet-seg
def work_size(width: int, height: int, native: int, multiple: int = 8) -> tuple[int, int]:
    """(w, h) the pipeline renders at: the long side `native`, the aspect kept, each side a multiple of
    `multiple` (the VAE factor), at least one multiple."""
    scale = native / max(width, height)
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (width, height))


def control_image(layout: LayeredLayout, width: int | None = None, height: int | None = None) -> np.ndarray:
    """(height, width, 3) uint8: the layout's visible labels in ADE20K colours (`ade20k.paint`), at the given size
    (default: the layout's). The owner map is resized by nearest neighbour before painting, so the picture holds
    palette colours only, never a blend of two classes' colours (which would be a third class)."""
    w, h = width or layout.width, height or layout.height
    owner = layout.owner_HW()
    if (w, h) != (layout.width, layout.height):
        rows = np.minimum(((np.arange(h) + 0.5) * layout.height / h).astype(np.int64), layout.height - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * layout.width / w).astype(np.int64), layout.width - 1)
        owner = owner[rows[:, None], cols[None, :]]
    return ade20k.paint(owner, layout.labels)


class SegControlNetRenderer:
    """SD 1.5 + a segmentation ControlNet (`StableDiffusionControlNetPipeline`) behind the `Renderer` interface."""

    def __init__(self, pipe, id: str, native: int, device: str):
        self.pipe, self.id, self.native, self.device = pipe, id, native, device

    @classmethod
    def load(cls, base: str, controlnet: str, device: str | None = None) -> SegControlNetRenderer:
        import diffusers
        import torch

        device = check_device(device) or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = _torch_dtype("auto", device)  # bf16 / fp16 on a GPU, fp32 on CPU, as the inpainters
        cn = load_pretrained(diffusers.ControlNetModel, controlnet, dtype=dtype)
        pipe = load_pretrained(diffusers.StableDiffusionControlNetPipeline, base, controlnet=cn, dtype=dtype)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        ident = f"controlnet-seg:{base}@{model_revision(base)}+{controlnet}@{model_revision(controlnet)}"
        native = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        return cls(pipe, ident, native, device)

    def __call__(self, layout: LayeredLayout, *, seed: int = 0, steps: int | None = None) -> np.ndarray:
        import torch
        from PIL import Image

        w, h = work_size(layout.width, layout.height, self.native, int(self.pipe.vae_scale_factor))
        kwargs: dict[str, Any] = dict(
            prompt=layout.context or "", negative_prompt=NEGATIVE_PROMPT,
            image=Image.fromarray(control_image(layout, w, h)), height=h, width=w,
            num_inference_steps=int(steps or DEFAULT_STEPS), guidance_scale=GUIDANCE_SCALE,
            controlnet_conditioning_scale=CONTROLNET_SCALE,
            # A CPU generator: the same seed gives the same noise on any device.
            generator=torch.Generator("cpu").manual_seed(int(seed)), output_type="np",
        )  # fmt: skip
        with torch.inference_mode():
            out = self.pipe(**kwargs)
        image = output_pixels(out, self.id, f"the rendering of {layout.context!r}")
        if (w, h) != (layout.width, layout.height):
            image = np.asarray(Image.fromarray(image).resize((layout.width, layout.height), Image.LANCZOS))
        return image
