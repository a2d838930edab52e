"""Per-class outline templates: ONE closed polygon per class, in a unit box whose bottom edge is the contact line.

COCOA stores a region as a single flat polygon, so every silhouette (a person's head, arms and legs, a table's top
and legs, a boat's hull, mast and sail) is traced as one outline. Templates are authored in arbitrary drawing units
with y pointing down and normalised to the unit box at import, so a class's aspect ratio comes from its drawing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shape:
    variants: tuple[np.ndarray, ...]  # each (N, 2) in [0, 1]^2, y down, max y = 1 is where the object stands
    aspects: tuple[float, ...]  # width / height of each variant's drawing
    # (y, x0, x1) in the unit box: the line dependents stand on (a table's top), None when nothing stands on it.
    surface: tuple[float, float, float] | None = None


def _mirror(right: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Right half traced top-centre -> bottom-centre (both on x = 0) -> the whole symmetric outline."""
    left = [(-x, y) for x, y in reversed(right[1:-1])]
    return right + left


def _puffs(circles: list[tuple[float, float, float]], steps: int = 36):
    """Upper and lower envelopes of a union of circles (cx, cy, r), sampled left to right: canopies and clouds
    look puffy, and the union is traced as one outline because every vertical line crosses it once."""
    x0 = min(cx - r for cx, _, r in circles) + 1e-6
    x1 = max(cx + r for cx, _, r in circles) - 1e-6
    xs = np.linspace(x0, x1, steps)
    top = np.full(steps, np.inf)
    bottom = np.full(steps, -np.inf)
    for cx, cy, r in circles:
        half = np.sqrt(np.clip(r * r - (xs - cx) ** 2, 0.0, None))
        inside = np.abs(xs - cx) < r
        top = np.where(inside, np.minimum(top, cy - half), top)
        bottom = np.where(inside, np.maximum(bottom, cy + half), bottom)
    return xs, top, bottom


def _round_tree():
    xs, top, bottom = _puffs([(-2.2, 5.2, 2.6), (0.0, 3.2, 3.0), (2.3, 5.0, 2.7), (0.2, 6.2, 2.8)])
    # Trace the canopy's top left to right, then its underside right to left with the trunk spliced in where
    # the underside crosses x = 0, so canopy and trunk stay one outline.
    right = [(x, y) for x, y in zip(xs[::-1], bottom[::-1], strict=True) if x > 0.8]
    left = [(x, y) for x, y in zip(xs[::-1], bottom[::-1], strict=True) if x < -0.8]
    trunk = [(0.8, 14.0), (1.4, 14.6), (-1.4, 14.6), (-0.8, 14.0)]
    return [*zip(xs, top, strict=True), *right, *trunk, *left]


_PINE = _mirror(
    [(0, 0), (1.6, 3.0), (0.9, 3.0), (3.0, 6.4), (1.8, 6.4), (4.3, 10.2), (0.8, 10.2), (0.8, 13.0), (0, 13.0)]
)


def _cloud():
    xs, top, bottom = _puffs([(2.5, 5.0, 2.5), (6.0, 3.6, 3.4), (10.0, 4.0, 3.0), (13.2, 5.3, 2.3)], steps=30)
    # Puffy top, rounded ends, flat base: the base is the lower envelope cut at a fixed height.
    base = np.minimum(bottom, 7.0)
    return [*zip(xs, top, strict=True), *zip(xs[::-1][1:-1], base[::-1][1:-1], strict=True)]


def _window():
    arch = [(4.0 * np.cos(a), 4.0 - 4.0 * np.sin(a)) for a in np.linspace(0.0, np.pi, 17)]
    return [*arch, (-4.0, 12.0), (-4.6, 12.0), (-4.6, 12.8), (4.6, 12.8), (4.6, 12.0), (4.0, 12.0)]


