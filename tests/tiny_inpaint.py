"""Builders of tiny random-init inpainting models, saved with `save_pretrained` (safetensors) for the tests.

All of them work at a native side of 64 (U-Net sample size 8 x an 8x-downsampling VAE), so a pipeline call at 2
steps takes well under a second on CPU. They are loaded back through `smartmask.inference.load_inpainter`, i.e.
`smartmask.pretrained.load_pretrained`, the path real weights take. Seeded: a builder called twice writes the same
weights.

- `build_tiny_controlnet_sd15(dir)`: a ControlNet shaped for `build_tiny_sd15`'s U-Net. Its zero convolutions
  are re-initialised with small random weights: a freshly initialised ControlNet adds exactly zero, and a test
  through it would not exercise the condition at all.
- `build_tiny_sd_inpaint(dir)`: a `StableDiffusionInpaintPipeline` directory (9-channel U-Net).
- `build_tiny_sdxl_controlnet_inpaint(dir)`: a `StableDiffusionXLControlNetInpaintPipeline` directory with its
  ControlNet in `controlnet/`: SDXL's U-Net shape in miniature (addition_embed_type "text_time", two CLIP text
  encoders, the second with a projection, cross-attention over their concatenated hidden states).
"""

from __future__ import annotations

from pathlib import Path

TINY_NATIVE = 64
_BLOCKS = (32, 64)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=TINY_NATIVE,
    )  # fmt: skip


def _randomise_zero_convs(controlnet, std: float = 0.05) -> None:
    import torch

    with torch.no_grad():
        for mod in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                    controlnet.controlnet_cond_embedding.conv_out]:  # fmt: skip
            mod.weight.normal_(0.0, std)
            mod.bias.normal_(0.0, std)


def _sd15_unet(in_channels: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_NATIVE // 8, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=_BLOCKS, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=32,
    )  # fmt: skip


def build_tiny_controlnet_sd15(out_dir: Path, seed: int = 0) -> Path:
    """A ControlNet matching `tests.tiny_models.build_tiny_sd15`'s U-Net (blocks 32/64, cross-attention 32)."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    cn = ControlNetModel(
        in_channels=4, layers_per_block=1, block_out_channels=_BLOCKS,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=32, conditioning_embedding_out_channels=(8, 8, 16, 16),
    )  # fmt: skip
    _randomise_zero_convs(cn)
    cn.save_pretrained(Path(out_dir), safe_serialization=True)
    return Path(out_dir)


def _sd15_text():
    from transformers import CLIPTextConfig, CLIPTextModel

    from smartmask.model.network import tiny_clip_tokenizer
    from smartmask.presets import TINY_TEXT

    return CLIPTextModel(CLIPTextConfig(**TINY_TEXT)), tiny_clip_tokenizer(model_max_length=77)


def _sd15_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
        set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip


def build_tiny_sd_inpaint(out_dir: Path, seed: int = 0) -> Path:
    """A `StableDiffusionInpaintPipeline` directory: 9-channel U-Net (latents + mask + masked-image latents)."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    torch.manual_seed(seed)
    text_encoder, tokenizer = _sd15_text()
    pipe = StableDiffusionInpaintPipeline(
        vae=_tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=_sd15_unet(9),
        scheduler=_sd15_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(Path(out_dir), safe_serialization=True)
    return Path(out_dir)


def build_tiny_sdxl_controlnet_inpaint(out_dir: Path, seed: int = 0) -> Path:
    """A `StableDiffusionXLControlNetInpaintPipeline` directory (controlnet/ inside), SDXL-shaped and tiny.

    U-Net/ControlNet: blocks 32/64, attention at the second level with 2 transformer layers, linear projections,
    `text_time` added conditioning (6 time ids x 8 + the 32-d pooled text embedding = 80), cross-attention 64
    (= 32 + 32 from the two text encoders). Text encoders: CLIP hidden 32 on the tiny 1000-token tokenizer; the
    second is a `CLIPTextModelWithProjection` (projection 32). Scheduler: SDXL's Euler config.
    """
    import torch
    from diffusers import (
        ControlNetModel,
        EulerDiscreteScheduler,
        StableDiffusionXLControlNetInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from smartmask.model.network import tiny_clip_tokenizer
    from smartmask.presets import TINY_TEXT

    torch.manual_seed(seed)
    shared = dict(
        layers_per_block=1, block_out_channels=_BLOCKS, attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=32,
    )  # fmt: skip
    unet = UNet2DConditionModel(
        sample_size=TINY_NATIVE // 8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **shared,
    )  # fmt: skip
    controlnet = ControlNetModel(
        in_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        conditioning_embedding_out_channels=(8, 8, 16, 16), **shared,
    )  # fmt: skip
    _randomise_zero_convs(controlnet)
    pipe = StableDiffusionXLControlNetInpaintPipeline(
        vae=_tiny_vae(), text_encoder=CLIPTextModel(CLIPTextConfig(**TINY_TEXT)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**TINY_TEXT, projection_dim=32)),
        tokenizer=tiny_clip_tokenizer(77), tokenizer_2=tiny_clip_tokenizer(77), unet=unet, controlnet=controlnet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
            timestep_spacing="leading",
        ),
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )  # fmt: skip
    pipe.save_pretrained(Path(out_dir), safe_serialization=True)
    return Path(out_dir)
