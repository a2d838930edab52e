"""CLIP-Score of inserted objects: how well the crop of an inserted object matches its text prompt.

`ClipScorer.score(crops, texts)[i]` = cos(E_img(crop_i), E_txt(text_i)) with a transformers `CLIPModel`: the raw
cosine between the projected, L2-normalised image and text embeddings (the paper's scale, `scale = "cos"`; no
×100 and no clipping at 0 as in torchmetrics' CLIPScore). Prompts are `prompt_for(obj)` = "a photo of {obj}".

Backbones (`ClipScorer.load`): a local directory or a hub id through `smartmask.pretrained.load_pretrained`
(safetensors only; offline a hub id must be in the Hugging Face cache), recorded as "<source>@<revision>";
"tiny-random:SEED", a tiny random-init CLIP built in memory (offline stand-in, comparable only with itself); and
"auto" = openai/clip-vit-base-patch32 when it is in the local cache, else tiny-random:0. `backbone` goes into every
result row, so scores of different backbones are never mixed.

Images are preprocessed with `CLIPImageProcessorPil` (PIL bicubic resize of the shorter side, centre crop,
OpenAI's mean/std), the preprocessing of OpenAI's CLIP; transformers 5's `CLIPImageProcessor` is the torchvision
backend, whose resize differs slightly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from smartmask.pretrained import _cached_snapshot, load_pretrained, model_revision

DEFAULT_HUB_CLIP = "openai/clip-vit-base-patch32"
TINY_IMAGE_SIZE = 32
# The tiny vision tower: 32×32 images in 8×8 patches (16 tokens), 2 layers of width 32 like the text side.
TINY_VISION: dict[str, Any] = {
    "image_size": TINY_IMAGE_SIZE,
    "patch_size": 8,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
TINY_PROJECTION_DIM = 32


def prompt_for(obj: str) -> str:
    """The CLIP-Score prompt for an object name: f"a photo of {obj}"."""
    return f"a photo of {obj}"


def tiny_clip(seed: int):
    """(model, tokenizer, image processor) of a tiny random-init CLIP, deterministic given `seed`.

    Text tower: `presets.TINY_TEXT` with `network.tiny_clip_tokenizer()`; vision tower: `TINY_VISION`;
    projection 32-d. The image processor resizes to 32 (shorter side) and centre-crops 32×32.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    from smartmask.model.network import tiny_clip_tokenizer
    from smartmask.presets import TINY_TEXT

    config = CLIPConfig(
        text_config=dict(TINY_TEXT), vision_config=dict(TINY_VISION), projection_dim=TINY_PROJECTION_DIM
    )
    # The weights come from torch's global RNG at construction; fork_rng seeds it for this model only and
    # restores the caller's stream afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    tokenizer = tiny_clip_tokenizer(model_max_length=TINY_TEXT["max_position_embeddings"])
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    return model.eval(), tokenizer, processor


class ClipScorer:
    """Cosine similarity of CLIP image and text embeddings, per (crop, text) pair. Build with `ClipScorer.load`."""

    scale = "cos"  # raw cosine in [-1, 1]

    def __init__(self, model, tokenizer, image_processor, *, backbone: str, device: str = "cpu", batch: int = 32):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.backbone = backbone
        self.device = device
        self.batch = batch

    @staticmethod
    def resolve(spec: str) -> str:
        """The concrete spec `load` would use ("auto" decided here), checked without loading weights: a seed that is
        not an integer, or a directory / hub id not available offline, is a one-line ValueError / ModelNotFound."""
        if spec.startswith("tiny-random"):
            seed_text = spec.partition(":")[2] or "0"
            if not seed_text.lstrip("-").isdigit():
                raise ValueError(f"CLIP backbone {spec!r}: the seed must be an integer")
            return f"tiny-random:{int(seed_text)}"
        if spec == "auto":
            return DEFAULT_HUB_CLIP if _cached_snapshot(DEFAULT_HUB_CLIP) is not None else "tiny-random:0"
        model_revision(spec)  # ModelNotFound (one line) when neither a directory nor a cached hub snapshot
        return spec

    @classmethod
    def load(cls, spec: str, device: str = "cpu", batch: int = 32) -> ClipScorer:
        """A scorer from "tiny-random:SEED", "auto", a local directory or a hub id (see the module docstring).

        A directory / hub id must hold a `CLIPModel` (safetensors), its tokenizer and its preprocessor config,
        all loaded through `load_pretrained`; the backbone is recorded as f"{spec}@{model_revision(spec)}".
        """
        if spec.startswith("tiny-random"):
            seed_text = spec.partition(":")[2] or "0"
            try:
                seed = int(seed_text)
            except ValueError:
                raise ValueError(f"CLIP backbone {spec!r}: the seed must be an integer") from None
            model, tokenizer, processor = tiny_clip(seed)
            return cls(model, tokenizer, processor, backbone=f"tiny-random-clip(seed={seed})", device=device,
                       batch=batch)  # fmt: skip
        if spec == "auto":
            # Offline check only: a snapshot already in the local Hugging Face cache; nothing is downloaded.
            cached = _cached_snapshot(DEFAULT_HUB_CLIP) is not None
            return cls.load(DEFAULT_HUB_CLIP if cached else "tiny-random:0", device=device, batch=batch)
        from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

        model = load_pretrained(CLIPModel, spec)
        tokenizer = load_pretrained(AutoTokenizer, spec)
        processor = load_pretrained(CLIPImageProcessorPil, spec)
        backbone = f"{spec}@{model_revision(spec)}"
        return cls(model, tokenizer, processor, backbone=backbone, device=device, batch=batch)

    def score(self, crops_NHWC: np.ndarray | Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """float64 (N,): cos(image embedding of crop i, text embedding of texts[i]) in [-1, 1].

        Embeddings are CLIP's projected pooled outputs (`get_image_features` / `get_text_features`), L2-normalised;
        texts longer than the tokenizer's maximum are truncated. Batched; deterministic for a given `batch` (eval
        mode, inference_mode); another batch size pads and multiplies differently, equal to ~1e-7 (float32).
        """
        import torch

        crops = list(crops_NHWC)
        if len(crops) != len(texts):
            raise ValueError(f"score: {len(crops)} crops but {len(texts)} texts")
        for c in crops:
            if c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3:
                raise ValueError(f"score: crops must be uint8 (H, W, 3), got {c.dtype} {c.shape}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch):
                pixels = self.image_processor(images=crops[i : i + self.batch], return_tensors="pt")["pixel_values"]
                tokens = self.tokenizer(
                    list(texts[i : i + self.batch]), padding=True, truncation=True, return_tensors="pt"
                )
                image = self.model.get_image_features(pixel_values=pixels.to(self.device)).pooler_output
                text = self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
                ).pooler_output
                image = torch.nn.functional.normalize(image.double(), dim=-1)
                text = torch.nn.functional.normalize(text.double(), dim=-1)
                out.append((image * text).sum(dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)
