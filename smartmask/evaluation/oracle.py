"""The evaluation's oracle baseline: each class's mean amodal shape, fitted to a box.

What a model that learned every class's shape but ignores the layout would reach: given the target's box, it draws
the class's average silhouette inside it. A mask suggestion that does not beat this has learned nothing from S_I.

`ClassShapes.fit` averages, per thing class (stuff never: it has no shape of its own), the amodal masks of one split
of a dataset version, each cropped to its tight box (`smartmask.boxes.mask_box`) and resized to `size` × `size`
with PIL's BILINEAR filter on the float mask. PIL widens the bilinear kernel by the scale factor when shrinking, so
a crop larger than `size` is area-averaged (each output pixel is close to the share of the crop it covers) and a
smaller one is interpolated. Every instance counts once, whatever its size: the result at each pixel is the share
of instances that cover it there.

Instances cut by the image's edge are averaged as they are (their tight box is that of the clipped mask): the
ground-truth boxes the oracle is fitted to at evaluation are clipped the same way, so the mean is of what it meets.

The shapes can be frozen next to an eval set (`to_table` / `from_table`, one row per class) and identified by
`content_hash`.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from smartmask import masks
from smartmask.boxes import mask_box
from smartmask.lake.paths import dataset_dir

_BATCH_ROWS = 256  # layer rows (with their RLE strings) held at once while fitting; one mask decoded at a time
_HASH_TAG = b"smartmask.class-shapes/1\n"  # versions the canonical byte layout of `content_hash`

TABLE_SCHEMA = pa.schema([("label", pa.string()), ("size", pa.int32()), ("count", pa.int64()),
                          ("shape", pa.list_(pa.float32()))])


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """`a` (float, values in [0, 1]) resized to (h, w) float32 by PIL BILINEAR on a mode "F" image (area-averaging
    when shrinking, see the module docstring), clipped to [0, 1]."""
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))  # float32 -> mode "F"
    return np.clip(np.asarray(img.resize((w, h), Image.BILINEAR), np.float32), 0.0, 1.0)


def _part_files(folder: Path) -> list[Path]:
    """The table's Parquet files in name order, so every pass reads rows in the same order (a deterministic fit)."""
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files in {folder}")
    return files


