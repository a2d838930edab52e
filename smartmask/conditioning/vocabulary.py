"""The vocabulary: label → id → colour, the one table that turns a layout's labels into the colours S_k is painted in.

A dataset version builds it at rebuild time from the labels it holds (`Vocabulary.build`, ids in sorted label
order, colours from `palette`) and stores it as its `vocabulary` table; a model version keeps a copy
(`vocabulary.parquet`). Everything downstream reads it back from that table (`Vocabulary.from_table` /
`Vocabulary.read`), never recomputes it, so a model trained on a version keeps that version's colours.

Id 0 is the background (nothing painted, black). The class is dense by id: `labels[i]` is the label of id i, ""
for id 0 and for ids a table does not use.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from smartmask import masks

_GOLDEN = 0.618033988749895
TABLE_COLUMNS = ("label_id", "label", "is_stuff", "r", "g", "b")


class VocabularyError(ValueError):
    """A vocabulary table that cannot be read (missing file or columns, bad ids). One line."""


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 colours; row 0 is black (background). Hues are spread by the golden angle so that neighbouring
    ids, often related labels, still get clearly different colours."""
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(1, n):
        h = (i * _GOLDEN) % 1.0
        s = 0.55 + 0.45 * ((i * 7) % 3) / 2
        v = 0.6 + 0.4 * ((i * 5) % 2)
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Vocabulary:
    labels: tuple[str, ...]  # labels[label_id]; "" for the background and for unused ids
    is_stuff: np.ndarray  # bool (n,)
    colours: np.ndarray  # uint8 (n, 3)

    @classmethod
    def build(cls, labelled: Iterable[tuple[str, bool]]) -> Vocabulary:
        """From (label, is_stuff) pairs: ids follow sorted label order, so the same label set always yields the same
        ids; a label is stuff when any of its occurrences is."""
        stuff: dict[str, bool] = {}
        for label, is_stuff in labelled:
            stuff[label] = stuff.get(label, False) or bool(is_stuff)
        names = sorted(stuff)
        return cls._frozen(("", *names), np.array([False, *(stuff[n] for n in names)], bool), palette(len(names) + 1))

    @classmethod
    def from_table(cls, table: pa.Table) -> Vocabulary:
        missing = set(TABLE_COLUMNS) - set(table.column_names)
        if missing:
            raise VocabularyError(f"vocabulary table lacks column(s) {', '.join(sorted(missing))}")
        ids = np.asarray(table.column("label_id").to_numpy(zero_copy_only=False), np.int64)
        if ids.size and ids.min() < 1:
            raise VocabularyError("vocabulary label ids start at 1 (0 is the background)")
        n = int(ids.max()) + 1 if ids.size else 1
        labels = [""] * n
        for i, lab in zip(ids.tolist(), table.column("label").to_pylist(), strict=True):
            labels[i] = lab
        stuff = np.zeros(n, bool)
        stuff[ids] = np.asarray(table.column("is_stuff").to_numpy(zero_copy_only=False), bool)
        colours = np.zeros((n, 3), np.uint8)
        for j, ch in enumerate("rgb"):
            colours[ids, j] = np.asarray(table.column(ch).to_numpy(zero_copy_only=False), np.uint8)
        return cls._frozen(tuple(labels), stuff, colours)

    @classmethod
    def read(cls, source: pa.Table | str | os.PathLike) -> Vocabulary:
        """From a table, a model version's `vocabulary.parquet` or a dataset version's `vocabulary/` directory."""
        if isinstance(source, pa.Table):
            return cls.from_table(source)
        path = Path(source)
        if not path.exists():
            raise VocabularyError(f"vocabulary table {str(path)!r} does not exist")
        return cls.from_table(pq.read_table(path))

    @classmethod
    def _frozen(cls, labels: tuple[str, ...], stuff: np.ndarray, colours: np.ndarray) -> Vocabulary:
        stuff.flags.writeable = False
        colours.flags.writeable = False
        return cls(labels, stuff, colours)

    def rows(self) -> list[dict]:
        """The `vocabulary` table's rows (label_id, label, is_stuff, r, g, b), one per used id."""
        return [{"label_id": i, "label": lab, "is_stuff": bool(self.is_stuff[i]), "r": int(self.colours[i][0]),
                 "g": int(self.colours[i][1]), "b": int(self.colours[i][2])}
                for i, lab in enumerate(self.labels) if lab]

    @property
    def ids(self) -> dict[str, int]:
        return {lab: i for i, lab in enumerate(self.labels) if lab}

    def __len__(self) -> int:
        return len(self.labels)

    def colour(self, label_id: int) -> np.ndarray:
        return self.colours[label_id]


def f_layer(rles_back_to_front: Sequence[dict], label_ids: Sequence[int], k: int | None = None) -> np.ndarray:
    """Paper Eq. 1 at full resolution: S_k as a label-id map (H, W) int32, the first k layers painted back to front,
    later over earlier. (Training paints the same on the model's grid without decoding: `grid.foreground_runs`.)"""
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