# fmt: off
_RAW: dict[str, list[list[tuple[float, float]]]] = {
    "person": [
        _mirror([(0, 0), (0.8, 0.2), (1.2, 0.9), (1.2, 1.8), (0.8, 2.5), (0.6, 3.0), (2.0, 3.3), (2.6, 3.9),
                 (3.0, 8.2), (2.4, 8.6), (2.0, 4.8), (1.8, 9.0), (2.0, 16.4), (2.6, 17.0), (0.5, 17.0),
                 (0.4, 10.0), (0, 9.6)]),
        # A person in a dress: same head and arms, a flared skirt instead of the trouser legs.
        _mirror([(0, 0), (0.8, 0.2), (1.2, 0.9), (1.2, 1.8), (0.8, 2.5), (0.6, 3.0), (2.0, 3.3), (2.6, 3.9),
                 (3.0, 8.2), (2.4, 8.6), (2.0, 4.8), (1.6, 7.5), (3.2, 13.0), (1.6, 13.0), (1.7, 16.4),
                 (2.2, 17.0), (0.4, 17.0), (0.4, 13.0), (0, 13.0)]),
    ],
    "dog": [[(0, 2), (1.5, 3.5), (2, 4), (10, 4), (11, 2), (12, 0.5), (12.6, 0.2), (13.2, 0.8), (15, 2.2),
             (15, 3), (12.8, 3.2), (12, 5), (11.5, 7), (11.6, 12), (10.6, 12), (10.4, 8), (4.5, 8), (4.2, 12),
             (3.2, 12), (2.8, 7.5), (2.0, 6), (1.2, 4.2), (-0.2, 2.4)]],
    "tree": [_round_tree(), _PINE],
    "car": [[(0, 11), (0, 6), (2, 5), (10, 5), (14, 0), (27, 0), (32, 5), (40, 6), (42, 8), (42, 11), (38, 11),
             (37, 13), (34.5, 15), (32, 13), (31, 11), (11, 11), (10, 13), (7.5, 15), (5, 13), (4, 11)]],
    "house": [[(0, 0), (4, 2.95), (4, 0.5), (5.5, 0.5), (5.5, 4.05), (9.5, 7), (8, 7), (8, 16), (-8, 16),
               (-8, 7), (-9.5, 7)]],
    "bench": [[(0, 0), (16, 0), (16, 1.5), (14.5, 1.5), (14.5, 5), (16.5, 5), (16.5, 6.2), (15.5, 6.2),
               (15.5, 9), (14.3, 9), (14.3, 6.2), (1.7, 6.2), (1.7, 9), (0.5, 9), (0.5, 6.2), (-0.5, 6.2),
               (-0.5, 5), (1.5, 5), (1.5, 1.5), (0, 1.5)]],
    # Hull + mast + sail; the sail hangs right of the mast so the silhouette is not a symmetric triangle.
    "boat": [[(0, 0), (7, 10.8), (0.5, 10.8), (0.5, 12), (10, 12), (7, 15), (-7, 15), (-10, 12), (-0.5, 12),
              (-0.5, 0.3)]],
    "bird": [[(0, 2), (3, 0), (5.5, 1.8), (6, 2.2), (6.5, 1.8), (9, 0), (12, 2), (9, 1.2), (6.6, 3.2),
              (6, 3.6), (5.4, 3.2), (3, 1.2)]],
    "cloud": [_cloud()],
    "table": [_mirror([(0, 0), (7, 0), (7, 1.0), (6.2, 1.0), (6.2, 7.5), (5.4, 7.5), (5.4, 1.0), (0, 1.0)])],
    "chair": [[(0, 0), (0.8, 0), (0.8, 4.5), (4.5, 4.5), (4.5, 5.3), (4.3, 5.3), (4.3, 9.0), (3.6, 9.0),
               (3.6, 5.3), (0.8, 5.3), (0.8, 9.0), (0, 9.0)]],
    "sofa": [_mirror([(0, 0), (7, 0), (8, 0.6), (8.2, 3.0), (9.6, 3.0), (10, 3.5), (10, 7.6), (9.4, 7.6),
                      (9.4, 8.5), (8.6, 8.5), (8.6, 7.6), (0, 7.6)])],
    "lamp": [_mirror([(0, 0), (2, 0), (3.2, 3.5), (0.35, 3.5), (0.35, 8.5), (1.8, 9.2), (1.8, 9.6), (0, 9.6)])],
    "vase": [_mirror([(0, 0), (1.0, 0), (1.0, 0.4), (0.7, 0.8), (0.8, 1.8), (1.8, 3.5), (2.0, 5), (1.6, 6.6),
                      (1.0, 7.0), (0, 7.0)])],
    "bottle": [_mirror([(0, 0), (0.35, 0), (0.35, 0.6), (0.4, 2.2), (1.0, 3.2), (1.0, 7.6), (0.9, 8.0),
                        (0, 8.0)])],
    "plant": [[(-1.5, 10), (1.5, 10), (2.0, 7), (2.2, 7), (2.2, 6.3), (3.5, 5.5), (5, 3.8), (3.0, 4.6),
               (3.8, 1.5), (2.0, 3.8), (1.2, 0), (0.3, 3.5), (-0.8, 0.6), (-1.0, 3.8), (-3.4, 1.8),
               (-2.2, 4.8), (-4.8, 4.2), (-2.6, 5.8), (-2.2, 6.3), (-2.2, 7), (-2.0, 7)]],
    # A framed picture hanging from a cord: the cord's apex tells it apart from a plain rectangle.
    "painting": [[(0, -1.2), (1.5, 0), (5, 0), (5, 7), (-5, 7), (-5, 0), (-1.5, 0)]],
    "window": [_window()],
}
# fmt: on

# Where dependents stand, in the unit box of the drawing: halfway into the table top (the slab is 1/7.5 of the
# table's height), so a lamp seen slightly from above overlaps the top and is ordered in front of it.
_SURFACE = {"table": (0.065, 0.04, 0.96)}


