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

    def __post_init__(self) -> None:
        if not self.label:
            raise LayoutError("a layer needs a label")
        m = np.asarray(self.mask_HW)
        if m.ndim != 2:
            raise LayoutError(f"layer {self.label!r}: mask must be 2-d")
        object.__setattr__(self, "mask_HW", m.astype(bool, copy=False))

    def with_mask(self, mask_HW: np.ndarray, **changes) -> DesignLayer:
        return replace(self, mask_HW=mask_HW, **changes)


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
