"""Layer operations on a `LayeredLayout`: add, remove, move, scale, reorder.

Each returns a NEW layout and leaves its argument alone; `smartmask.design.store.save_layout` stores the result as
a new version beside the old one. An operation changes layers only: which label is visible where is always
recomputed from the order (`LayeredLayout.owner_HW`), never painted, so a pixel uncovered by a move shows the layer
behind it, exactly as it would have had the moved layer never been there.

Exactness. `move` never loses pixels: a layer pushed partly (or wholly) off the canvas keeps its whole mask, cropped
tight to its pixels, with the canvas position of that crop (`DesignLayer.full_mask` / `full_at`); its canvas mask is
that crop placed on the canvas. Moves only add integers to the position, so any sequence of moves that sums to zero
gives back the original masks bit for bit, and a layer back wholly on the canvas drops its full mask again (it is
then identical to the layer it started as). `scale` resamples (nearest neighbour), so it is exact only where
nearest neighbour is: integer factors up and then the inverse factor down.

Indices are layer orders, 0 = back-most; negative indices are refused rather than counted from the end, because a
typed `--layer -1` is far more likely a mistake than a wish for the front layer.
"""

from __future__ import annotations

import math

import numpy as np

from smartmask.design.layered import DesignLayer, LayeredLayout, place
from smartmask.inference.layout import LayoutError

#: `scale` refuses a result wider or taller than this many canvases: the whole mask is kept in memory (and stored).
MAX_EXTENT = 8
MAX_FACTOR = 64.0


def _index(layout: LayeredLayout, index: int, what: str = "layer") -> int:
    n = len(layout.layers)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise LayoutError(f"{what} must be an integer, got {index!r}")
    if not 0 <= int(index) < n:
        raise LayoutError(f"{what} {index} is out of range: the layout has {n} layer(s)"
                          + (f" (0..{n - 1}, 0 = back-most)" if n else ""))
    return int(index)


