"""Mask suggestions for one image: the user's control → G (Eq. 5) → N SmartMask samples → ranked, de-duplicated
masks at the image's resolution.

Controls (paper Fig. 4), all turned into G by the same functions the training sampler uses (conditioning/guidance.py):
  none      mask-free insertion: G = 0
  box       x0,y0,x1,y1 in image pixels (x1, y1 exclusive; CLI `--bbox`)
  point     x,y[,r]: a gaussian blob, r in image pixels (default: 10% of the image's shorter side)
  scribble  a mask of the image's size (a PNG: any pixel > 127 in any channel is part of the scribble)
Coordinates map to the model's R×R grid by the same aspect-changing resize as the layout (samples.py explains why),
so x scales by R/W and y by R/H; a box covers the grid cells whose centres it contains (`box_on_grid`: the rule
that made the training targets and their boxes), not every cell it touches. A scribble is shrunk with "any pixel
of the cell" pooling, so a 1-pixel stroke on a 4000-pixel-wide photo does not vanish between nearest-neighbour
samples.

Back to the image: the soft masks (probabilities at R×R) are resized to (H, W) with bicubic interpolation and
thresholded there, so the edge is a smooth curve through the model's probability field, not R×R staircase blocks.
That work is uint8 (one byte per pixel), so a 4000×3000 photo costs 12 MB per suggestion, not a float image. A
model with the object-centred view (`conditioning/focus.py`) draws a box-guided mask in the window around the box;
`paste_window` resizes that window's probabilities onto the window's pixels the same way.

A box is the object's tight bounding box, as in training (G is drawn from the target's own box): with `--bbox`,
every suggestion is cut to it and then fitted to it at image resolution, i.e. stretched from its own bounding box
onto the user's, so it touches all four sides. The model's 32- or 64-cell grid can only place the object's edge to
within a cell (on a 640-pixel-wide photo, 20 pixels), and the user's exact coordinates are the better information;
the shape inside is the model's (fitting beats cutting: docs/experiments.md, "Box fitting"). `SuggestConfig(fit_box=False)` (CLI `--loose-box`) treats the box as a bound only: suggestions are
cut to it, not stretched, for a user whose box is a rough region rather than the object's extent. A point or a
scribble is soft guidance and bounds nothing.

Ranking: the N samples come from N seeds in one batch. A suggestion's score is its agreement with the others (mean
soft IoU), so the placement the model keeps coming back to ranks first; with one sample, or as a tie-break, the
model's confidence (mean |2p − 1| over the mask's neighbourhood). Two suggestions whose masks overlap with
IoU ≥ `dedupe_iou` are duplicates: the lower-ranked one is dropped and counted, never silently (None keeps all).
An empty mask (the model placed nothing) is kept, ranked last, and flagged `empty`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from smartmask.boxes import box_pixels, mask_box
from smartmask.conditioning.focus import Window, box_on_window, box_window, paste_window
from smartmask.conditioning.guidance import ALPHA, apply_guidance, box_on_grid, point_guidance
from smartmask.inference.errors import BadInput
from smartmask.masks import mask_iou
from smartmask.model.sampling import LAYOUT_SCALE, TEXT_SCALE

CONTROLS = ("none", "box", "point", "scribble")


@dataclass(frozen=True, kw_only=True, slots=True)
class SuggestConfig:
    n: int = 4
    steps: int = 20
    scheduler: str = "dpm"  # "dpm" (DPM-Solver++ 2M) or "ddim"
    layout_scale: float = LAYOUT_SCALE
    text_scale: float = TEXT_SCALE
    seed: int = 0
    threshold: float = 0.5
    dedupe_iou: float | None = 0.9  # None: keep every sample, even exact copies (evaluation)
    fit_box: bool = True  # a --bbox is the object's tight box: stretch each suggestion onto it (False: cut only)

    def __post_init__(self) -> None:
        if self.n < 1 or self.steps < 1:
            raise BadInput(f"the number of suggestions and of sampling steps must be at least 1, got n={self.n}, "
                           f"steps={self.steps}", "n" if self.n < 1 else "steps")
        if self.dedupe_iou is not None and not 0.0 < self.dedupe_iou <= 1.0:
            raise BadInput(f"dedupe IoU must be in (0, 1], got {self.dedupe_iou}", "dedupe")

    @classmethod
    def for_tests(cls) -> SuggestConfig:
        """Test-size settings (not the `tiny` preset: that is `smartmask.presets.tiny`)."""
        return cls(n=4, steps=10)


@dataclass(frozen=True, slots=True)
class Control:
    """What the user gave; `g_map(H, W, R)` turns it into G at the model's resolution."""

    kind: str = "none"
    box: tuple[float, float, float, float] | None = None
    point: tuple[float, float, float | None] | None = None
    scribble_HW: np.ndarray | None = None

    @classmethod
    def parse(cls, H: int, W: int, *, bbox: str | None = None, point: str | None = None,
              scribble_HW: np.ndarray | None = None) -> Control:
        """From the CLI's strings; BadInput (one line) for malformed values or a control outside the image."""
        given = [k for k, v in (("box", bbox), ("point", point), ("scribble", scribble_HW)) if v is not None]
        if len(given) > 1:
            raise BadInput(f"give at most one control of box, point, scribble (got {', '.join(given)})", "control")
        if bbox is not None:
            x0, y0, x1, y1 = _numbers(bbox, "box", (4,))
            if not (x0 < x1 and y0 < y1):
                raise BadInput(f"box needs x0 < x1 and y0 < y1, got {bbox}", "box")
            if x1 <= 0 or y1 <= 0 or x0 >= W or y0 >= H or x0 < 0 or y0 < 0 or x1 > W or y1 > H:
                raise BadInput(f"box {bbox} lies outside the {W}x{H} image", "box")
            return cls("box", box=(x0, y0, x1, y1))
        if point is not None:
            v = _numbers(point, "point", (2, 3))
            x, y = v[0], v[1]
            r = v[2] if len(v) == 3 else None
            if not (0 <= x < W and 0 <= y < H):
                raise BadInput(f"point {point} lies outside the {W}x{H} image", "point")
            if r is not None and r <= 0:
                raise BadInput(f"point radius must be positive, got {r}", "point")
            return cls("point", point=(x, y, r))
        if scribble_HW is not None:
            m = np.asarray(scribble_HW, bool)
            if m.shape != (H, W):
                raise BadInput(f"scribble is {m.shape[1]}x{m.shape[0]}, the image is {W}x{H}", "scribble")
            if not m.any():
                raise BadInput("scribble is empty (no pixel above 127)", "scribble")
            return cls("scribble", scribble_HW=m)
        return cls("none")

    def g_map(self, H: int, W: int, R: int) -> np.ndarray:
        """G (R, R) float32 in [0, 1] on the model's grid."""
        sx, sy = R / W, R / H
        if self.kind == "box":
            return box_on_grid(*self.box, H, W, R)
        if self.kind == "point":
            x, y, r = self.point
            r = 0.1 * min(H, W) if r is None else r
            return point_guidance(x * sx, y * sy, r * 0.5 * (sx + sy), R, R)
        if self.kind == "scribble":
            return _any_pool(self.scribble_HW, R).astype(np.float32)
        return np.zeros((R, R), np.float32)

    def bound_HW(self, H: int, W: int) -> tuple[int, int, int, int] | None:
        """The pixel box (c0, r0, c1, r1) a box control confines suggestions to (every pixel it touches: `box_pixels`)."""
        return box_pixels(*self.box, H, W) if self.kind == "box" else None

    def describe(self) -> dict:
        if self.kind == "box":
            return {"kind": "box", "bbox": list(self.box)}
        if self.kind == "point":
            return {"kind": "point", "point": list(self.point)}
        if self.kind == "scribble":
            return {"kind": "scribble", "pixels": int(self.scribble_HW.sum())}
        return {"kind": "none"}


