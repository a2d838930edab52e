"""A tiny random-init LLaVA (`LlavaForConditionalGeneration` + `LlavaProcessor`) for the planner tests.

Built offline from configs and seeded, saved with `save_pretrained` (safetensors), and loaded back by the
tests through `smartmask.pretrained.load_pretrained`, the path real weights take. Kept apart from
`tiny_models.py` (which other tests own); it borrows that module's word list.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import WORDS

from smartmask.synth.world import PLURAL, STUFF, THINGS

IMAGE_SIZE = 32  # the vision tower's input: 4x4 patches of 8 px, so 16 image tokens after the CLS is dropped
PATCH = 8
# What the planner's prompts and answers are made of, so that the tiny model can read and write them without
# <unk>: its chat wrapper, the prompt words, the answer prefix, and the synthetic world's classes.
PROMPT_WORDS = (
    "USER", "ASSISTANT", "labels", "which", "objects", "layout", "colours", "colour", "painted", "where",
    "should", "go", "next", "box", "answer", "as", "normalised", "x0", "y0", "x1", "y1", "caption", "object",
    "add", "name", "shown", "for", "be", "placed", "layer", "semantic", "map", "unknown", "nothing",
)
# Single characters, so that digits, punctuation and spaces round-trip through decode exactly (as in Llama's
# tokenizer, digits are split one by one).
CHARS = tuple("0123456789") + tuple(" \n.,:;[]()-'?!/")


def _tokenizer():
    """A word-level `PreTrainedTokenizerFast`: words, single digits and single punctuation/space characters,
    each one token, so `decode` (Fuse: plain concatenation) gives back exactly the text that was encoded."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    words = dict.fromkeys([*WORDS, *PROMPT_WORDS, *THINGS, *STUFF, *PLURAL.values()])
    vocab = {tok: i for i, tok in enumerate(specials + list(CHARS) + [w for w in words if w not in CHARS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # One token per letter run, digit or other character (spaces included): nothing is lost between tokens.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[A-Za-z_]+[0-9]?|[0-9]|[^A-Za-z_0-9]"),
                                             behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    tok.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="left")
    return fast, vocab


def build_tiny_llava(out_dir: Path, seed: int = 0) -> Path:
    """A ~130k-parameter LLaVA: CLIP vision tower (hidden 32, 2 layers, 32x32 images, patch 8), a 2-layer
    projector, a Llama text model (hidden 64, 2 layers, a 160-token word-level vocabulary). Random weights: it
    answers gibberish, which is what the planner must survive."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer, vocab = _tokenizer()
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    # As llava-1.5: the CLS token is dropped ("default" strategy), so (32/8)^2 = 16 image tokens.
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH,
                              projection_dim=32)
    text = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                       bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"],
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
                         image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
                         vision_feature_select_strategy="default", vision_feature_layer=-2,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir
