"""Boxes, one convention everywhere: xyxy in continuous pixel coordinates, x1/y1 exclusive.

Pixel (row i, column j) covers [j, j+1) × [i, i+1), so the box of a mask whose columns are c_min..c_max is
x0 = c_min, x1 = c_max + 1. Other conventions stay at the edges: the lake's `layers.bbox` is COCO's xywh (as the
sources write it; `xywh_to_xyxy` converts on reading), and `--bbox x0,y0,x1,y1` is already xyxy.
"""

from __future__ import annotations

import math

import numpy as np


def mask_box(mask_HW: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of a binary mask, x1/y1 exclusive; None when the mask is empty."""
    m = np.asarray(mask_HW, dtype=bool)
    cols = np.flatnonzero(m.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(m.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive ends, of a non-empty bool mask (row/column reductions only: no index arrays)."""
    box = mask_box(mask)
    if box is None:
        raise ValueError("mask is empty: nothing to inpaint")
    return box


def box_pixels(x0: float, y0: float, x1: float, y1: float, H: int, W: int) -> tuple[int, int, int, int]:
    """(c0, r0, c1, r1), exclusive ends: every pixel the box [x0, x1) × [y0, y1) touches (at least one), clipped."""
    c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    return c0, r0, min(W, max(math.ceil(x1), c0 + 1)), min(H, max(math.ceil(y1), r0 + 1))


def box_mask(box: tuple[float, float, float, float], H: int, W: int) -> np.ndarray:
    """The box baseline's mask: every pixel the box [x0, x1) x [y0, y1) touches, as bool (H, W).

    A box that is empty or not inside the image is an error (one line), never clipped silently.
    """
    if len(box) != 4:
        raise ValueError(f"box must be (x0, y0, x1, y1); got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box {box!r} has a non-finite coordinate")
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise ValueError(f"box {box!r} is empty or not inside the {W}x{H} image (need 0 <= x0 < x1 <= W, same for y)")
    c0, r0, c1, r1 = box_pixels(x0, y0, x1, y1, H, W)
    m = np.zeros((H, W), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def xywh_to_xyxy(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    """COCO's (x, y, width, height) → (x0, y0, x1, y1)."""
    return x, y, x + w, y + h
