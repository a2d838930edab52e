"""A tiny random SD 1.5 segmentation-ControlNet pipeline, saved with `save_pretrained` (safetensors) for the tests.

`build_tiny_controlnet_seg_pipeline(dir)` writes a `StableDiffusionControlNetPipeline` directory (unet/, vae/,
text_encoder/, tokenizer/, scheduler/, controlnet/, model_index.json) shaped like `tests.tiny_inpaint`'s SD 1.5
parts: U-Net blocks 32/64 with cross-attention 32, an 8x-downsampling VAE, so its native side is 64 and a 2-step
call takes well under a second on CPU. The ControlNet's zero convolutions get small random weights: a freshly
initialised ControlNet adds exactly zero, and the control image would not change the output at all. Built offline
from configs and seeded: the same seed writes the same weights. Tests load it back through
`smartmask.design.render` (i.e. `smartmask.pretrained.load_pretrained`), the path real weights take.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_inpaint import (
    TINY_NATIVE,
    _randomise_zero_convs,
    _sd15_scheduler,
    _sd15_text,
    _sd15_unet,
    _tiny_vae,
)

__all__ = ["TINY_NATIVE", "build_tiny_controlnet_seg_pipeline"]


def build_tiny_controlnet_seg_pipeline(out_dir: Path, seed: int = 0) -> Path:
    """A tiny `StableDiffusionControlNetPipeline` directory with its ControlNet in `controlnet/`."""
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    torch.manual_seed(seed)
    unet = _sd15_unet(4)
    # Same blocks as the U-Net; the condition embedding downsamples 8x (three stride-2 convolutions), as SD's.
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    _randomise_zero_convs(controlnet)
    text_encoder, tokenizer = _sd15_text()
    pipe = StableDiffusionControlNetPipeline(
        vae=_tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet,
        scheduler=_sd15_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(Path(out_dir), safe_serialization=True)
    return Path(out_dir)