def _normalise(points) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p.min(0), p.max(0)
    return (p - lo) / (hi - lo)


def _aspect(points) -> float:
    p = np.asarray(points, dtype=np.float64)
    span = p.max(0) - p.min(0)
    return float(span[0] / span[1])


SHAPES: dict[str, Shape] = {
    name: Shape(tuple(_normalise(v) for v in raw), tuple(_aspect(v) for v in raw), _SURFACE.get(name))
    for name, raw in _RAW.items()
}
# Not a class of its own: the context world's seated person, facing right, hips on the seat at SEATED_HIP (from
# the top of the drawing), feet on the ground in front of the seat.
_SEATED = [(0.6, 0), (1.8, 0), (2.4, 0.6), (2.4, 1.8), (1.9, 2.4), (2.6, 2.8), (2.8, 5.5), (2.6, 7.2), (5.2, 7.2),
           (5.3, 12.4), (6.4, 12.6), (6.4, 13), (4.2, 13), (4.2, 8.6), (0.2, 8.6), (0, 7.5), (0.2, 2.8), (0.9, 2.4),
           (0.4, 1.8), (0.4, 0.6)]
SEATED = Shape((_normalise(_SEATED),), (_aspect(_SEATED),))
SEATED_HIP = 7.9 / 13
# The context world's floor lamp: the table lamp's shade on a pole three times as long, on a wider foot.
_FLOOR_LAMP = _mirror([(0, 0), (2, 0), (3.2, 3.5), (0.3, 3.5), (0.3, 19.2), (2.0, 19.8), (2.0, 20.2), (0, 20.2)])
FLOOR_LAMP = Shape((_normalise(_FLOOR_LAMP),), (_aspect(_FLOOR_LAMP),))


def place(unit: np.ndarray, x_center: float, y_bottom: float, width: float, height: float,
          rng: np.random.Generator, flip: bool = False, wobble: float = 0.012) -> np.ndarray:  # fmt: skip
    """Scale a unit template to the box whose bottom-centre is (x_center, y_bottom), with per-instance variation.

    The variation is a smooth low-frequency warp (plus a slight lean), not per-vertex noise: densely sampled
    curves (canopies, clouds) would turn jagged under independent noise, and a smooth warp keeps thin parts
    (a lamp's pole, a chair's legs) as thick as they were drawn.
    """
    p = unit.copy()
    if flip:
        p[:, 0] = 1.0 - p[:, 0]
    k = rng.uniform(0.5, 1.5, 2)
    phase = rng.uniform(0.0, 1.0, 2)
    amp = wobble * rng.uniform(0.5, 1.0, 2)
    lean = rng.uniform(-0.03, 0.03)
    dx = amp[0] * np.sin(2 * np.pi * (k[0] * p[:, 1] + phase[0])) + lean * (1.0 - p[:, 1])
    dy = amp[1] * np.sin(2 * np.pi * (k[1] * p[:, 0] + phase[1]))
    # dy is a function of x only, so the contact line stays straight; re-pinning its max keeps the foot exactly
    # where the support rule put it.
    p[:, 0] += dx
    p[:, 1] += dy
    p[:, 1] -= p[:, 1].max() - 1.0
    out = np.empty_like(p)
    out[:, 0] = x_center + (p[:, 0] - 0.5) * width
    out[:, 1] = y_bottom - (1.0 - p[:, 1]) * height
    return out


def clip_to_image(poly: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sutherland-Hodgman against [0, W] x [0, H]: the result is still one outline (possibly with edges along the
    border), and pycocotools' per-column rasteriser never sees coordinates outside the image."""
    if (
        poly[:, 0].min() >= 0
        and poly[:, 1].min() >= 0
        and poly[:, 0].max() <= width
        and poly[:, 1].max() <= height
    ):
        return poly
    pts = [tuple(p) for p in poly]
    for axis, bound, keep_le in (
        (0, 0.0, False),
        (0, float(width), True),
        (1, 0.0, False),
        (1, float(height), True),
    ):
        if not pts:
            break

        def inside(p, axis=axis, bound=bound, keep_le=keep_le):
            return p[axis] <= bound if keep_le else p[axis] >= bound

        out = []
        prev = pts[-1]
        for cur in pts:
            if inside(cur) != inside(prev):
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                cross = [prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])]
                cross[axis] = bound
                out.append(tuple(cross))
            if inside(cur):
                out.append(cur)
            prev = cur
        pts = out
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def finish(poly: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip, round to the 2 decimals COCOA stores, drop repeated vertices. The masks are rasterised from exactly
    these numbers, so an ingest that re-rasterises the JSON polygon gets the very same pixels."""
    p = np.round(clip_to_image(poly, width, height), 2)
    if len(p) > 1:
        keep = np.any(p != np.roll(p, 1, axis=0), axis=1)
        p = p[keep]
    return p
