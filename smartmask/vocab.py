"""The dataset vocabulary (label → id → colour) and `f_layer`, the paper's layering operation (Eq. 1).

Id 0 is the background (nothing painted). Colours are spread around the hue circle by the golden angle so
that neighbouring ids, which are often related labels, still get clearly different colours.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from smartmask import masks

_GOLDEN = 0.618033988749895


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 colours; row 0 is black (background)."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(1, n):
        h = (i * _GOLDEN) % 1.0
        s = 0.55 + 0.45 * ((i * 7) % 3) / 2
        v = 0.6 + 0.4 * ((i * 5) % 2)
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255)
    return out


@dataclass(frozen=True, slots=True)
class Vocabulary:
    labels: tuple[str, ...]  # labels[i - 1] has id i
    stuff: tuple[bool, ...]

    @classmethod
    def build(cls, labelled: Iterable[tuple[str, bool]]) -> Vocabulary:
        """Ids follow sorted label order, so the same label set always yields the same ids."""
        stuff: dict[str, bool] = {}
        for label, is_stuff in labelled:
            stuff[label] = stuff.get(label, False) or bool(is_stuff)
        labels = tuple(sorted(stuff))
        return cls(labels, tuple(stuff[lab] for lab in labels))

    @property
    def ids(self) -> dict[str, int]:
        return {lab: i + 1 for i, lab in enumerate(self.labels)}

    @property
    def colours(self) -> np.ndarray:
        return palette(len(self.labels) + 1)


def f_layer(rles_back_to_front: Sequence[dict], label_ids: Sequence[int], k: int | None = None) -> np.ndarray:
    """S_k as a label-id map (H, W) int32: paint the first k layers back to front, later over earlier."""
    k = len(rles_back_to_front) if k is None else k
    if not rles_back_to_front:
        raise ValueError("f_layer needs at least one layer to know the image size")
    h, w = rles_back_to_front[0]["size"]
    ids_HW = np.zeros((h, w), dtype=np.int32)
    for rle, lid in zip(rles_back_to_front[:k], label_ids[:k], strict=True):
        ids_HW[masks.decode(rle).astype(bool)] = lid
    return ids_HW


def colorize(ids_HW: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """Label-id map → (H, W, 3) uint8 semantic layout image."""
    return vocab.colours[ids_HW]
