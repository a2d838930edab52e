"""Per-item evaluation metrics on numpy arrays: mask quality (boundary F, best-of-N IoU, diversity) and background
preservation of an insertion (the paper's Norm. L2-BG; BrushBench-style background PSNR / MSE).

Masks are (H, W) arrays (any dtype; nonzero = on). Images are (H, W, C) arrays, uint8 in [0, 255] or float in
[0, 1]; both are compared on the [0, 1] scale. Every function returns a plain Python float (or None / a tuple where
stated) so that results go into table rows as they are.

LPIPS (the third background metric BrushBench reports) needs pretrained AlexNet/VGG weights that cannot be
obtained offline; it is not implemented here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from smartmask.boxes import mask_box
from smartmask.conditioning.guidance import dilate
from smartmask.masks import mask_iou

# DAVIS (Perazzi et al. 2016, davis2017-evaluation `f_boundary.py`): boundaries match within 0.008 of the diagonal.
BOUNDARY_TOL_FRACTION = 0.008
# Background band excluded around the object: 1% of the longer image side (see `default_bg_dilation`).
BG_DILATION_FRACTION = 0.01


def default_tolerance(H: int, W: int) -> int:
    """The boundary-matching tolerance in pixels: max(1, round(0.008 × √(H² + W²))).

    0.008 of the image diagonal is DAVIS's fraction. DAVIS's own code rounds UP (`np.ceil`), so at sizes where the
    product's fraction is below .5 this tolerance is 1 px tighter than DAVIS's (e.g. 1 px vs 2 px at 100×100).
    """
    return max(1, round(BOUNDARY_TOL_FRACTION * math.hypot(H, W)))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """mask & ~erode(mask): 4-connected erosion (3×3 cross), pixels outside the array count as off."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def boundary_f(pred_HW: np.ndarray, gt_HW: np.ndarray, tol_px: float | None = None) -> float:
    """Boundary F-measure (DAVIS-style) of a predicted mask against the ground truth.

    Definition: the boundary of a mask is `mask & ~erode(mask)` (4-connectivity; the image border counts as
    outside, so a mask touching the border has a boundary there). With tol = `tol_px` (default
    `default_tolerance(H, W)`), precision P = share of pred boundary pixels whose Euclidean distance to the nearest
    gt boundary pixel is ≤ tol, recall R = share of gt boundary pixels within tol of a pred boundary pixel, and
    F = 2PR / (P + R) (0 when P + R = 0). Both masks empty → 1.0; exactly one empty → 0.0.

    Cost follows the objects, not the image: the distance transforms run on the union bounding box of both masks
    padded by 1 px (every boundary pixel lies inside that box, so distances there are exact; the 1 px margin keeps
    the crop edge off both masks, so erosion at the crop edge equals erosion in the full image).
    """
    pred, gt = np.asarray(pred_HW, bool), np.asarray(gt_HW, bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"boundary_f: masks must be 2-D of one shape, got {pred.shape} and {gt.shape}")
    H, W = pred.shape
    tol = default_tolerance(H, W) if tol_px is None else float(tol_px)
    box = mask_box(pred | gt)
    if box is None:
        return 1.0
    x0, y0, x1, y1 = box
    c0, r0, c1, r1 = max(0, x0 - 1), max(0, y0 - 1), min(W, x1 + 1), min(H, y1 + 1)
    p, g = pred[r0:r1, c0:c1], gt[r0:r1, c0:c1]
    if not p.any() or not g.any():
        return 0.0
    pb, gb = _boundary(p), _boundary(g)
    # distance_transform_edt gives each pixel's distance to the nearest zero: zeros = the other boundary.
    precision = float(np.mean(ndimage.distance_transform_edt(~gb)[pb] <= tol))
    recall = float(np.mean(ndimage.distance_transform_edt(~pb)[gb] <= tol))
    if precision + recall == 0.0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def best_of_n_iou(masks: Sequence[np.ndarray], gt: np.ndarray) -> float:
    """max over the N suggestions of IoU(mask_i, gt) (`smartmask.masks.mask_iou`: two empty masks have IoU 1).
    NaN for N = 0 (the bootstrap in `intervals` drops NaN items)."""
    if len(masks) == 0:
        return float("nan")
    return max(mask_iou(m, gt) for m in masks)


def diversity(masks: Sequence[np.ndarray]) -> float | None:
    """1 − mean IoU over all N(N−1)/2 unordered pairs of the N masks (`mask_iou`: two empty masks count as IoU 1,
    i.e. as identical). None for fewer than 2 masks. 0 = all identical; 1 = pairwise disjoint."""
    if len(masks) < 2:
        return None
    ious = [mask_iou(a, b) for a, b in itertools.combinations(masks, 2)]
    return 1.0 - float(np.mean(ious))


def default_bg_dilation(H: int, W: int) -> int:
    """Pixels the object mask is dilated by before the background is measured: max(1, round(0.01 × max(H, W))).

    Why: an inpainter blends a seam around the object (soft mask edges, VAE decoding spreads a few pixels), which
    is part of inserting the object, not damage to the background; a band of 1% of the longer side (≥ 1 px)
    leaves that seam out of the background metrics at every resolution alike.
    """
    return max(1, round(BG_DILATION_FRACTION * max(H, W)))