@dataclass(frozen=True, slots=True)
class Suggestion:
    rank: int  # 1 = best
    seed: int
    mask_HW: np.ndarray  # bool, image resolution
    score: float
    confidence: float
    empty: bool

    def record(self) -> dict:
        H, W = self.mask_HW.shape
        box = mask_box(self.mask_HW)
        return {"rank": self.rank, "seed": self.seed, "score": round(self.score, 6),
                "confidence": round(self.confidence, 6), "empty": self.empty, "bbox": None if box is None else list(box),
                "area_fraction": round(float(self.mask_HW.sum()) / (H * W), 6)}


@dataclass(frozen=True, slots=True)
class SuggestResult:
    suggestions: tuple[Suggestion, ...]
    duplicates: int  # samples dropped as near-copies of a higher-ranked one
    layout_R3: np.ndarray  # the guided layout S~ the model saw, (R, R, 3) float32
    seconds: float


def suggest(model, paint: Callable[[Window | None], np.ndarray], control: Control, obj: str, context: str, H: int,
            W: int, cfg: SuggestConfig = SuggestConfig(), alpha: float = ALPHA) -> SuggestResult:
    """N suggestions for inserting `obj` into a scene of H×W pixels. `paint(window)` gives its S_I at model
    resolution, (R, R, 3) in [0, 1]: of the whole image for None, of a focus window (image pixels) otherwise
    (`layout.layout_image`). `alpha` must be the one the model was trained with (Eq. 5).

    A model with the focus view (conditioning/focus.py) reads, under a box, the window around the box stacked on
    the global layout and draws its masks in that window; they are pasted back at image resolution."""
    import torch

    from smartmask.model.sampling import sample_masks

    if not obj or not obj.strip():
        raise BadInput("the object name is empty", "object")
    R = model.config.resolution
    t0 = time.perf_counter()
    layout_R3 = paint(None)
    if layout_R3.shape != (R, R, 3):
        raise ValueError(f"layout must be ({R}, {R}, 3) for this model, got {layout_R3.shape}")
    guided = apply_guidance(layout_R3, control.g_map(H, W, R), alpha)
    views, window = [guided], None
    if model.config.focus_view:  # focus view first; without a box it is the global one
        if control.kind == "box":
            window = box_window(*control.box)
            views.insert(0, apply_guidance(paint(window), box_on_window(control.box, window, R), alpha))
        else:
            views.insert(0, guided)
    layout_CRR = np.concatenate([v.transpose(2, 0, 1) for v in views])
    layout = torch.as_tensor(np.ascontiguousarray(layout_CRR))[None].to(model.device)
    _, probs = sample_masks(model, layout, [obj.strip()], [context.strip()], n=cfg.n, layout_scale=cfg.layout_scale,
                            text_scale=cfg.text_scale, steps=cfg.steps, scheduler=cfg.scheduler, seed=cfg.seed,
                            threshold=cfg.threshold, return_probs=True)
    probs_NRR = probs[0].float().cpu().numpy()
    kept, dups = rank_and_dedupe(probs_NRR, cfg.threshold, cfg.dedupe_iou)
    bound = control.bound_HW(H, W)
    out = []
    for i, (j, score, conf) in enumerate(kept):
        if window is None:
            mask = to_image(probs_NRR[j], H, W, cfg.threshold)
        else:
            mask = paste_window(probs_NRR[j], window, H, W, cfg.threshold)
        if bound is not None:
            mask = fit_to_box(mask, bound) if cfg.fit_box else _cut(mask, bound)
        out.append(Suggestion(rank=i + 1, seed=cfg.seed + j, mask_HW=mask, score=score, confidence=conf,
                              empty=not mask.any()))
    return SuggestResult(tuple(out), dups, guided, time.perf_counter() - t0)


