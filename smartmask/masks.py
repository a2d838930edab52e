"""COCO RLE helpers over pycocotools. Masks live as compressed RLE everywhere; decoding is the cost to avoid.

Shapes: `mask_HW` is uint8/bool (H, W); an RLE is `{"size": [H, W], "counts": str}` (compressed, utf-8).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

# pycocotools' area()/toBbox() build their result with a uint8 count under NumPy 2, so 256+ RLEs in one
# call overflow. Every batched call goes through chunks of this size.
_CHUNK = 255


class MaskError(ValueError):
    """A segmentation that cannot be turned into a mask; `reason` is the reject code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two decoded binary masks of the same shape (any dtype; nonzero = on); 1.0 when both are empty.
    (`iou` below takes two RLEs.)"""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def _to_str(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _to_bytes(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def encode(mask_HW: np.ndarray) -> dict:
    """Binary mask → compressed RLE with str counts."""
    return _to_str(mask_utils.encode(np.asfortranarray(mask_HW.astype(np.uint8))))


def decode(rle: dict) -> np.ndarray:
    """Compressed RLE → uint8 mask (H, W)."""
    return mask_utils.decode(_to_bytes(rle))


def area(rles: Sequence[dict]) -> np.ndarray:
    out = [mask_utils.area([_to_bytes(r) for r in rles[i : i + _CHUNK]]) for i in range(0, len(rles), _CHUNK)]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def bbox(rles: Sequence[dict]) -> np.ndarray:
    """(N, 4) xywh boxes."""
    out = [mask_utils.toBbox([_to_bytes(r) for r in rles[i : i + _CHUNK]]) for i in range(0, len(rles), _CHUNK)]
    return np.concatenate(out).reshape(-1, 4) if out else np.zeros((0, 4))


def merge(rles: Sequence[dict], intersect: bool = False) -> dict:
    return _to_str(mask_utils.merge([_to_bytes(r) for r in rles], intersect=intersect))


def from_polygons(polys: Sequence[Sequence[float]], h: int, w: int) -> dict:
    """Flat polygons [[x1,y1,x2,y2,...], ...] → one compressed RLE (union of the parts)."""
    return _to_str(mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in polys], h, w)))


def from_uncompressed(counts: Sequence[int], h: int, w: int) -> dict:
    return _to_str(mask_utils.frPyObjects({"size": [h, w], "counts": list(counts)}, h, w))


def iou(a: dict, b: dict) -> float:
    return float(mask_utils.iou([_to_bytes(a)], [_to_bytes(b)], [0])[0, 0])
