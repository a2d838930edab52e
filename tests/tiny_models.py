"""Builders of tiny random-init models, saved with `save_pretrained` (safetensors) for the tests.

The tests load them back through `smartmask.pretrained.load_pretrained`, the same code path real weights take.
Everything is built offline from configs (no hub access) and seeded, so a builder called twice writes the same
weights. Keep this a plain module of functions: `build_tiny_<model>(out_dir) -> out_dir`.
"""

from __future__ import annotations

from pathlib import Path

# A small closed vocabulary: random weights produce gibberish, but gibberish made of words.
WORDS = (
    "a", "an", "the", "of", "in", "on", "at", "by", "with", "and", "or", "to", "is", "are", "there",
    "this", "that", "it", "its", "photo", "picture", "image", "scene", "view", "woman", "man", "person",
    "people", "child", "dog", "cat", "river", "lake", "sea", "sky", "water", "grass", "road", "street",
    "table", "chair", "lamp", "sofa", "boat", "tree", "house", "wall", "floor", "window", "door", "car",
    "bird", "red", "green", "blue", "white", "black", "small", "large", "left", "right", "front",
    "behind", "next", "near", "above", "below", "beside", "sitting", "standing", "describe", "what",
    "short", "description",
)


def _word_level_tokenizer(specials: list[str], template: str, template_tokens: list[str], **special_kwargs):
    """A `PreTrainedTokenizerFast` over WORDS built with the `tokenizers` library (no files, no network).

    transformers 5 pitfalls avoided: slow-style constructors (`CLIPTokenizer(vocab_file=...)`,
    `GPT2Tokenizer(vocab_file=..., merges_file=...)`) may silently ignore the files; wrapping a ready
    `tokenizers.Tokenizer` object is explicit, and the ids are checked by the tests.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(specials + list(WORDS))}
    unk = special_kwargs["unk_token"]
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab[t]) for t in template_tokens]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special_kwargs), vocab


def build_tiny_instructblip(out_dir: Path, seed: int = 0) -> Path:
    """A ~80k-parameter `InstructBlipForConditionalGeneration` (OPT text model) + its `InstructBlipProcessor`.

    Vision: hidden 32, 2 layers, 32x32 images, patch 8. Q-Former: hidden 32, 2 layers. OPT: hidden 32,
    2 layers, a word-level vocabulary of ~100 tokens including `<image>`. 4 query tokens; the processor
    inserts the 4 `<image>` tokens before the prompt itself (`num_query_tokens=4`). Initialised wider than the
    defaults (std 0.5 for the Q-Former and OPT) so that different images give different (gibberish) captions.
    """
    import torch
    from tokenizers import AddedToken
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # LM tokenizer, OPT-like: <s>=0 <pad>=1 </s>=2 (BOS prepended as in OPT), <unk>=3, <image>=4.
    lm_tok, lm_vocab = _word_level_tokenizer(
        ["<s>", "<pad>", "</s>", "<unk>", "<image>"], "</s> $A", ["</s>"],
        bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", padding_side="left",
    )
    # "<image>" must stay one token, never split by the whitespace pre-tokenizer.
    lm_tok.backend_tokenizer.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
    image_token_id = lm_vocab["<image>"]
    # Q-Former tokenizer, BERT-like: [PAD]=0 (Q-Former pad_token_id), [CLS] $A [SEP].
    qf_tok, qf_vocab = _word_level_tokenizer(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[CLS] $A [SEP]", ["[CLS]", "[SEP]"],
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = InstructBlipProcessor(
        image_processor=image_processor, tokenizer=lm_tok, qformer_tokenizer=qf_tok, num_query_tokens=4
    )
    assert lm_tok.convert_tokens_to_ids("<image>") == image_token_id, "processor moved the image token"

    config = InstructBlipConfig(
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8, initializer_range=0.02,
        ),
        qformer_config=dict(
            vocab_size=len(qf_vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64, pad_token_id=0, initializer_range=0.5,
        ),
        text_config=dict(
            model_type="opt", vocab_size=len(lm_vocab), hidden_size=32, word_embed_proj_dim=32,
            num_hidden_layers=2, num_attention_heads=2, ffn_dim=64, max_position_embeddings=128, init_std=0.5,
            pad_token_id=lm_vocab["<pad>"], bos_token_id=lm_vocab["</s>"], eos_token_id=lm_vocab["</s>"],
        ),
        num_query_tokens=4,
        image_token_index=image_token_id,
        initializer_range=0.5,
    )
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir


# ---- SmartMask: a tiny Stable-Diffusion-1.5-layout directory and a tiny SmartMask checkpoint --------------------

TINY_SD15_RESOLUTION = 64  # mask side for a SmartMask on build_tiny_sd15 (its VAE downsamples by 8 → 8x8 latents)


def build_tiny_sd15(out_dir: Path, seed: int = 0) -> Path:
    """A Stable Diffusion 1.5 *layout* (unet/, vae/, text_encoder/, tokenizer/, scheduler/, model_index.json) with
    tiny random weights, saved with `save_pretrained` (safetensors).

    U-Net: in_channels 4 (as SD's), 2 levels (32, 64), cross-attention dim 32. VAE: 4 levels like SD's, so it
    downsamples by 8, 8/16 channels, 4 latent channels. Text encoder: CLIP hidden 32, 2 layers, vocab 1000 with
    <|startoftext|>=998, <|endoftext|>=999; tokenizer: `smartmask.model.network.tiny_clip_tokenizer()` (77 tokens).
    Scheduler: SD 1.5's PNDM config (scaled_linear 0.00085-0.012). Use it as
    `presets.sd15_model(str(dir), resolution=TINY_SD15_RESOLUTION)`.
    """
    import json

    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from smartmask.model.network import tiny_clip_tokenizer
    from smartmask.presets import TINY_TEXT

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_SD15_RESOLUTION // 8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=TINY_SD15_RESOLUTION,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    tokenizer = tiny_clip_tokenizer(model_max_length=77)
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
        set_alpha_to_one=False, steps_offset=1,
    )
    unet.save_pretrained(out_dir / "unet", safe_serialization=True)
    vae.save_pretrained(out_dir / "vae", safe_serialization=True)
    text_encoder.save_pretrained(out_dir / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(out_dir / "tokenizer")
    scheduler.save_pretrained(out_dir / "scheduler")
    (out_dir / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }, indent=2))
    return out_dir


def build_tiny_smartmask(out_dir: Path, **overrides) -> Path:
    """An untrained tiny-preset SmartMask checkpoint (`config.json` + `model.safetensors`), for flow/CLI tests.

    `overrides` go to `presets.tiny_model(...)` (e.g. `seed=1`). Deterministic: same overrides, same weights.
    """
    from smartmask import presets
    from smartmask.model import SmartMask

    SmartMask.build(presets.tiny_model(**overrides)).save(Path(out_dir))
    return Path(out_dir)


def register_tiny_smartmask(lake: Path, dataset_version: str, work_dir: Path, run_id: str,
                            dataset: str = "synth") -> str:
    """Register an untrained tiny-preset SmartMask in `lake` as a training run would release it (the trainable
    weights as its EMA, through `smartmask.registry.register`); returns the model version."""
    from safetensors.torch import save_file

    from smartmask import presets
    from smartmask.model.network import SmartMask
    from smartmask.registry import register

    cfg = presets.tiny_model()
    model = SmartMask.build(cfg)
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad},
              str(Path(work_dir) / "ema.safetensors"))
    return register(lake, Path(work_dir), cfg, {"model": cfg.to_dict(), "sample": {"alpha": 0.7}}, dataset,
                    dataset_version, run_id, {"step": 0})