@dataclass(frozen=True, eq=False)
class ClassShapes:
    """Mean amodal shapes per class: `shapes[label]` is float32 (size, size) in [0, 1], the share of the fitted
    instances covering each pixel of the normalised box; `counts[label]` how many instances were averaged; `source`
    where they came from, "<dataset>@<version>:<split>"."""

    size: int
    shapes: dict[str, np.ndarray]
    counts: dict[str, int]
    source: str

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if set(self.shapes) != set(self.counts):
            raise ValueError("shapes and counts must name the same classes")
        for label, s in self.shapes.items():
            if s.shape != (self.size, self.size) or s.dtype != np.float32:
                raise ValueError(f"shape of {label!r} must be float32 ({self.size}, {self.size}), got "
                                 f"{s.dtype} {s.shape}")
            if not np.all((s >= 0.0) & (s <= 1.0)):  # also rejects NaN
                raise ValueError(f"shape of {label!r} has values outside [0, 1]")

    @property
    def labels(self) -> tuple[str, ...]:
        """The classes with a shape, sorted."""
        return tuple(sorted(self.shapes))

    @classmethod
    def fit(cls, lake: str | os.PathLike, dataset: str, version: str, *, split: str = "train", size: int = 64,
            max_per_class: int = 2000, seed: int = 0) -> ClassShapes:
        """Mean shape of every thing class over the `split` images of `dataset@version`: for each non-stuff layer
        with a non-empty amodal mask, the mask cropped to its tight box and resized to `size` × `size` (PIL
        BILINEAR of the float mask), averaged per class. A class with more than `max_per_class` such layers averages
        a subsample of that many, drawn without replacement by `numpy.random.default_rng(seed)` from its layers
        sorted by (image_id, layer), classes in sorted order: the same lake and arguments give the same shapes.

        Two passes over the `layers` table: the first reads no masks (which layers to use), the second reads RLEs
        `_BATCH_ROWS` rows at a time and decodes one mask at a time, so memory does not grow with the dataset."""
        if max_per_class < 1:
            raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
        d = dataset_dir(Path(lake), dataset, version)
        images = pq.read_table(d / "images", columns=["image_id", "split"])
        ids = {i for i, s in zip(images.column("image_id").to_pylist(), images.column("split").to_pylist(),
                                 strict=True) if s == split}
        # Pass 1: the candidate layers of each class (empty amodal masks have no box to fit to).
        cands: dict[str, list[tuple[str, int]]] = {}
        cols = ["image_id", "layer", "label", "is_stuff", "area"]
        for f in _part_files(d / "layers"):
            t = pq.read_table(f, columns=cols)
            for image_id, layer, label, stuff, area in zip(*(t.column(c).to_pylist() for c in cols), strict=True):
                if image_id in ids and not stuff and area > 0:
                    cands.setdefault(label, []).append((image_id, int(layer)))
        rng = np.random.default_rng(seed)
        chosen: dict[tuple[str, int], str] = {}
        for label in sorted(cands):
            keys = sorted(cands[label])
            if len(keys) > max_per_class:
                keys = [keys[i] for i in sorted(rng.choice(len(keys), size=max_per_class, replace=False))]
            chosen.update((k, label) for k in keys)
        # Pass 2: decode and accumulate (float64 sums: thousands of float32 additions would drift).
        sums = {label: np.zeros((size, size), np.float64) for label in cands}
        counts = dict.fromkeys(cands, 0)
        cols = ["image_id", "layer", "height", "width", "rle"]
        for f in _part_files(d / "layers"):
            for batch in pq.ParquetFile(f).iter_batches(batch_size=_BATCH_ROWS, columns=cols):
                for image_id, layer, h, w, rle in zip(*(batch.column(c).to_pylist() for c in cols), strict=True):
                    label = chosen.get((image_id, int(layer)))
                    if label is None:
                        continue
                    mask = masks.decode({"size": [h, w], "counts": rle})
                    x0, y0, x1, y1 = mask_box(mask)
                    sums[label] += _resize(mask[y0:y1, x0:x1], size, size)
                    counts[label] += 1
        shapes = {label: (sums[label] / counts[label]).astype(np.float32) for label in sums if counts[label]}
        return cls(size, shapes, {k: counts[k] for k in shapes}, f"{dataset}@{version}:{split}")

    def fit_to_box(self, label: str, box: tuple[float, float, float, float], H: int, W: int,
                   threshold: float = 0.5) -> np.ndarray | None:
        """The oracle's mask for `label` in `box` (x0, y0, x1, y1; x1/y1 exclusive, `smartmask.boxes`' convention)
        on an H × W image, bool (H, W); None when the class has no shape.

        The box's pixel extent is columns floor(x0)..ceil(x1)-1 and rows floor(y0)..ceil(y1)-1 (every pixel it
        touches). The mean shape is resized onto that whole extent (PIL BILINEAR) and a pixel is on where the
        resized value is >= `threshold`; at 0.5 that is the per-pixel majority shape (on where at least half of the
        fitted instances cover it). A box reaching outside the image is fitted whole first, then clipped to it, so
        the shape is not squeezed into the visible part. A degenerate box (x1 <= x0 or y1 <= y0) gives an empty
        mask."""
        shape = self.shapes.get(label)
        if shape is None:
            return None
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise ValueError(f"box {box!r} has a non-finite coordinate")
        out = np.zeros((H, W), bool)
        if x1 <= x0 or y1 <= y0:
            return out
        c0, r0, c1, r1 = math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)
        # Clip before resizing only what can be clipped for free: a box entirely outside the image shows nothing.
        if c1 <= 0 or r1 <= 0 or c0 >= W or r0 >= H:
            return out
        fitted = _resize(shape, r1 - r0, c1 - c0) >= threshold
        vr0, vc0, vr1, vc1 = max(r0, 0), max(c0, 0), min(r1, H), min(c1, W)
        out[vr0:vr1, vc0:vc1] = fitted[vr0 - r0:vr1 - r0, vc0 - c0:vc1 - c0]
        return out

    # ---------------------------------------------------------------------------------------------------------
    # Freezing.

    def to_table(self) -> pa.Table:
        """One row per class, sorted by label: label, size, count, shape (the size × size values row-major, as
        list<float32>); `source` in the schema metadata."""
        labels = self.labels
        return pa.Table.from_pydict(
            {"label": list(labels), "size": [self.size] * len(labels), "count": [self.counts[k] for k in labels],
             "shape": [self.shapes[k].ravel() for k in labels]},
            schema=TABLE_SCHEMA.with_metadata({"source": self.source}))

    @classmethod
    def from_table(cls, t: pa.Table) -> ClassShapes:
        """The inverse of `to_table`; ValueError when the table is not one (columns, one size, shape lengths)."""
        missing = {"label", "size", "count", "shape"} - set(t.column_names)
        if missing:
            raise ValueError(f"not a class-shapes table: missing columns {sorted(missing)}")
        sizes = set(t.column("size").to_pylist())
        if len(sizes) > 1:
            raise ValueError(f"a class-shapes table has one size, got {sorted(sizes)}")
        size = sizes.pop() if sizes else 1
        meta = t.schema.metadata or {}
        shapes, counts = {}, {}
        for label, count, values in zip(t.column("label").to_pylist(), t.column("count").to_pylist(),
                                        t.column("shape").to_pylist(), strict=True):
            if len(values) != size * size:
                raise ValueError(f"shape of {label!r} has {len(values)} values, expected {size * size}")
            shapes[label] = np.asarray(values, np.float32).reshape(size, size)
            counts[label] = int(count)
        return cls(int(size), shapes, counts, meta.get(b"source", b"").decode())

    def content_hash(self) -> str:
        """sha256 (hex) of the table's canonical bytes: a version tag, then for each row in label order the label's
        UTF-8 bytes, a NUL, size (int32 little-endian), count (int64 LE) and the shape's float32 LE values
        row-major. The rows only: `source` (provenance) does not change what the oracle draws, so not the hash."""
        h = hashlib.sha256(_HASH_TAG)
        for label in self.labels:
            h.update(label.encode() + b"\0" + struct.pack("<iq", self.size, self.counts[label]))
            h.update(np.ascontiguousarray(self.shapes[label], dtype="<f4").tobytes())
        return h.hexdigest()
