"""The `synthetic` inpainter: paints an object class into a mask with the synthetic world's own renderer.

Why it exists: the offline demo and the tests insert objects into synthetic-world images, where no generative
model is available. This is NOT a generative model and is named `synthetic` everywhere (ids, run rows) so that
nobody mistakes its pixels for a diffusion model's. It only makes sense on synthetic-world images.

It draws the mask exactly the way `smartmask.synth.render.rgb` draws an instance: the class's palette colour x a
vertical shade across the mask's box (the world's default thing shade, tint 1), and the darker outline on the
mask's border (the instance is in front of everything around it). The rendering goes through `render.rgb` itself,
on a two-instance scene: a background instance everywhere outside the mask and the object on the mask.
"""

from __future__ import annotations

import re

import numpy as np

from smartmask.synth import render
from smartmask.synth.world import PLURAL, STUFF, Instance

# Class names it can paint: the renderer's palette, also under their plural names ("people" -> "person").
_SINGULAR = {plural: name for name, plural in PLURAL.items()}


def synthetic_class(name: str) -> str:
    """The palette class for an object name ("Boat", "boats", "a boat" -> "boat"); unknown -> one-line error."""
    words = re.findall(r"[a-z]+", str(name).lower())
    for w in reversed(words):  # "a red boat" -> "boat": the noun comes last
        cls = _SINGULAR.get(w, w)
        if cls in render.PALETTE:
            return cls
    raise ValueError(
        f"the synthetic inpainter cannot paint {name!r}: it knows only the synthetic world's classes "
        f"({', '.join(sorted(render.PALETTE))})"
    )


class SyntheticInpainter:
    """`Inpainter` for synthetic-world images (see the module docstring). Deterministic; the seed is unused."""

    DEFAULT_NATIVE = 512

    def __init__(self, native: int = DEFAULT_NATIVE):
        self.native = int(native)
        self.id = "synthetic"

    def __call__(self, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str, seed: int,
                 *, obj: str | None = None) -> np.ndarray:
        n = self.native
        if image.shape != (n, n, 3) or image.dtype != np.uint8 or mask.shape != (n, n) or mask.dtype != bool:
            raise ValueError(
                f"synthetic inpainter takes a ({n}, {n}, 3) uint8 image and a ({n}, {n}) bool mask; "
                f"got {image.shape} {image.dtype} and {mask.shape} {mask.dtype}"
            )
        # Without `obj`, the class is read from the prompt's first phrase ("a boat, by the lake" -> "boat").
        cls = synthetic_class(obj if obj is not None else prompt.split(",")[0])
        if not mask.any():
            return image.copy()
        return np.where(mask[..., None], paint(cls, mask), image)


def paint(cls: str, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the class rendered on `mask` by `render.rgb` (pixels off the mask are meaningless)."""
    H, W = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    stuff = cls in STUFF
    background = Instance(cls, np.zeros((0, 2)), (0,), stuff=True)
    background.cache["box"] = (0, H, 0, W)
    obj = Instance(cls, np.zeros((0, 2)), (1,), stuff=stuff)
    obj.cache["box"] = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    owner = mask.astype(np.int16)  # 0 = background, 1 = the object: its border is an outline (front side)
    counts = np.array([H * W - int(mask.sum()), int(mask.sum())], dtype=np.int64)
    return render.rgb(render.Layers([background, obj], owner, counts, counts))