def rank_and_dedupe(probs_NRR: np.ndarray, threshold: float, dedupe_iou: float | None) -> tuple[list[tuple], int]:
    """[(sample index, score, confidence)] best first without near-duplicates, and how many were dropped."""
    n = probs_NRR.shape[0]
    hard = (probs_NRR > threshold).reshape(n, -1)
    soft = probs_NRR.reshape(n, -1).astype(np.float64)
    inter = soft @ soft.T
    mass = soft.sum(axis=1)
    soft_iou = inter / np.maximum(mass[:, None] + mass[None, :] - inter, 1e-9)
    agree = (soft_iou.sum(axis=1) - np.diag(soft_iou)) / max(n - 1, 1)
    conf = np.array([_confidence(probs_NRR[j], hard[j]) for j in range(n)])
    empty = ~hard.any(axis=1)
    order = sorted(range(n), key=lambda j: (bool(empty[j]), -float(agree[j]) if n > 1 else 0.0, -float(conf[j]), j))
    kept: list[tuple] = []
    dups = 0
    for j in order:
        if dedupe_iou is not None and any(mask_iou(hard[j], hard[i]) >= dedupe_iou for i, _, _ in kept):
            dups += 1
            continue
        kept.append((j, float(agree[j]) if n > 1 else float(conf[j]), float(conf[j])))
    return kept, dups


def _cut(mask_HW: np.ndarray, bound: tuple[int, int, int, int]) -> np.ndarray:
    c0, r0, c1, r1 = bound
    out = np.zeros_like(mask_HW)
    out[r0:r1, c0:c1] = mask_HW[r0:r1, c0:c1]
    return out