def _tight(mask: np.ndarray, at: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """`mask` cropped to its pixels, with the canvas position of the crop (an empty mask stays as it is)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return mask, at
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return mask[y0:y1, x0:x1].copy(), (at[0] + x0, at[1] + y0)


def _placed(layer: DesignLayer, whole: np.ndarray, at: tuple[int, int], shape: tuple[int, int]) -> DesignLayer:
    """`layer` with its whole mask `whole` at `at`: the canvas crop, and the full mask only where needed."""
    whole, at = _tight(whole, at)
    H, W = shape
    h, w = whole.shape
    inside = not whole.any() or (at[0] >= 0 and at[1] >= 0 and at[0] + w <= W and at[1] + h <= H)
    canvas = place(whole, at, shape)
    if inside:
        return layer.with_mask(canvas)
    return layer.with_mask(canvas, full_mask=whole, full_at=at)


def add(layout: LayeredLayout, label: str, mask_HW: np.ndarray, *, at: int | None = None, is_stuff: bool = False,
        origin: str = "user") -> LayeredLayout:
    """A layer `label` with amodal mask `mask_HW` (the canvas's size) inserted at order `at` (default: in front of
    every layer; 0: behind every layer). Layers at `at` and above move one up."""
    n = len(layout.layers)
    at = n if at is None else at
    if isinstance(at, bool) or not isinstance(at, (int, np.integer)) or not 0 <= int(at) <= n:
        raise LayoutError(f"position {at!r} is out of range: a layer can go at 0..{n} (0 = back-most)")
    mask = np.asarray(mask_HW)
    if mask.shape != (layout.height, layout.width):
        got = f"{mask.shape[1]}x{mask.shape[0]}" if mask.ndim == 2 else f"{mask.ndim}-d"
        raise LayoutError(f"the mask is {got}, the layout {layout.width}x{layout.height}")
    if not mask.astype(bool).any():
        raise LayoutError(f"the mask of {label!r} is empty: a layer must cover at least one pixel")
    layer = DesignLayer(label=label, mask_HW=mask.astype(bool), is_stuff=is_stuff, origin=origin)
    layers = list(layout.layers)
    layers.insert(int(at), layer)
    return layout.with_layers(layers, parent=layout.version)


def remove(layout: LayeredLayout, index: int) -> LayeredLayout:
    """Without layer `index`; what it covered shows the layers behind it."""
    i = _index(layout, index)
    return layout.with_layers(layout.layers[:i] + layout.layers[i + 1:], parent=layout.version)


def move(layout: LayeredLayout, index: int, dx: int, dy: int) -> LayeredLayout:
    """Layer `index` shifted by (dx, dy) pixels (x right, y down). Pixels pushed off the canvas are kept (see the
    module docstring): moving by (-dx, -dy) afterwards restores the original masks exactly."""
    i = _index(layout, index)
    for name, d in (("dx", dx), ("dy", dy)):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise LayoutError(f"{name} must be a whole number of pixels, got {d!r}")
    layer = layout.layers[i]
    whole, (x, y) = layer.whole()
    moved = _placed(layer, whole, (x + int(dx), y + int(dy)), (layout.height, layout.width))
    return _replace(layout, i, moved)


def scale(layout: LayeredLayout, index: int, factor: float) -> LayeredLayout:
    """Layer `index` resized by `factor` about the centre of its mask's box (off-canvas parts included), nearest
    neighbour. The result may reach past the canvas (kept, as for `move`) but not past `MAX_EXTENT` canvases."""
    i = _index(layout, index)
    try:
        f = float(factor)
    except (TypeError, ValueError):
        raise LayoutError(f"the factor must be a number, got {factor!r}") from None
    if not math.isfinite(f) or not 0 < f <= MAX_FACTOR:
        raise LayoutError(f"the factor must be in (0, {MAX_FACTOR:g}], got {factor!r}")
    layer = layout.layers[i]
    whole, at = _tight(*layer.whole())
    if not whole.any():
        raise LayoutError(f"layer {i} ({layer.label!r}) is empty: there is nothing to scale")
    h, w = whole.shape
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    if nh > MAX_EXTENT * layout.height or nw > MAX_EXTENT * layout.width:
        raise LayoutError(f"scaling layer {i} by {f:g} makes it {nw}x{nh}, more than {MAX_EXTENT} times the "
                          f"{layout.width}x{layout.height} canvas")
    # Nearest neighbour on pixel centres: output pixel j samples source pixel floor((j + 0.5) * h / nh).
    rows = np.minimum(((np.arange(nh) + 0.5) * h / nh).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(nw) + 0.5) * w / nw).astype(np.int64), w - 1)
    scaled = whole[rows][:, cols]
    if not scaled.any():
        raise LayoutError(f"scaling layer {i} by {f:g} leaves no pixel of it")
    # Keep the box centre: the new box starts half its size before the old centre (rounded to a pixel).
    cx, cy = at[0] + w / 2, at[1] + h / 2
    new_at = (math.floor(cx - nw / 2 + 0.5), math.floor(cy - nh / 2 + 0.5))
    return _replace(layout, i, _placed(layer, scaled, new_at, (layout.height, layout.width)))


def reorder(layout: LayeredLayout, index: int, to: int) -> LayeredLayout:
    """Layer `index` taken out and put back at order `to` (0 = back-most, n-1 = front-most); the others keep
    their relative order."""
    i = _index(layout, index)
    j = _index(layout, to, "target position")
    layers = list(layout.layers)
    layers.insert(j, layers.pop(i))
    return layout.with_layers(layers, parent=layout.version)


def _replace(layout: LayeredLayout, i: int, layer: DesignLayer) -> LayeredLayout:
    layers = list(layout.layers)
    layers[i] = layer
    return layout.with_layers(layers, parent=layout.version)