def _unit(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float64)
    raise ValueError(f"images must be uint8 in [0, 255] or float in [0, 1], got {a.dtype}")


def _background(out_HWC, in_HWC, object_mask_HW, dilate_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out, inp = _unit(out_HWC), _unit(in_HWC)
    if out.shape != inp.shape:
        raise ValueError(f"output {out.shape} and input {inp.shape} differ in shape")
    if out.ndim == 2:  # single-channel images: one channel axis, so B broadcasts the same way
        out, inp = out[..., None], inp[..., None]
    mask = np.asarray(object_mask_HW, bool)
    if mask.shape != out.shape[:2]:
        raise ValueError(f"object mask {mask.shape} does not match the images {out.shape[:2]}")
    bg = ~dilate(mask, int(dilate_px))
    return out, inp, bg


def norm_l2_bg(out_HWC: np.ndarray, in_HWC: np.ndarray, object_mask_HW: np.ndarray, dilate_px: int) -> float:
    """The paper's Norm. L2-BG: ‖(out − in) ⊙ B‖₂ / ‖in ⊙ B‖₂.

    B is the background: the pixels outside the object mask dilated by `dilate_px` (a disk, `dilate`; see
    `default_bg_dilation`), over all channels. Pixels are floats in [0, 1] (uint8 is divided by 255); ‖·‖₂ is the
    Frobenius norm over all pixels and channels. When in ⊙ B is all zero (a black background) the ratio is 0 if out
    equals in on B and inf otherwise. NaN when B is empty (the dilated object covers the whole image: there is no
    background to measure, and 0 would read as perfect preservation).
    """
    out, inp, bg = _background(out_HWC, in_HWC, object_mask_HW, dilate_px)
    if not bg.any():
        return float("nan")
    num = float(np.linalg.norm((out - inp)[bg]))
    den = float(np.linalg.norm(inp[bg]))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def background_psnr_mse(
    out_HWC: np.ndarray, in_HWC: np.ndarray, object_mask_HW: np.ndarray, dilate_px: int
) -> tuple[float, float]:
    """(PSNR in dB, MSE) of the output against the input over the background B (BrushBench-style preservation).

    B as in `norm_l2_bg`. MSE = mean of (out − in)² over the pixels of B and all channels, on the [0, 1] scale;
    PSNR = 10 · log10(1 / MSE). An output identical on B has MSE 0 and PSNR float('inf'), returned as is (a mean
    over items is then inf: report the MSE, or the share of identical items, alongside). Empty B → (NaN, NaN).
    LPIPS is not computed (no pretrained weights offline).
    """
    out, inp, bg = _background(out_HWC, in_HWC, object_mask_HW, dilate_px)
    if not bg.any():
        return float("nan"), float("nan")
    mse = float(np.mean(np.square(out - inp)[bg]))
    psnr = float("inf") if mse == 0.0 else 10.0 * math.log10(1.0 / mse)
    return psnr, mse


class Background:
    """B of one input image and object mask, built once for the many outputs of an eval item (every method and
    guidance type is scored against the same input): `score(out)` = (norm_l2_bg, bg_psnr, bg_mse) exactly as defined
    above, but the dilation and ‖in ⊙ B‖₂ are computed once and only the pixels where the output differs from the
    input are converted to float (the outputs differ from the input on a small region: that was most of the metric
    time, bench/bench_eval.py). uint8 (H, W, 3) images only."""

    def __init__(self, in_HWC: np.ndarray, object_mask_HW: np.ndarray, dilate_px: int):
        self.inp = np.asarray(in_HWC)
        if self.inp.dtype != np.uint8 or self.inp.ndim != 3:
            raise ValueError(f"Background takes a uint8 (H, W, C) image, got {self.inp.dtype} {self.inp.shape}")
        mask = np.asarray(object_mask_HW, bool)
        if mask.shape != self.inp.shape[:2]:
            raise ValueError(f"object mask {mask.shape} does not match the image {self.inp.shape[:2]}")
        self.bg = ~dilate(mask, int(dilate_px))
        self.values = int(self.bg.sum()) * self.inp.shape[2]
        self.den = float(np.linalg.norm(self.inp[self.bg].astype(np.float64) / 255.0))

    def score(self, out_HWC: np.ndarray) -> tuple[float, float, float]:
        out = np.asarray(out_HWC)
        if out.shape != self.inp.shape or out.dtype != np.uint8:
            raise ValueError(f"output {out.dtype} {out.shape} does not match the input {self.inp.shape} uint8")
        if self.values == 0:
            return float("nan"), float("nan"), float("nan")
        changed = np.any(out != self.inp, axis=2) & self.bg
        d = (out[changed].astype(np.float64) - self.inp[changed]) / 255.0
        ss = float(np.sum(d * d))
        num = math.sqrt(ss)
        l2 = (0.0 if num == 0.0 else float("inf")) if self.den == 0.0 else num / self.den
        mse = ss / self.values
        return l2, (float("inf") if mse == 0.0 else 10.0 * math.log10(1.0 / mse)), mse