def fit_to_box(mask_HW: np.ndarray, bound: tuple[int, int, int, int]) -> np.ndarray:
    """bool (H, W) → bool (H, W): the part of the mask inside `bound` (c0, r0, c1, r1; exclusive ends) stretched onto
    it. What lies outside the box is not the object (the same cut as `fit_box=False`); the crop of what is left, at
    its own bounding box, is resized to the box (bilinear on 0/255, then > 127, so edges stay smooth; a one-pixel
    sliver at the crop's edge can fall below that when the crop shrinks). An empty part stays empty. Only the box
    region is read and resized, so a 4000×3000 photo costs one output array and box-sized uint8 work."""
    from PIL import Image

    c0, r0, c1, r1 = bound
    inside = mask_HW[r0:r1, c0:c1]
    out = np.zeros_like(mask_HW)
    own = mask_box(inside)
    if own is None:
        return out
    x0, y0, x1, y1 = own
    crop = Image.fromarray(inside[y0:y1, x0:x1].astype(np.uint8) * 255, mode="L")
    out[r0:r1, c0:c1] = np.asarray(crop.resize((c1 - c0, r1 - r0), Image.Resampling.BILINEAR)) > 127
    return out


def _confidence(p_RR: np.ndarray, hard: np.ndarray) -> float:
    """Mean |2p − 1| over the mask's bounding box (the whole grid for an empty mask): how decided the model is."""
    box = mask_box(hard.reshape(p_RR.shape))
    if box is not None:
        x0, y0, x1, y1 = box
        p_RR = p_RR[y0:y1, x0:x1]
    return float(np.abs(2.0 * p_RR - 1.0).mean())


def to_image(p_RR: np.ndarray, H: int, W: int, threshold: float = 0.5) -> np.ndarray:
    """Soft mask at the model's grid → bool (H, W): bicubic resize of the probabilities (as uint8), then threshold."""
    from PIL import Image

    p8 = np.clip(np.rint(np.asarray(p_RR, np.float32) * 255.0), 0, 255).astype(np.uint8)
    up = np.asarray(Image.fromarray(p8, mode="L").resize((W, H), Image.Resampling.BICUBIC))
    return up > np.uint8(min(254, int(threshold * 255)))


def _any_pool(m_HW: np.ndarray, R: int) -> np.ndarray:
    """bool (H, W) → bool (R, R): a cell is on if any source pixel in it is on (box filter, then > 0)."""
    from PIL import Image

    img = Image.fromarray(m_HW.astype(np.uint8) * 255, mode="L")
    return np.asarray(img.resize((R, R), Image.Resampling.BOX)) > 0


def _numbers(text: str, field: str, counts: tuple[int, ...]) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise BadInput(f"{field} must be {_shape(field)} (numbers separated by commas), got {text!r}", field) from None
    if len(vals) not in counts or not all(np.isfinite(vals)):
        raise BadInput(f"{field} must be {_shape(field)}, got {text!r}", field)
    return vals


def _shape(field: str) -> str:
    return {"box": "x0,y0,x1,y1", "point": "x,y or x,y,r"}.get(field, "numbers")


def overlay_preview(image_HWC: np.ndarray, masks: list[np.ndarray], long_side: int = 1024) -> np.ndarray:
    """A preview: the image (shrunk to `long_side`) with each suggestion's outline and a light tint, best in red."""
    from PIL import Image

    H, W = image_HWC.shape[:2]
    s = min(1.0, long_side / max(H, W))
    w, h = max(1, round(W * s)), max(1, round(H * s))
    base = np.asarray(Image.fromarray(image_HWC).resize((w, h), Image.Resampling.BILINEAR), np.float32)
    colours = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                        [70, 240, 240]], np.float32)
    for i, m in reversed(list(enumerate(masks))):
        small = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)) > 0
        c = colours[i % len(colours)]
        base[small] = 0.65 * base[small] + 0.35 * c
        edge = small & ~_erode(small)
        base[edge] = c
    return np.clip(base, 0, 255).astype(np.uint8)


def _erode(m: np.ndarray) -> np.ndarray:
    e = m.copy()
    e[1:, :] &= m[:-1, :]
    e[:-1, :] &= m[1:, :]
    e[:, 1:] &= m[:, :-1]
    e[:, :-1] &= m[:, 1:]
    return e
