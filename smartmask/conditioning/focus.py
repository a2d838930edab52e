"""The object-centred view: under box guidance the model also sees, and draws in, a window around the box.

On the global R×R grid an object of 1% of a 640×480 photo is a 3×3-cell blot, so the model can only say "here"
and the image-resolution edge comes from upsampling a few cells; an object's shape inside its own box is, by
contrast, the same at every size. With a box, the sampler and `suggest` therefore build a second view: the
layout inside `box_window(box)` (the box padded by FOCUS_MARGIN of its width and height on each side, so the box
fills the central 80% of the window) resized to the same R×R grid, the box drawn in it. The model takes both views
stacked (focus first, then global: 6 channels) and its mask lives in the window; `paste_window` puts it back into
the image. Without a box (mask-free, blob, scribble) the window is the whole image and both views are the global
one, so the mask is in the image's frame as before.

The window stretches the box onto the square, as the global view stretches the image (conditioning/grid.py): the
object's shape is then normalised by its box, which is what a class template fitted to a box is (the oracle of
docs/evaluation.md). Sampling is the global view's rule (nearest, pixel centres aligned) on the window's rows and
columns; window cells outside the image read "nothing painted" (0), as the margin of a box at an image edge
does at training and inference alike.
"""

from __future__ import annotations

import math

import numpy as np

from smartmask.conditioning.guidance import box_on_grid

# The box fills 1 / (1 + 2 · FOCUS_MARGIN) = 80% of the window's side: enough margin to show what the object
# stands on or leans against, while a box of 1% of the image still gets ~25×25 of the 32×32 cells.
FOCUS_MARGIN = 0.125

Window = tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels (x1, y1 exclusive), may pass the edges


def box_window(x0: float, y0: float, x1: float, y1: float) -> Window:
    """The focus window of a box (image pixels): the box padded by FOCUS_MARGIN of its size on each side, and at
    least one pixel wide and tall about the same centre (a sub-pixel box would otherwise ask `paste_window` for a
    grid of R cells per thousandth of a pixel)."""
    mx, my = FOCUS_MARGIN * (x1 - x0), FOCUS_MARGIN * (y1 - y0)
    wx0, wy0, wx1, wy1 = x0 - mx, y0 - my, x1 + mx, y1 + my
    if wx1 - wx0 < 1.0:
        c = (wx0 + wx1) / 2
        wx0, wx1 = c - 0.5, c + 0.5
    if wy1 - wy0 < 1.0:
        c = (wy0 + wy1) / 2
        wy0, wy1 = c - 0.5, c + 0.5
    return (wx0, wy0, wx1, wy1)


def full_window(H: int, W: int) -> Window:
    return (0.0, 0.0, float(W), float(H))


def window_samples(H: int, W: int, R: int, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The source rows (R,) and columns (R,) the window's R×R grid reads (clipped into the image), and whether each
    lies inside the image (bool (R,) each). For the full window this is exactly `resize_grid(H, W, R)`."""
    x0, y0, x1, y1 = window
    fy = y0 + (np.arange(R) + 0.5) * ((y1 - y0) / R)
    fx = x0 + (np.arange(R) + 0.5) * ((x1 - x0) / R)
    ys, xs = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    in_y, in_x = (ys >= 0) & (ys < H), (xs >= 0) & (xs < W)
    return np.clip(ys, 0, H - 1), np.clip(xs, 0, W - 1), in_y, in_x


def sample_window(arr_HW: np.ndarray, R: int, window: Window, fill=0) -> np.ndarray:
    """(H, W, ...) → (R, R, ...): the window on the grid, `fill` where it passes the image's edge."""
    H, W = arr_HW.shape[:2]
    ys, xs, in_y, in_x = window_samples(H, W, R, window)
    out = arr_HW[ys[:, None], xs[None, :]]
    outside = ~(in_y[:, None] & in_x[None, :])
    if outside.any():
        out = out.copy()
        out[outside] = fill
    return out


def box_in_window(box: tuple[float, float, float, float], window: Window, R: int) -> tuple[float, ...]:
    """A box in image pixels → the same box in the window's R×R cell coordinates."""
    wx0, wy0, wx1, wy1 = window
    sx, sy = R / (wx1 - wx0), R / (wy1 - wy0)
    return ((box[0] - wx0) * sx, (box[1] - wy0) * sy, (box[2] - wx0) * sx, (box[3] - wy0) * sy)


def box_on_window(box: tuple[float, float, float, float], window: Window, R: int) -> np.ndarray:
    """G (R, R) of a box (image pixels) on the window's grid: the cells whose centres it covers (`box_on_grid`, the
    rule of the global view). The one definition the sampler, `suggest` and the grid check draw the box by."""
    return box_on_grid(*box_in_window(box, window, R), R, R, R)


def paste_window(p_RR: np.ndarray, window: Window, H: int, W: int, threshold: float = 0.5) -> np.ndarray:
    """The model's probabilities on the window's grid → bool (H, W): bicubic resize of the window's part inside
    the image onto its pixels (uint8, then threshold, as `suggest.to_image`); False outside the window."""
    from PIL import Image

    x0, y0, x1, y1 = window
    R = p_RR.shape[0]
    c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    c1, r1 = min(W, math.ceil(x1)), min(H, math.ceil(y1))
    out = np.zeros((H, W), bool)
    if c1 <= c0 or r1 <= r0:
        return out
    sx, sy = R / (x1 - x0), R / (y1 - y0)
    # The pixels [c0, c1) × [r0, r1) cover this part of the R×R grid (PIL reads a float source box). A pixel at the
    # window's edge reaches past the grid, and a shrinking bicubic filter reaches 2 source cells per output pixel,
    # so the grid is padded with zeros (outside the window: not the object). A window is at least a pixel wide
    # (`box_window`), so the pad is at most 2R + 2 cells.
    pad = math.ceil(2 * max(sx, sy)) + 2
    src = ((c0 - x0) * sx + pad, (r0 - y0) * sy + pad, (c1 - x0) * sx + pad, (r1 - y0) * sy + pad)
    p8 = np.pad(np.clip(np.rint(np.asarray(p_RR, np.float32) * 255.0), 0, 255).astype(np.uint8), pad)
    up = Image.fromarray(p8, mode="L").resize((c1 - c0, r1 - r0), Image.Resampling.BICUBIC, box=src)
    out[r0:r1, c0:c1] = np.asarray(up) > np.uint8(min(254, int(threshold * 255)))
    return out


def window_to_grid(m_RR: np.ndarray, window: Window, H: float, W: float) -> np.ndarray:
    """A mask on the window's grid → the global R×R grid of an H×W image (any unit: pixels, or 1×1 for normalised
    windows). Nearest: each global cell reads the window cell under its centre; False outside the window. For
    checks that compare the two frames at model resolution."""
    R = m_RR.shape[0]
    x0, y0, x1, y1 = window
    centres = np.arange(R) + 0.5
    iy = np.floor((centres * (H / R) - y0) * (R / (y1 - y0))).astype(np.int64)
    ix = np.floor((centres * (W / R) - x0) * (R / (x1 - x0))).astype(np.int64)
    ok = ((iy >= 0) & (iy < R))[:, None] & ((ix >= 0) & (ix < R))[None, :]
    out = np.asarray(m_RR)[np.clip(iy, 0, R - 1)[:, None], np.clip(ix, 0, R - 1)[None, :]]
    return np.where(ok, out, False).astype(bool)
