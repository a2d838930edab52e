"""Layout from a real image: a panoptic segmenter (transformers Mask2Former) → `SceneLayout` in a vocabulary.

    seg = PanopticSegmenter.load("facebook/mask2former-swin-large-coco-panoptic")   # or a local directory
    scene = seg.segment(image_HWC_uint8, vocab)          # vocab: the model version's vocabulary.parquet
    S_I = layout_image(scene, vocab, R)

- Loading goes through `smartmask.pretrained.load_pretrained` (safetensors only, offline-aware), the model
  and its image processor from the same source; `id` names the weights ("mask2former:<source>@<revision>").
- Labels: each segment's label (`model.config.id2label`) goes through the synonym table
  (`smartmask.inference.synonyms`); what maps to nothing becomes an "unknown" region, counted in
  `SceneLayout.unknown`. Every segment the processor returns becomes exactly one region.
- Order: panoptic output has no depth order, and S_I must be painted back to front. Heuristic: stuff first
  (largest area first: sky and walls behind smaller ground patches), then things by the lowest row of their mask,
  ascending: in a photo taken from standing height, an object whose bottom is further down the image stands
  nearer the camera (the same ground-plane rule the synthetic world is built with). Ties: larger area first.
  Panoptic segments do not overlap, so the order only matters for what the model reads into it.
- Large images: the segmenter runs on a copy whose long side is at most `max_side` (bilinear, antialiased);
  the segment-id map is brought back to the image size by nearest neighbour, so a 4000×3000 photo neither runs
  the network nor holds the per-query mask stack at full size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from smartmask.conditioning.vocabulary import Vocabulary
from smartmask.inference.layout import UNKNOWN, LayoutError, Region, SceneLayout
from smartmask.inference.synonyms import COCO_PANOPTIC_STUFF, label_map, load_synonyms
from smartmask.pretrained import load_pretrained, model_revision


@dataclass(frozen=True, kw_only=True, slots=True)
class SegmenterConfig:
    """Panoptic post-processing (transformers' defaults) and the size the network sees."""

    max_side: int = 1024  # long side of the copy the segmenter runs on; larger images are scaled down first
    threshold: float = 0.5  # class score a query needs to become a segment
    mask_threshold: float = 0.5  # binarises the (score-weighted) mask probabilities
    overlap_mask_area_threshold: float = 0.8  # drops queries mostly covered by others

    def __post_init__(self) -> None:
        if self.max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {self.max_side}")
        for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each output pixel of a nearest resize n_in → n_out (pixel centres aligned, as
    `resize_grid`). Upsampling this way reads every source pixel, so no segment vanishes."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise LayoutError(f"segment() needs an (H, W, 3) uint8 RGB image, got {desc}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise LayoutError(f"segment() got an empty image {image.shape}")
    return image


def order_back_to_front(regions: list[Region]) -> list[Region]:
    """Stuff first, largest area first; then things by the lowest row of their mask, ascending (larger area first
    on ties). Stable for equal keys."""

    def key(r: Region) -> tuple:
        area = int(r.mask_HW.sum())
        if r.is_stuff:
            return (0, -area, 0)
        rows = np.flatnonzero(r.mask_HW.any(axis=1))
        bottom = int(rows[-1]) if rows.size else -1
        return (1, bottom, -area)

    return sorted(regions, key=key)


class PanopticSegmenter:
    """A Mask2Former panoptic model with its image processor; `segment` turns an image into a `SceneLayout`."""

    def __init__(self, model, processor, source: str, revision: str, config: SegmenterConfig = SegmenterConfig(),
                 device: str | None = None):
        self.model = model
        self.processor = processor
        self.source = source
        self.revision = revision
        self.config = config
        self.device = device or "cpu"
        id2label = getattr(model.config, "id2label", None) or {}
        self.labels: dict[int, str] = {int(i): str(lab) for i, lab in id2label.items()}

    @classmethod
    def load(cls, source: str | os.PathLike, device: str | None = None,
             config: SegmenterConfig = SegmenterConfig()) -> PanopticSegmenter:
        """Model + image processor from a local directory or hub id, through the project's loader."""
        import torch
        from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

        src = os.fspath(source)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = load_pretrained(Mask2FormerForUniversalSegmentation, src)
        processor = load_pretrained(Mask2FormerImageProcessor, src)
        model.to(device).eval()
        return cls(model, processor, src, model_revision(src), config, device)

    @property
    def id(self) -> str:
        return f"mask2former:{self.source}@{self.revision}"

    def _run(self, image: np.ndarray, fuse: set[str]) -> tuple[np.ndarray, list[dict]]:
        """Segment-id map (h, w) int32 of `image` (0 = no segment) and the processor's segments_info; classes
        named in `fuse` come back as one segment each."""
        import torch

        h, w = image.shape[:2]
        if not image.flags.writeable:  # e.g. np.asarray(PIL image); torch.from_numpy warns on read-only arrays
            image = image.copy()
        stuff_ids = {i for i, lab in self.labels.items() if lab in fuse}
        inputs = self.processor(images=image, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model(**inputs)
        cfg = self.config
        res = self.processor.post_process_panoptic_segmentation(
            out, threshold=cfg.threshold, mask_threshold=cfg.mask_threshold,
            overlap_mask_area_threshold=cfg.overlap_mask_area_threshold,
            label_ids_to_fuse=stuff_ids, target_sizes=[(h, w)],
        )[0]
        seg = res["segmentation"].to("cpu").numpy().astype(np.int32)
        seg[seg < 0] = 0  # "no segment at all" comes back as -1 everywhere
        return seg, list(res["segments_info"])

    def segment(self, image_HWC_uint8: np.ndarray, vocab: Vocabulary,
                synonyms: Mapping[str, str | None] | str | os.PathLike | None = None) -> SceneLayout:
        """The image's layout in `vocab`, back to front. `synonyms`: an override on top of the default table
        (a dict or a JSON file path; see `smartmask.inference.synonyms.load_synonyms`)."""
        from PIL import Image

        image = _check_image(image_HWC_uint8)
        H, W = image.shape[:2]
        table = load_synonyms(synonyms)
        mapping = label_map(self.labels.values(), vocab.labels, table)
        vocab_stuff = {lab: bool(s) for lab, s in zip(vocab.labels, vocab.is_stuff, strict=True) if lab}
        # Fused (one segment per class) and ordered as stuff: the segmenter's stuff classes, and classes mapped
        # onto a stuff label of the vocabulary.
        stuff_sources = set(COCO_PANOPTIC_STUFF) | {s for s, m in mapping.items() if m and vocab_stuff[m]}

        scale = self.config.max_side / max(H, W)
        if scale < 1.0:
            h, w = max(1, round(H * scale)), max(1, round(W * scale))
            small = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))
        else:
            small = image
        seg, infos = self._run(small, stuff_sources)
        if seg.shape != (H, W):
            seg = seg[_nearest_index(H, seg.shape[0])[:, None], _nearest_index(W, seg.shape[1])[None, :]]

        # A fused stuff class appears once per query it fused: one region per segment id (its best score).
        by_id: dict[int, dict] = {}
        for info in infos:
            sid = int(info["id"])
            if sid not in by_id or info["score"] > by_id[sid]["score"]:
                by_id[sid] = info
        regions = []
        for sid, info in sorted(by_id.items()):
            source_label = self.labels.get(int(info["label_id"]), f"label_{int(info['label_id'])}")
            label = mapping.get(source_label)
            is_stuff = vocab_stuff[label] if label else source_label in stuff_sources
            regions.append(Region(label or UNKNOWN, source_label, seg == sid, is_stuff, float(info["score"])))
        return SceneLayout(H, W, tuple(order_back_to_front(regions)), f"segmenter:{self.id}")
