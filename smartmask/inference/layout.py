"""The semantic layout of one image at inference (S_I): regions back to front, and its picture at model resolution.

A `SceneLayout` comes from a panoptic segmenter (`smartmask.inference.segment`) or, for annotated images, from
the lake's ground truth (`layout_from_lake`, a reference `DATASET:IMAGE_ID[:K]`). Either way,
`layout_image` paints it exactly as training painted S_k (`smartmask.training.samples`): label ids on the
nearest-neighbour `resize_grid` of the whole image to R × R (aspect-changing, no letterbox), later regions over
earlier ones, coloured by the vocabulary table's own r, g, b (÷ 255, float32), id 0 (nothing painted) black.
A test checks the result is bit-identical to the training sampler's layout for the same image and k.

Regions the vocabulary has no label for are kept as "unknown" and painted in `UNKNOWN_GREY`, a neutral grey
that no vocabulary colour uses (palette colours are saturated, r = g = b never happens): the model never saw that
colour, so it cannot read it as a known class, yet the region still occupies its pixels (nothing gets inserted
"into" a car the segmenter could not name, as it would into black, which means free space).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from smartmask import masks
from smartmask.conditioning.focus import Window, sample_window
from smartmask.conditioning.grid import resize_nearest
from smartmask.conditioning.vocabulary import Vocabulary
from smartmask.inference.errors import BadInput
from smartmask.lake.paths import dataset_dir
from smartmask.registry import resolve_dataset

UNKNOWN = "unknown"
UNKNOWN_GREY = (128, 128, 128)  # uint8 colour of unknown regions in S_I


class LayoutError(BadInput):
    """A layout that cannot be built or painted (bad reference, K out of range, label not in the vocabulary).
    One line."""

    def __init__(self, message: str):
        super().__init__(message, "layout")


@dataclass(frozen=True, eq=False)
class Region:
    """One region of S_I. `label` is a vocabulary label or "unknown"; `source_label` what the segmenter (or the
    dataset's `label_raw`) called it; `mask_HW` bool at the image's size; `score` the segmenter's (1.0 for
    ground truth)."""

    label: str
    source_label: str
    mask_HW: np.ndarray
    is_stuff: bool
    score: float

    def __post_init__(self) -> None:
        if not self.label:
            raise LayoutError(f"region {self.source_label!r} has an empty label")
        if not isinstance(self.mask_HW, np.ndarray) or self.mask_HW.ndim != 2 or self.mask_HW.dtype != bool:
            raise LayoutError(f"region {self.label!r}: mask_HW must be a 2-d bool array")

    @property
    def is_unknown(self) -> bool:
        return self.label == UNKNOWN


@dataclass(frozen=True, eq=False)
class SceneLayout:
    """The regions of one image, BACK TO FRONT (painting order: later regions cover earlier ones), all masks
    (height, width). `source` says where it came from: "segmenter:<segmenter id>" or
    "ground-truth:<dataset>@<version>:<image_id>:<k>"."""

    height: int
    width: int
    regions: tuple[Region, ...]
    source: str

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise LayoutError(f"layout size must be positive, got {self.height}x{self.width}")
        object.__setattr__(self, "regions", tuple(self.regions))
        for r in self.regions:
            if r.mask_HW.shape != (self.height, self.width):
                raise LayoutError(f"region {r.label!r} mask is {r.mask_HW.shape[0]}x{r.mask_HW.shape[1]}, "
                                  f"the layout {self.height}x{self.width}")

    @property
    def unknown(self) -> int:
        """How many regions could not be mapped onto the vocabulary (painted grey, never dropped)."""
        return sum(r.is_unknown for r in self.regions)

    @property
    def unknown_labels(self) -> tuple[str, ...]:
        """The source labels of the unknown regions, back to front."""
        return tuple(r.source_label for r in self.regions if r.is_unknown)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(r.label for r in self.regions)

    def restricted_to(self, vocab: Vocabulary) -> SceneLayout:
        """The same layout with every label `vocab` lacks turned into "unknown" (e.g. a ground-truth layout of one
        dataset given to a model trained on another). Counted in `unknown`; nothing is dropped."""
        known = set(vocab.labels) - {""}
        regions = tuple(r if r.is_unknown or r.label in known else
                        Region(UNKNOWN, r.source_label, r.mask_HW, r.is_stuff, r.score) for r in self.regions)
        return SceneLayout(self.height, self.width, regions, self.source)


# ---------------------------------------------------------------------------------------------------------------
# Painting S_I.


def layout_ids(scene: SceneLayout, vocab: Vocabulary, R: int, window: Window | None = None) -> np.ndarray:
    """S_I as a label-id map (R, R) int32 on the training grid, or on a focus `window`'s grid (image pixels:
    conditioning/focus.py; outside the image nothing is painted); unknown regions get id len(vocab) (one past the
    vocabulary, the grey row of `layout_image`'s colour table)."""
    if R < 1:
        raise LayoutError(f"resolution must be >= 1, got {R}")
    ids_of = {lab: i for i, lab in enumerate(vocab.labels) if lab}
    unknown_id = len(vocab)
    ids = np.zeros((R, R), np.int32)
    for r in scene.regions:
        if r.is_unknown:
            lid = unknown_id
        elif r.label in ids_of:
            lid = ids_of[r.label]
        else:
            raise LayoutError(f"label {r.label!r} is not in the model's vocabulary (use SceneLayout.restricted_to)")
        # Resizing each mask on the grid then painting equals painting at full size then resizing (the grid
        # only reads pixels); this is the order-preserving f_layer of training.
        ids[resize_nearest(r.mask_HW, R) if window is None else sample_window(r.mask_HW, R, window, False)] = lid
    return ids


def layout_colours(vocab: Vocabulary) -> np.ndarray:
    """(len(vocab) + 1, 3) float32 colours in [0, 1]: the vocabulary's (as the training sampler scales them) and
    `UNKNOWN_GREY` last."""
    grey = np.asarray(UNKNOWN_GREY, np.uint8)
    if np.any(np.all(vocab.colours == grey, axis=1)):
        raise LayoutError(f"the vocabulary uses the reserved unknown grey {UNKNOWN_GREY} for a label")
    table = np.concatenate([vocab.colours, grey[None]], axis=0)
    return table.astype(np.float32) / 255.0  # the same float32 arithmetic as TrainingSampler._colours


def layout_image(scene: SceneLayout, vocab: Vocabulary, R: int, window: Window | None = None) -> np.ndarray:
    """S_I at model resolution: (R, R, 3) float32 in [0, 1], painted back to front as training paints S_k (on a
    focus `window`'s grid when given)."""
    return layout_colours(vocab)[layout_ids(scene, vocab, R, window)]


# ---------------------------------------------------------------------------------------------------------------
# Ground-truth layouts from the lake.


def parse_layout_ref(ref: str) -> tuple[str, str, int | None]:
    """`DATASET:IMAGE_ID[:K]` (DATASET may be NAME@VERSION) → (dataset ref, image id, K or None)."""
    parts = ref.split(":")
    k: int | None = None
    if len(parts) == 3:
        try:
            k = int(parts[2])
        except ValueError:
            raise LayoutError(f"layout reference {ref!r}: K must be an integer, got {parts[2]!r}") from None
    elif len(parts) != 2:
        raise LayoutError(f"layout reference {ref!r}: expected DATASET:IMAGE_ID[:K]")
    if not parts[0] or not parts[1]:
        raise LayoutError(f"layout reference {ref!r}: expected DATASET:IMAGE_ID[:K]")
    return parts[0], parts[1], k


def layout_from_lake(lake: str | os.PathLike, dataset_ref: str, image_id: str,
                     k: int | None = None) -> tuple[SceneLayout, Vocabulary]:
    """The ground-truth layout of `image_id`: its first `k` amodal layers back to front (all when k is None),
    with the dataset version's vocabulary. `dataset_ref` is NAME (newest version) or NAME@VERSION."""
    lake = Path(lake)
    name, version = resolve_dataset(lake, dataset_ref)  # NotFound (a ValueError, one line)
    d = dataset_dir(lake, name, version)
    image_id = str(image_id)
    only = [("image_id", "=", image_id)]
    images = pq.read_table(d / "images", columns=["image_id", "height", "width"], filters=only)
    if images.num_rows == 0:
        raise LayoutError(f"image {image_id!r} is not in dataset {name}@{version}")
    height, width = int(images.column("height")[0].as_py()), int(images.column("width")[0].as_py())
    layers = pq.read_table(d / "layers", columns=["layer", "label", "label_raw", "is_stuff", "height", "width",
                                                   "rle"], filters=only).sort_by("layer")
    n = layers.num_rows
    if k is None:
        k = n
    if not 0 <= k <= n:
        raise LayoutError(f"K={k} is out of range: image {image_id!r} of {name}@{version} has {n} layers (0..{n})")
    vocab = Vocabulary.read(d / "vocabulary")
    rows = layers.slice(0, k).to_pylist()
    regions = []
    for row in rows:
        if (row["height"], row["width"]) != (height, width):
            raise LayoutError(f"image {image_id!r} layer {row['layer']}: mask size differs from the image's")
        mask = masks.decode({"size": [height, width], "counts": row["rle"]}).astype(bool)
        regions.append(Region(row["label"], row["label_raw"] or row["label"], mask, bool(row["is_stuff"]), 1.0))
    scene = SceneLayout(height, width, tuple(regions), f"ground-truth:{name}@{version}:{image_id}:{k}")
    return scene, vocab
