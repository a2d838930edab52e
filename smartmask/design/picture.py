"""The colour picture of a layered layout, and its legend: what a person looks at to check a design.

`layout_picture` paints each pixel in the colour of its visible label (the front-most layer covering it), black
where no layer does: the semantic layout S of the paper at the canvas's own size. Colours (`label_colours`):

- a label of the vocabulary the layout was designed with (a model version's or a dataset version's, see
  `vocabulary_for`) gets that vocabulary's colour, so the picture looks like what the model reads;
- "unknown" gets the reserved neutral grey `UNKNOWN_GREY`, as in S_I;
- any other label, or every label when there is no vocabulary, gets a colour of the fixed palette
  `vocabulary.palette(FALLBACK_COLOURS + 1)` (black excluded), chosen by the label's SHA-256 so a label keeps its
  colour across edits and layouts; when two labels of one layout land on the same colour, the later one in sorted
  label order takes the next free colour, so a legend never shows one colour for two labels.

`legend_picture` lists the layers front to back (the order a person reads a stack in): a swatch of the label's
colour, the layer's order and label, "stuff" for stuff layers, and how much of it is visible. `picture_with_legend`
puts the picture (enlarged when it is smaller than the legend) and its legend side by side. All are (H, W, 3) uint8 arrays; nothing here writes files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from smartmask.conditioning.vocabulary import Vocabulary, VocabularyError, palette
from smartmask.design.layered import LayeredLayout
from smartmask.inference.layout import UNKNOWN, UNKNOWN_GREY, LayoutError

FALLBACK_COLOURS = 48
ROW_H = 16  # legend row height in pixels (the default bitmap font is 11 px high)
SWATCH = 12
PAD = 4
TEXT = (235, 235, 235)
PANEL = (24, 24, 24)
MAX_ZOOM = 8

Colours = Mapping[str, tuple[int, int, int]]


def _fallback_table() -> list[tuple[int, int, int]]:
    grey = tuple(UNKNOWN_GREY)
    return [c for c in (tuple(int(v) for v in row) for row in palette(FALLBACK_COLOURS + 1)[1:]) if c != grey]


def label_colours(labels: Iterable[str], vocab: Vocabulary | None = None) -> dict[str, tuple[int, int, int]]:
    """label → (r, g, b) uint8 for every label in `labels` (see the module docstring for the rules)."""
    out: dict[str, tuple[int, int, int]] = {}
    known = vocab.ids if vocab is not None else {}
    rest = []
    for label in sorted(set(labels)):
        if label in known:
            out[label] = tuple(int(v) for v in vocab.colours[known[label]])
        elif label == UNKNOWN:
            out[label] = tuple(UNKNOWN_GREY)
        else:
            rest.append(label)
    table = _fallback_table()
    used = set(out.values())
    for label in rest:
        start = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "big") % len(table)
        # Probe for a colour no other label of this layout has; past the table's size colours repeat (no choice).
        pick = next((table[(start + k) % len(table)] for k in range(len(table))
                     if table[(start + k) % len(table)] not in used), table[start])
        out[label] = pick
        used.add(pick)
    return out


def vocabulary_for(lake: str | os.PathLike, ref: str | None) -> Vocabulary | None:
    """The vocabulary a layout's colours come from: `model:<version>` (the model's copy) or
    `dataset:<name>[@<version>]`; None for no reference. A reference that does not resolve is a `LayoutError`."""
    if not ref:
        return None
    kind, _, what = ref.partition(":")
    lake = Path(lake)
    try:
        if kind == "model" and what:
            from smartmask.lake.paths import model_dir

            return Vocabulary.read(model_dir(lake, what) / "vocabulary.parquet")
        if kind == "dataset" and what:
            from smartmask.lake.paths import dataset_dir
            from smartmask.registry import NotFound, resolve_dataset

            try:
                name, version = resolve_dataset(lake, what)
            except NotFound as e:
                raise LayoutError(f"vocabulary {ref!r}: {e}") from None
            return Vocabulary.read(dataset_dir(lake, name, version) / "vocabulary")
    except VocabularyError as e:
        raise LayoutError(f"vocabulary {ref!r}: {e}") from None
    raise LayoutError(f"vocabulary reference {ref!r}: expected model:<version> or dataset:<name>[@<version>]")


def layout_picture(layout: LayeredLayout, colours: Colours | None = None) -> np.ndarray:
    """(H, W, 3) uint8: each pixel in its visible label's colour, black where no layer covers it. `colours`
    defaults to `label_colours(layout.labels)` (the fixed palette)."""
    colours = label_colours(layout.labels) if colours is None else colours
    missing = sorted(set(layout.labels) - set(colours))
    if missing:
        raise LayoutError(f"no colour for label(s) {', '.join(map(repr, missing))}")
    # One row per layer plus black at the end: owner -1 (no layer) indexes the last row.
    table = np.array([colours[lab] for lab in layout.labels] + [(0, 0, 0)], np.uint8).reshape(-1, 3)
    return table[layout.owner_HW()]


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _text(draw, xy: tuple[int, int], text: str, font) -> None:
    try:
        draw.text(xy, text, fill=TEXT, font=font)
    except UnicodeEncodeError:  # the bitmap font knows latin-1 only: say what we can rather than fail a save
        draw.text(xy, text.encode("latin-1", "replace").decode("latin-1"), fill=TEXT, font=font)


def legend_picture(layout: LayeredLayout, colours: Colours | None = None, *, width: int = 240) -> np.ndarray:
    """(rows × ROW_H + 2·PAD, width, 3) uint8: one row per layer, front-most first: swatch, `#order label`,
    "stuff", and the share of the layer that is visible."""
    from PIL import Image, ImageDraw

    colours = label_colours(layout.labels) if colours is None else colours
    n = len(layout.layers)
    img = Image.new("RGB", (width, max(1, n) * ROW_H + 2 * PAD), PANEL)
    draw, font = ImageDraw.Draw(img), _font()
    if n == 0:
        _text(draw, (PAD, PAD + 2), "(no layers)", font)
    owner = layout.owner_HW()
    for row, i in enumerate(reversed(range(n))):
        layer = layout.layers[i]
        y = PAD + row * ROW_H
        draw.rectangle([PAD, y + 2, PAD + SWATCH - 1, y + 1 + SWATCH], fill=tuple(colours[layer.label]),
                       outline=TEXT)
        area = int(layer.mask_HW.sum())
        seen = int(np.count_nonzero(owner == i))
        share = f"{100 * seen / area:.0f}% seen" if area else "empty"
        stuff = " stuff" if layer.is_stuff else ""
        _text(draw, (PAD + SWATCH + PAD, y + 3), f"#{i} {layer.label}{stuff} ({share})", font)
    return np.asarray(img, np.uint8)


def picture_with_legend(layout: LayeredLayout, colours: Colours | None = None) -> np.ndarray:
    """The picture at the left, the legend at its right, on the legend's dark panel colour. A canvas shorter than
    the legend is enlarged by a whole factor (pixel repeat, at most `MAX_ZOOM`) so small layouts stay legible."""
    colours = label_colours(layout.labels) if colours is None else colours
    legend = legend_picture(layout, colours)
    pic = layout_picture(layout, colours)
    zoom = max(1, min(MAX_ZOOM, legend.shape[0] // pic.shape[0]))
    pic = np.repeat(np.repeat(pic, zoom, axis=0), zoom, axis=1)
    H, W = max(pic.shape[0], legend.shape[0]), pic.shape[1] + PAD + legend.shape[1]
    out = np.empty((H, W, 3), np.uint8)
    out[:] = PANEL
    out[:pic.shape[0], :pic.shape[1]] = pic
    out[:legend.shape[0], pic.shape[1] + PAD:] = legend
    return out
