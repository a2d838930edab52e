"""Eq. 5 of the paper, the one implementation used at training and at inference:

    S~ = S ⊙ (1 − αG) + αG,    α = 0.7,    G ∈ [0, 1]^{H×W} broadcast over the layout's channels.

G is one of four kinds (paper §3.2): `none` (zeros: mask-free insertion), `box` (the target's bounding box,
filled), `blob` (a gaussian around the target: coarse spatial guidance), `scribble` (the target dilated: a user's
free-form scribble). At training G is derived from the ground-truth mask A_{k+1} (`guidance_from_mask`); at
inference it comes from the user (`box_guidance`, `point_guidance`, `scribble_guidance`). The training-time
generators only turn the mask into the user's parameters and then call the user-input functions, so a box from a
mask and the same box typed in by a user give the identical G.

Coordinates are continuous pixel coordinates: pixel (row i, column j) covers [j, j+1) × [i, i+1) and its centre is
(j + 0.5, i + 0.5). A box (x0, y0, x1, y1) therefore has exclusive x1/y1: the box of a mask whose columns are
c_min..c_max is x0 = c_min, x1 = c_max + 1 (xyxy, as everywhere: `smartmask.boxes`). All G arrays are float32 (H, W) in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from smartmask.boxes import box_pixels, mask_box

GUIDANCE_KINDS: tuple[str, ...] = ("none", "box", "blob", "scribble")

# α = 0.7 (paper §3.2): large enough that the guided region is clearly marked (it is pulled 70% of the way to
# white), small enough that the layout's own colours stay recognisable underneath (30% survives), so the model
# still sees which objects the guidance overlaps — it "adds the guidance while preserving the layout content".
ALPHA = 0.7

# Training-time randomisation (fractions are of the mask's bounding box or of the image).
BLOB_JITTER = 0.1  # centre jitter: std as a fraction of the bbox width/height
BLOB_SCALE = (0.75, 1.25)  # r = mean half-extent of the bbox × U(BLOB_SCALE)
SCRIBBLE_RADIUS = (0.02, 0.06)  # dilation radius: U(SCRIBBLE_RADIUS) × max(H, W) pixels, at least 1


def apply_guidance(layout_HWC: np.ndarray, g_HW: np.ndarray, alpha: float = ALPHA, *,
                   channel_axis: int = -1) -> np.ndarray:
    """Eq. 5: `layout_HWC` float (H, W, C) in [0, 1], `g_HW` float (H, W) in [0, 1] → float32, the layout's shape.

    G = 0 leaves the layout unchanged; G = 1 maps a pixel to 1 − α(1 − S) (towards white). `channel_axis=0`
    takes and returns a (C, H, W) layout instead (the training sampler's layout, without a transposed copy)."""
    layout = np.asarray(layout_HWC, dtype=np.float32)
    g = np.asarray(g_HW, dtype=np.float32)
    if layout.ndim != 3 or channel_axis not in (0, -1, 2):
        raise ValueError(f"layout must be 3-d with channels first or last; got {layout.shape}, axis {channel_axis}")
    first = channel_axis == 0
    if (layout.shape[1:] if first else layout.shape[:2]) != g.shape:
        raise ValueError(f"layout {layout.shape} and G {g.shape} differ in size")
    if not g.any():  # G = 0: S ⊙ 1 + 0 is S exactly; skip the arithmetic
        return layout.copy()
    ag = np.float32(alpha) * g
    keep = np.float32(1.0) - ag
    if first:
        out = layout * keep[None]
        out += ag[None]
    else:
        out = layout * keep[..., None]
        out += ag[..., None]
    return out


# ---------------------------------------------------------------------------------------------------------------
# From user input (inference). The training generators below call these.


def box_guidance(x0: float, y0: float, x1: float, y1: float, H: int, W: int) -> np.ndarray:
    """The box filled with 1: every pixel the box [x0, x1) × [y0, y1) touches (`box_pixels`)."""
    c0, r0, c1, r1 = box_pixels(x0, y0, x1, y1, H, W)
    g = np.zeros((H, W), np.float32)
    g[r0:r1, c0:c1] = 1.0
    return g


def box_on_grid(x0: float, y0: float, x1: float, y1: float, H: int, W: int, R: int) -> np.ndarray:
    """G (R, R) for a box given in the pixels of an (H, W) image, on the model's R×R nearest-neighbour grid.

    A grid cell is in the box when its sample point (the source pixel `resize_grid` reads for it, i.e. its centre)
    is: the same rule that turns a ground-truth mask into the training target, whose box the training sampler then
    takes. Filling every cell the box merely touches (`box_guidance` on scaled coordinates) inflates the box by up
    to a cell on each side, and the model, trained on tight boxes, draws a correspondingly fatter object. At least one
    cell.
    """
    sx, sy = R / W, R / H
    c0, c1 = math.ceil(x0 * sx - 0.5), math.ceil(x1 * sx - 0.5)
    r0, r1 = math.ceil(y0 * sy - 0.5), math.ceil(y1 * sy - 0.5)
    c0, r0 = min(max(c0, 0), R - 1), min(max(r0, 0), R - 1)
    return box_guidance(c0, r0, max(c1, c0 + 1), max(r1, r0 + 1), R, R)


def point_guidance(x: float, y: float, r: float, H: int, W: int) -> np.ndarray:
    """A gaussian blob centred on (x, y) with σ = r / 2, so G ≈ e⁻² ≈ 0.14 at distance r: `r` reads as the
    blob's visible radius. σ is at least half a pixel; the sampled blob is scaled to peak at exactly 1."""
    sigma = max(float(r) / 2.0, 0.5)
    gx = np.exp(-0.5 * ((np.arange(W, dtype=np.float32) + 0.5 - x) / sigma) ** 2)
    gy = np.exp(-0.5 * ((np.arange(H, dtype=np.float32) + 0.5 - y) / sigma) ** 2)
    g = np.outer(gy, gx).astype(np.float32, copy=False)
    peak = float(g.max())
    if peak <= 0.0:  # the centre lies so far outside the image that nothing is left
        return np.zeros((H, W), np.float32)
    if peak != 1.0:
        g *= np.float32(1.0 / peak)
    return g


def scribble_guidance(mask_HW: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The user's scribble image as given, binarised: bool as is; integers are read as 0..255 (or 0/1), floats
    as 0..1, both cut at `threshold`; an (H, W, C) image counts a pixel when any channel is on."""
    m = np.asarray(mask_HW)
    if m.ndim == 3:
        m = m.max(axis=2)
    if m.ndim != 2:
        raise ValueError(f"scribble must be (H, W) or (H, W, C), got {m.shape}")
    if m.dtype == bool:
        return m.astype(np.float32)
    if np.issubdtype(m.dtype, np.integer):
        scale = 255.0 if m.size and int(m.max()) > 1 else 1.0
        return (m > threshold * scale).astype(np.float32)
    return (m > threshold).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# From a ground-truth mask (training).


def box_from_mask(mask_HW: np.ndarray) -> np.ndarray:
    H, W = mask_HW.shape
    b = mask_box(mask_HW)
    return np.zeros((H, W), np.float32) if b is None else box_guidance(*b, H, W)


def blob_from_mask(mask_HW: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A gaussian on the mask's centroid (jittered by BLOB_JITTER of the bbox size) with r ∝ the bbox's extent."""
    m = np.asarray(mask_HW, dtype=bool)
    H, W = m.shape
    b = mask_box(m)
    if b is None:
        return np.zeros((H, W), np.float32)
    x0, y0, x1, y1 = b
    bw, bh = x1 - x0, y1 - y0
    sub = m[y0:y1, x0:x1]
    n = float(sub.sum())
    cx = x0 + float(sub.sum(axis=0) @ np.arange(bw)) / n + 0.5
    cy = y0 + float(sub.sum(axis=1) @ np.arange(bh)) / n + 0.5
    jx, jy = rng.normal(0.0, BLOB_JITTER, 2)
    cx = min(max(cx + jx * bw, 0.0), float(W))
    cy = min(max(cy + jy * bh, 0.0), float(H))
    r = 0.25 * (bw + bh) * rng.uniform(*BLOB_SCALE)
    return point_guidance(cx, cy, r, H, W)


def dilate(mask_HW: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disk of `radius` pixels (Euclidean distance ≤ radius), computed on the mask's bbox
    padded by the radius only: the cost follows the object's size, not the image's."""
    m = np.asarray(mask_HW, dtype=bool)
    H, W = m.shape
    b = mask_box(m)
    out = np.zeros((H, W), bool)
    if b is None:
        return out
    x0, y0, x1, y1 = b
    c0, r0, c1, r1 = max(0, x0 - radius), max(0, y0 - radius), min(W, x1 + radius), min(H, y1 + radius)
    # Distance of every pixel of the crop to its nearest mask pixel (all mask pixels lie inside the crop).
    dist = ndimage.distance_transform_edt(~m[r0:r1, c0:c1])
    out[r0:r1, c0:c1] = dist <= radius
    return out


def scribble_from_mask(mask_HW: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mask dilated by U(SCRIBBLE_RADIUS) × max(H, W) pixels (≥ 1): a superset of the target."""
    H, W = mask_HW.shape
    radius = max(1, round(rng.uniform(*SCRIBBLE_RADIUS) * max(H, W)))
    return scribble_guidance(dilate(mask_HW, radius))


def guidance_from_mask(kind: str, mask_HW: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """G of `kind` (one of GUIDANCE_KINDS) from a ground-truth binary mask; zeros for an empty mask."""
    m = np.asarray(mask_HW, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {m.shape}")
    if kind == "none":
        return np.zeros(m.shape, np.float32)
    if kind == "box":
        return box_from_mask(m)
    if kind == "blob":
        return blob_from_mask(m, rng)
    if kind == "scribble":
        return scribble_from_mask(m, rng)
    raise ValueError(f"unknown guidance kind {kind!r}; expected one of {GUIDANCE_KINDS}")
