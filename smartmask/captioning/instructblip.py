"""The InstructBLIP captioner (paper §4: context captions T_context), batched, usable directly or in Ray Data.

    cap = InstructBlipCaptioner("Salesforce/instructblip-flan-t5-xl", prompt="A short image description:")
    out = cap({"image_id": np.array(["a", "b"]), "uri": np.array(["/data/a.jpg", "/data/b.jpg"])})

    ds.map_batches(InstructBlipCaptioner, fn_constructor_kwargs={"model": ..., "prompt": ...},
                   batch_size=16, concurrency=2, num_gpus=1)

The model and processor are loaded once per instance (one Ray actor = one copy) through the project's loader
(local directory or hub id, safetensors only). Each batch maps `image_id`, `uri` to `image_id`, `caption`,
`error_reason`, `error_detail`: a bad image never fails the batch, it becomes a row with a reason
(`image_unreadable`, `image_too_large`, `caption_failed`) and an empty caption, and every input row yields
exactly one output row, in order. No Ray import here: Ray only calls the class.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from smartmask.inference.images import decode_pixels, open_image
from smartmask.pretrained import load_pretrained, model_revision

IMAGE_UNREADABLE = "image_unreadable"
IMAGE_TOO_LARGE = "image_too_large"
CAPTION_FAILED = "caption_failed"
OUTPUT_COLUMNS = ("image_id", "caption", "error_reason", "error_detail")

_DTYPES = {
    "fp32": "float32", "float32": "float32", "float": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
}


def captioner_id(model: str) -> str:
    """`instructblip:<model>@<revision>`: names the exact weights that made a caption."""
    return f"instructblip:{model}@{model_revision(model)}"


class ImageTooLarge(ValueError):
    pass


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_image(uri: str, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Open an image as RGB within Pillow's decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`).

    Raises `ImageTooLarge` over the limit (checked from the header, before decoding) and OSError/ValueError
    for missing, truncated or corrupt files. `draft_size` lets JPEG decode at a reduced scale that is still
    at least that large (the model resizes to its input size anyway). The pixels come from the library's one
    decoder, `smartmask.inference.images.decode_pixels` (EXIF orientation, 16-bit and float modes, the colour
    of a transparent image as stored), so a caption describes the same pixels `suggest` / `insert` see.
    """
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the explicit check below decides
            with open_image(path) as im:
                w, h = im.size
                limit = Image.MAX_IMAGE_PIXELS
                if limit and w * h > limit:
                    raise ImageTooLarge(f"{w}x{h} = {w * h} pixels exceeds Image.MAX_IMAGE_PIXELS = {limit}")
                if draft_size is not None and im.format == "JPEG":
                    im.draft("RGB", draft_size)
                im.load()
                rgb, _ = decode_pixels(im)  # the alpha plays no part in a caption
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    return Image.fromarray(rgb)


def _torch_dtype(dtype: str | None, device):
    import torch

    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}: expected one of fp32, fp16, bf16")
    return getattr(torch, name)


class InstructBlipCaptioner:
    """Captions batches of images with InstructBLIP; one model copy per instance (per Ray actor)."""

    def __init__(
        self,
        model: str,
        prompt: str,
        max_new_tokens: int = 40,
        device: str | None = None,
        dtype: str | None = None,
        generate_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        import torch
        from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

        self.model_source = str(model)
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _torch_dtype(dtype, self.device)
        # greedy by default: the same image gives the same caption on every rebuild
        self.generate_kwargs = {"do_sample": False, "num_beams": 1, "max_new_tokens": self.max_new_tokens,
                                **(generate_kwargs or {})}

        self.processor = load_pretrained(InstructBlipProcessor, self.model_source)
        self.model = load_pretrained(InstructBlipForConditionalGeneration, self.model_source, dtype=self.dtype)
        self.model.to(self.device)
        self.model.eval()

        tok = self.processor.tokenizer
        if not self.model.config.text_config.is_encoder_decoder:
            tok.padding_side = "left"  # decoder-only LMs continue from the right end of the prompt
        gen = self.model.generation_config
        if gen.pad_token_id is None and tok.pad_token_id is not None:
            gen.pad_token_id = tok.pad_token_id
        size = getattr(self.processor.image_processor, "size", None) or {}
        side = max(int(size.get("height", 0) or 0), int(size.get("width", 0) or 0),
                   int(size.get("shortest_edge", 0) or 0)) or 224
        self._draft = (2 * side, 2 * side)

    # -- one batch -------------------------------------------------------------------------------------------
    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        image_ids = [str(x) for x in batch["image_id"]]
        uris = [str(x) for x in batch["uri"]]
        n = len(image_ids)
        captions, reasons, details = [""] * n, [""] * n, [""] * n

        images, rows = [], []
        for i, uri in enumerate(uris):
            try:
                images.append(decode_image(uri, self._draft))
                rows.append(i)
            except ImageTooLarge as exc:
                reasons[i], details[i] = IMAGE_TOO_LARGE, _one_line(exc)
            except Exception as exc:  # missing, truncated, corrupt, unsupported format, ...
                reasons[i], details[i] = IMAGE_UNREADABLE, _one_line(exc)

        if images:
            try:
                texts = self.generate(images)
            except Exception:
                self._free_cache()
                texts = []
                for i, im in zip(rows, images, strict=True):  # isolate the culprit(s)
                    try:
                        texts.append(self.generate([im])[0])
                    except Exception as exc:
                        self._free_cache()
                        texts.append(None)
                        reasons[i], details[i] = CAPTION_FAILED, _one_line(exc)
            for i, text in zip(rows, texts, strict=True):
                if text is not None:
                    captions[i] = text

        return {
            "image_id": np.array(image_ids, dtype=object),
            "caption": np.array(captions, dtype=object),
            "error_reason": np.array(reasons, dtype=object),
            "error_detail": np.array(details, dtype=object),
        }

    def generate(self, images: list[Image.Image]) -> list[str]:
        """Captions for decoded RGB images, one batched `generate`; raises on failure."""
        import torch

        inputs = self.processor(images=images, text=[self.prompt] * len(images), return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self.generate_kwargs)
        prompt_ids = inputs["input_ids"]
        k = prompt_ids.shape[1]
        # decoder-only LMs return prompt + continuation; keep the continuation
        if out.shape[1] >= k and torch.equal(out[:, :k], prompt_ids.to(out.device)):
            out = out[:, k:]
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [self._clean(t) for t in texts]

    def _clean(self, text: str) -> str:
        text = " ".join(text.split())
        prompt = " ".join(self.prompt.split())
        if prompt and text.lower().startswith(prompt.lower()):  # some models echo the prompt
            text = text[len(prompt):].strip()
        return text

    def _free_cache(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
