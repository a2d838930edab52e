"""The layered layout: an ordered stack of amodal masks, back to front, and what is visible of it.

A `LayeredLayout` is the paper's A_0..A_n: each layer is a whole (amodal) mask with a label, painted in order, so
the visible label of a pixel is that of the last layer covering it. Edits (`smartmask.design.ops`) change layers
and never visible pixels directly: every visible pixel is recomputed from the order, which is what makes an edit
undoable exactly (move there and back gives the same masks). A layer remembers how it was made: the planner box
and seed of a designed layer, or "photo" / "user" for layers that came from a segmentation or an edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from smartmask.inference.layout import LayoutError, Region, SceneLayout


@dataclass(frozen=True, kw_only=True, eq=False)
class DesignLayer:
    """One layer: `mask_HW` bool amodal mask at the layout's size; `origin` "design" (planner + SmartMask),
    "background", "photo" (from the photo's segmentation) or "user" (added by an edit); `box` the planner's box
    (x0, y0, x1, y1) and `seed` the SmartMask seed that drew it (designed layers only); `planner` the planner id."""

    label: str
    mask_HW: np.ndarray
    is_stuff: bool = False
    origin: str = "design"
    box: tuple[float, float, float, float] | None = None
    seed: int | None = None
    planner: str | None = None
    score: float | None = None
    # A layer moved or scaled partly off the canvas keeps its whole mask, so that moving it back restores every
    # pixel (`smartmask.design.ops`): `full_mask` (h, w) bool with its top-left at canvas pixel `full_at` = (x, y),
    # and `mask_HW` always equals its crop to the canvas (`place`). None: `mask_HW` is the whole layer.
    full_mask: np.ndarray | None = None
    full_at: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if not self.label:
            raise LayoutError("a layer needs a label")
        m = np.asarray(self.mask_HW)
        if m.ndim != 2:
            raise LayoutError(f"layer {self.label!r}: mask must be 2-d")
        object.__setattr__(self, "mask_HW", m.astype(bool, copy=False))
        if self.full_mask is not None:
            full = np.asarray(self.full_mask)
            if full.ndim != 2:
                raise LayoutError(f"layer {self.label!r}: full mask must be 2-d")
            at = (int(self.full_at[0]), int(self.full_at[1]))
            object.__setattr__(self, "full_mask", full.astype(bool, copy=False))
            object.__setattr__(self, "full_at", at)
            # A stale full mask (mask_HW changed without it) would bring back pixels on the next move: refuse it.
            if not np.array_equal(place(self.full_mask, at, self.mask_HW.shape), self.mask_HW):
                raise LayoutError(f"layer {self.label!r}: its mask is not the canvas crop of its full mask")

    def with_mask(self, mask_HW: np.ndarray, **changes) -> DesignLayer:
        """The layer with a new canvas mask (and no off-canvas part unless `full_mask=` is given too)."""
        changes.setdefault("full_mask", None)
        changes.setdefault("full_at", (0, 0))
        return replace(self, mask_HW=mask_HW, **changes)

    def whole(self) -> tuple[np.ndarray, tuple[int, int]]:
        """The whole mask and the canvas pixel (x, y) of its top-left: off-canvas parts included."""
        return (self.mask_HW, (0, 0)) if self.full_mask is None else (self.full_mask, self.full_at)


def place(mask: np.ndarray, at: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """`mask` with its top-left at canvas pixel `at` = (x, y), cropped to a canvas of `shape` = (H, W): bool."""
    H, W = shape
    x, y = int(at[0]), int(at[1])
    h, w = mask.shape
    out = np.zeros((H, W), bool)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 < x1 and y0 < y1:
        out[y0:y1, x0:x1] = mask[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


@dataclass(frozen=True, kw_only=True, eq=False)
class LayeredLayout:
    """Layers back to front (index = order) on a `width` × `height` canvas, with the scene description that
    designed it. `layout_id` and `version` are set once stored (`smartmask.design.store`); `parent` is the version
    an edit started from."""

    width: int
    height: int
    context: str
    layers: tuple[DesignLayer, ...] = field(default_factory=tuple)
    layout_id: str | None = None
    version: int | None = None
    parent: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise LayoutError(f"layout size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "layers", tuple(self.layers))
        for layer in self.layers:
            if layer.mask_HW.shape != (self.height, self.width):
                raise LayoutError(f"layer {layer.label!r} is {layer.mask_HW.shape[1]}x{layer.mask_HW.shape[0]}, "
                                  f"the layout {self.width}x{self.height}")

    def with_layers(self, layers, **changes) -> LayeredLayout:
        """A new (unstored) layout with `layers`; the stored identity is kept so the store can version it."""
        return replace(self, layers=tuple(layers), **changes)

    def owner_HW(self) -> np.ndarray:
        """Index of the visible layer at each pixel (the last one covering it), -1 where none: (H, W) int32."""
        own = np.full((self.height, self.width), -1, np.int32)
        for i, layer in enumerate(self.layers):
            own[layer.mask_HW] = i
        return own

    def visible_HW(self, i: int) -> np.ndarray:
        """What is seen of layer `i`: its mask minus every layer in front of it."""
        return self.owner_HW() == i

    def scene(self, upto: int | None = None, source: str | None = None) -> SceneLayout:
        """Layers [0, upto) as the `SceneLayout` SmartMask reads (S_k with k = upto; default: all layers)."""
        layers = self.layers if upto is None else self.layers[:upto]
        regions = tuple(Region(lay.label, lay.label, lay.mask_HW, lay.is_stuff, 1.0) for lay in layers)
        return SceneLayout(self.height, self.width, regions, source or f"design:{self.layout_id or 'new'}")

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(lay.label for lay in self.layers)
