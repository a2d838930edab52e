"""Training samples of the paper's Eq. 1 + Eq. 5, drawn from a dataset version in the lake.

One sample: pick a target uniformly among the valid (image, k) pairs of the split (layer k, 0-based, is the next
object; layers 0..k-1 are already painted), build S_k = f_layer(A_0..A_{k-1}) coloured by the dataset's vocabulary,
derive a guidance map G from A_k (kind drawn from `guidance_mix`) and return S~_k = S_k ⊙ (1 − αG) + αG with the
target mask A_k, its label (T_obj) and the image caption (T_context).

Resize: a plain (aspect-changing) nearest-neighbour resize of the whole image to `resolution`², not letterbox
padding. Reasons: (1) padding would need a colour for "outside the image", and black is already "nothing painted
here" (label id 0), where objects may be inserted — the model would learn to put objects into the padding;
(2) with a plain resize, normalised coordinates are the same in the image and in the layout, so boxes (the
`box` field, the planner's boxes, a user's box) need no conversion, and mapping a predicted mask back to the image
is a plain resize to (H, W); (3) every one of the R² pixels carries image content (KINS' 1242×375 would fill
only 30% of a padded square). The cost is a fixed, train/inference-consistent anisotropic stretch (4:3 sources
are squeezed by 1.33 horizontally), which the model sees identically at both times. Inference must therefore use
`resize_grid`/`resize_nearest` here for S_I and the user's guidance, and resize predicted masks back to (H, W).

Speed: no mask is ever decoded at full resolution. The nearest-neighbour resize only reads the source pixels on
`resize_grid`; in COCO's column-major RLE a foreground run [s, e) of a layer covers exactly the grid points
[n(s), n(e)), where n(p) (the number of grid points before flat index p) is two table lookups (`_Grid`). The RLE
strings of layers 0..k of an image are parsed together with vectorised numpy (`parse_counts`), and only the small
grid is painted, back to front. Nothing is cached per image (only the per-(H, W, R) grid tables), so memory stays
at the size of the index. Measured: bench/bench_sampler.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from smartmask.lake.layout import dataset_dir
from smartmask.training.guidance import ALPHA, GUIDANCE_KINDS, apply_guidance, guidance_from_mask

# A target whose resized mask has no pixel left (a thin sliver at a low resolution) would teach "predict
# nothing"; such a draw is redrawn from the same generator, at most this many times.
MAX_DRAWS = 8


@dataclass(frozen=True, kw_only=True, slots=True)
class SampleConfig:
    resolution: int = 256
    alpha: float = ALPHA
    guidance_mix: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)  # none / box / blob / scribble
    # Stuff (is_stuff) layers are painted as context and may be the first layer, but are targets only if set.
    insert_stuff: bool = False
    min_target_area: int = 16  # amodal pixels at the source resolution
    split: str = "train"  # the split `TrainingSampler.from_lake` reads

    def __post_init__(self) -> None:
        if self.resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {self.resolution}")
        mix = tuple(self.guidance_mix)
        if len(mix) != len(GUIDANCE_KINDS) or any(p < 0 or not math.isfinite(p) for p in mix) or sum(mix) <= 0:
            raise ValueError(f"guidance_mix needs {len(GUIDANCE_KINDS)} non-negative weights, got {mix}")

    @classmethod
    def tiny(cls) -> SampleConfig:
        return cls(resolution=32)


# ---------------------------------------------------------------------------------------------------------------
# Resizing (shared with inference).


@functools.lru_cache(maxsize=64)
def resize_grid(H: int, W: int, R: int) -> tuple[np.ndarray, np.ndarray]:
    """Source rows (R,) and columns (R,) that a nearest-neighbour resize of (H, W) to (R, R) reads: pixel centres
    aligned, i.e. output i reads source floor((i + 0.5) · H / R). Read-only arrays (cached)."""
    ys = np.minimum(((np.arange(R) + 0.5) * (H / R)).astype(np.int64), H - 1)
    xs = np.minimum(((np.arange(R) + 0.5) * (W / R)).astype(np.int64), W - 1)
    ys.flags.writeable = False
    xs.flags.writeable = False
    return ys, xs


def resize_nearest(arr: np.ndarray, R: int) -> np.ndarray:
    """(H, W, ...) → (R, R, ...) with the same nearest-neighbour grid the training samples use."""
    ys, xs = resize_grid(arr.shape[0], arr.shape[1], R)
    return arr[ys[:, None], xs[None, :]]


@dataclass(frozen=True, slots=True)
class _Grid:
    """Where each source pixel lands on the grid of distinct pixels the resize reads (nx columns × ny rows,
    column-major): the number of grid points before column-major source index p = x·H + y is
    col_base[x] + col_read[x] · row_before[y]. `expand` gathers that (ny, nx) grid to (R, R), None when no row or
    column is read twice (R <= H and R <= W)."""

    H: int
    nx: int
    ny: int
    col_base: np.ndarray  # (W + 1,) ny · (number of read columns < x)
    col_read: np.ndarray  # (W + 1,) 1 where column x is read
    row_before: np.ndarray  # (H + 1,) number of read rows < y
    expand: tuple | None

    def count_before(self, p: np.ndarray) -> np.ndarray:
        x, y = np.divmod(p, self.H)
        return self.col_base[x] + self.col_read[x] * self.row_before[y]


@functools.lru_cache(maxsize=64)
def _grid(H: int, W: int, R: int) -> _Grid:
    ys, xs = resize_grid(H, W, R)
    uy, iy = np.unique(ys, return_inverse=True)
    ux, ix = np.unique(xs, return_inverse=True)
    col_read = np.zeros(W + 1, np.int64)
    col_read[ux] = 1
    col_base = np.searchsorted(ux, np.arange(W + 1)) * uy.size
    row_before = np.searchsorted(uy, np.arange(H + 1))
    expand = None if (uy.size == R and ux.size == R) else np.ix_(iy, ix)
    return _Grid(H, int(ux.size), int(uy.size), col_base, col_read, row_before, expand)


# ---------------------------------------------------------------------------------------------------------------
# Vectorised COCO compressed-RLE parsing (pycocotools' rleFrString, for many strings at once).


def _segmented_cumsum(vals: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Cumulative sum of `vals` restarting wherever the (non-decreasing) segment id `seg` changes."""
    if vals.size == 0:
        return vals
    cs = np.cumsum(vals)
    first = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    base = cs[first] - vals[first]
    return cs - np.repeat(base, np.diff(np.r_[first, vals.size]))


def parse_counts(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uncompressed run lengths of several compressed RLE strings laid end to end.

    `data` uint8 (the ascii bytes), `offsets` (n + 1,) string boundaries into it. Returns (counts int64, layer of
    each count, index of each count within its string): for each string the alternating background/foreground
    run lengths, starting with background."""
    c = data.astype(np.int64) - 48
    n_layers = offsets.size - 1
    if c.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    ends = np.flatnonzero(c < 0x20)  # the last character of each number has no continuation bit (0x20)
    starts = np.r_[0, ends[:-1] + 1]
    pos = np.arange(c.size) - np.repeat(starts, ends - starts + 1)  # character's place within its number
    x = np.add.reduceat((c & 0x1F) << (5 * pos), starts)
    neg = np.flatnonzero(c[ends] & 0x10)  # sign bit on the last character: sign-extend
    if neg.size:
        x[neg] -= np.left_shift(1, 5 * (pos[ends[neg]] + 1))
    layer = np.searchsorted(offsets, ends, side="right") - 1
    m = np.arange(x.size) - np.searchsorted(layer, np.arange(n_layers))[layer]  # index within its string
    # Delta coding: for m > 2, count[m] = x[m] + count[m - 2], i.e. running sums over odd m ≥ 1 and even m ≥ 2.
    odd = np.flatnonzero(m & 1)
    x[odd] = _segmented_cumsum(x[odd], layer[odd])
    even = np.flatnonzero(((m & 1) == 0) & (m >= 2))
    x[even] = _segmented_cumsum(x[even], layer[even])
    return x, layer, m


def foreground_runs(data: np.ndarray, offsets: np.ndarray, pixels: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(layer, start, end) of every foreground run, as flat column-major indices into the (H, W) mask.

    With `pixels` = H·W given, a string's runs are known to sum to it, which turns the per-string running sum into
    one global cumulative sum (checked; falls back to the segmented sum if a string does not add up)."""
    counts, layer, m = parse_counts(data, offsets)
    cs = np.cumsum(counts)
    n_layers = offsets.size - 1
    if pixels is not None and cs.size and cs[-1] == n_layers * pixels:
        bounds = cs - layer * pixels
    else:
        bounds = _segmented_cumsum(counts, layer)
    fg = np.flatnonzero(m & 1)
    return layer[fg], bounds[fg] - counts[fg], bounds[fg]


def _expand(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Concatenation of arange(a[j], b[j]) over j (all b > a)."""
    lengths = b - a
    cum = np.cumsum(lengths)
    return np.arange(int(cum[-1]) if cum.size else 0) + np.repeat(a - (cum - lengths), lengths)


# ---------------------------------------------------------------------------------------------------------------
# The index.


@dataclass(frozen=True, slots=True, eq=False)
class TableVocabulary:
    """The dataset's vocabulary as stored in its `vocabulary` table, dense by label id (row 0 = background, black).

    Colours come from the table's r, g, b columns, never recomputed, so a model trained on a version keeps that
    version's colours."""

    labels: tuple[str, ...]  # labels[label_id]; "" for the background and for unused ids
    is_stuff: np.ndarray  # bool (n,)
    colours: np.ndarray  # uint8 (n, 3)

    @classmethod
    def from_table(cls, table: pa.Table) -> TableVocabulary:
        ids = np.asarray(table.column("label_id").to_numpy(zero_copy_only=False), np.int64)
        if ids.size and ids.min() < 1:
            raise ValueError("vocabulary label ids start at 1 (0 is the background)")
        n = int(ids.max()) + 1 if ids.size else 1
        labels = [""] * n
        for i, lab in zip(ids.tolist(), table.column("label").to_pylist(), strict=True):
            labels[i] = lab
        stuff = np.zeros(n, bool)
        stuff[ids] = np.asarray(table.column("is_stuff").to_numpy(zero_copy_only=False), bool)
        colours = np.zeros((n, 3), np.uint8)
        for j, ch in enumerate("rgb"):
            colours[ids, j] = np.asarray(table.column(ch).to_numpy(zero_copy_only=False), np.uint8)
        stuff.flags.writeable = False
        colours.flags.writeable = False
        return cls(tuple(labels), stuff, colours)

    def __len__(self) -> int:
        return len(self.labels)

    def colour(self, label_id: int) -> np.ndarray:
        return self.colours[label_id]


_TEMPLATE_PREFIX = "template@"
_LAYER_COLUMNS = ["image_id", "layer", "label", "label_id", "is_stuff", "height", "width", "rle", "bbox", "area"]


def _read_table(directory: Path, columns: list[str] | None = None) -> pa.Table | None:
    parts = sorted(directory.glob("part-*.parquet"))
    if not parts:
        return None
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in parts])


def _np(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return np.asarray(col.to_numpy(zero_copy_only=False))


def _pick_captions(captions: pa.Table | None, image_ids: list[str]) -> list[str]:
    """One caption per image: a model captioner's over the template's; ties broken by captioner id; "" if none."""
    out = [""] * len(image_ids)
    if captions is None or captions.num_rows == 0:
        return out
    pos = {iid: j for j, iid in enumerate(image_ids)}
    best: dict[int, tuple] = {}
    cols = [captions.column(c).to_pylist() for c in ("image_id", "captioner", "caption")]
    for iid, who, text in zip(*cols, strict=True):
        j = pos.get(iid)
        if j is None or not text:
            continue
        who = who or ""
        key = (who.startswith(_TEMPLATE_PREFIX), who)
        if j not in best or key < best[j][0]:
            best[j] = (key, text)
    for j, (_, text) in best.items():
        out[j] = text
    return out


class LayerIndex:
    """Every image of one split with its layers back to front, stored column-wise (no per-layer Python objects):
    the RLE strings stay one arrow byte buffer plus offsets, the rest numpy arrays. `len()` is the number of valid
    targets for the criteria it was built with; `valid_targets()` recomputes them for other criteria."""

    def __init__(self, *, split: str | None, image_ids: np.ndarray, heights: np.ndarray, widths: np.ndarray,
                 captions: list[str], layer_start: np.ndarray, label_id: np.ndarray, is_stuff: np.ndarray,
                 area: np.ndarray, bbox: np.ndarray, rle: pa.LargeStringArray, vocabulary: TableVocabulary,
                 insert_stuff: bool = False, min_target_area: int = 16):
        self.split = split
        self.image_ids = image_ids  # object (n_images,) of str
        self.heights = heights  # int64 (n_images,)
        self.widths = widths
        self.captions = captions
        self.layer_start = layer_start  # int64 (n_images + 1,): image j's layers are layer_start[j]:[j+1]
        self.label_id = label_id  # int32 (n_layers,), back to front within each image
        self.is_stuff = is_stuff  # bool (n_layers,)
        self.area = area  # int64 (n_layers,)
        self.bbox = bbox  # float32 (n_layers, 4) x, y, w, h at the source resolution
        self._rle = rle  # keeps the buffers below alive
        bufs = rle.buffers()
        self.rle_offsets = np.frombuffer(bufs[1], np.int64)[rle.offset : rle.offset + len(rle) + 1]
        self.rle_data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
        self.vocabulary = vocabulary
        counts = np.diff(layer_start)
        self.layer_image = np.repeat(np.arange(counts.size, dtype=np.int32), counts)  # image of each layer
        self.layer_k = (np.arange(label_id.size) - np.repeat(layer_start[:-1], counts)).astype(np.int32)
        self.insert_stuff = insert_stuff
        self.min_target_area = min_target_area
        self.targets = self.valid_targets(insert_stuff, min_target_area)
        self._pos = {iid: j for j, iid in enumerate(image_ids.tolist())}

    # -- construction

    @classmethod
    def from_lake(cls, lake: Path, name: str, version: str, split: str | None = "train", *,
                  insert_stuff: bool = False, min_target_area: int = 16) -> LayerIndex:
        d = dataset_dir(Path(lake), name, version)
        if not d.is_dir():
            raise FileNotFoundError(f"no dataset version {name}@{version} under {lake}")
        images = _read_table(d / "images", ["image_id", "width", "height", "split"])
        layers = _read_table(d / "layers", _LAYER_COLUMNS)
        vocabulary = _read_table(d / "vocabulary")
        if images is None or layers is None or vocabulary is None:
            raise FileNotFoundError(f"{d} lacks its images, layers or vocabulary table")
        captions = _read_table(d / "captions", ["image_id", "captioner", "caption"])
        return cls.from_tables(images, layers, captions, vocabulary, split=split, insert_stuff=insert_stuff,
                               min_target_area=min_target_area)

    @classmethod
    def from_tables(cls, images: pa.Table, layers: pa.Table, captions: pa.Table | None, vocabulary: pa.Table,
                    split: str | None = "train", *, insert_stuff: bool = False,
                    min_target_area: int = 16) -> LayerIndex:
        """`split=None` keeps every image. Layers of images outside the split are dropped."""
        if split is not None:
            images = images.filter(pc.equal(images.column("split"), split))
        image_ids = images.column("image_id").combine_chunks()
        img = pc.index_in(layers.column("image_id"), value_set=image_ids)
        keep = pc.is_valid(img)
        layers, img = layers.filter(keep), _np(pc.filter(img, keep)).astype(np.int64)
        order = np.lexsort((_np(layers.column("layer")), img))
        layers, img = layers.take(order), img[order]

        vocab = TableVocabulary.from_table(vocabulary)
        label_id = _np(layers.column("label_id")).astype(np.int32)
        if label_id.size and (label_id.min() < 1 or label_id.max() >= len(vocab)
                              or any(vocab.labels[i] == "" for i in np.unique(label_id))):
            raise ValueError("layers use label ids that the vocabulary table does not define")
        names = pc.take(pa.array(vocab.labels), pa.array(label_id))
        if label_id.size and not pc.all(pc.equal(names, layers.column("label").combine_chunks())).as_py():
            raise ValueError("layers' labels disagree with the vocabulary table's label for the same id")

        heights = _np(images.column("height")).astype(np.int64)
        widths = _np(images.column("width")).astype(np.int64)
        lh, lw = _np(layers.column("height")).astype(np.int64), _np(layers.column("width")).astype(np.int64)
        if np.any(lh != heights[img]) or np.any(lw != widths[img]):
            raise ValueError("a layer's mask size differs from its image's size")
        layer_start = np.searchsorted(img, np.arange(len(image_ids) + 1), side="left").astype(np.int64)
        bbox = layers.column("bbox").combine_chunks()
        bbox = _np(bbox.flatten() if len(bbox) else pa.array([], pa.float64())).astype(np.float32).reshape(-1, 4)
        rle = layers.column("rle").combine_chunks().cast(pa.large_string())
        if rle.null_count:
            raise ValueError("a layer has no amodal RLE")
        ids = np.asarray(image_ids.to_pylist(), dtype=object)
        return cls(split=split, image_ids=ids, heights=heights, widths=widths,
                   captions=_pick_captions(captions, image_ids.to_pylist()), layer_start=layer_start,
                   label_id=label_id, is_stuff=_np(layers.column("is_stuff")).astype(bool),
                   area=_np(layers.column("area")).astype(np.int64), bbox=bbox, rle=rle, vocabulary=vocab,
                   insert_stuff=insert_stuff, min_target_area=min_target_area)

    # -- queries

    def valid_targets(self, insert_stuff: bool, min_target_area: int) -> np.ndarray:
        """Global layer indices t that are valid targets: k = layer_k[t] ≥ 1 layers before it, a thing (or stuff
        when `insert_stuff`), amodal area ≥ `min_target_area`."""
        ok = (self.layer_k >= 1) & (self.area >= min_target_area)
        if not insert_stuff:
            ok &= ~self.is_stuff
        return np.flatnonzero(ok)

    def __len__(self) -> int:
        return int(self.targets.size)

    @property
    def n_images(self) -> int:
        return int(self.image_ids.size)

    @property
    def n_layers(self) -> int:
        return int(self.label_id.size)

    def image_pos(self, image_id: str) -> int:
        return self._pos[image_id]

    def layer(self, image: int, k: int) -> int:
        """Global index of layer k (0 = back-most) of image position `image`."""
        lo, hi = self.layer_start[image], self.layer_start[image + 1]
        if not 0 <= k < hi - lo:
            raise IndexError(f"image {self.image_ids[image]} has {hi - lo} layers, no layer {k}")
        return int(lo + k)

    def label(self, t: int) -> str:
        return self.vocabulary.labels[self.label_id[t]]

    def rles(self, image: int) -> list[dict]:
        """The image's amodal RLE dicts back to front (for reference code and tests; the sampler never needs it)."""
        h, w = int(self.heights[image]), int(self.widths[image])
        lo, hi = self.layer_start[image], self.layer_start[image + 1]
        return [{"size": [h, w], "counts": self._rle[t].as_py()} for t in range(lo, hi)]


# ---------------------------------------------------------------------------------------------------------------
# The sampler.


class TrainingSampler:
    """Deterministic random access to training samples: `sample(i)` depends only on (seed, i)."""

    def __init__(self, index: LayerIndex, cfg: SampleConfig = SampleConfig(), seed: int = 0):
        self.index = index
        self.cfg = cfg
        self.seed = int(seed)
        if (cfg.insert_stuff, cfg.min_target_area) == (index.insert_stuff, index.min_target_area):
            self.targets = index.targets
        else:
            self.targets = index.valid_targets(cfg.insert_stuff, cfg.min_target_area)
        if self.targets.size == 0:
            raise ValueError(f"no valid targets in this index (split={index.split!r}, {cfg})")
        mix = np.asarray(cfg.guidance_mix, np.float64)
        self._mix_cdf = np.cumsum(mix / mix.sum())
        self._mix_cdf[-1] = 1.0
        # (C, n) float32 palette: gathering per channel gives the (3, R, R) layout directly.
        self._colours = np.ascontiguousarray((index.vocabulary.colours.astype(np.float32) / 255.0).T)

    @classmethod
    def from_lake(cls, lake: Path, name: str, version: str, cfg: SampleConfig = SampleConfig(),
                  seed: int = 0) -> TrainingSampler:
        index = LayerIndex.from_lake(lake, name, version, cfg.split, insert_stuff=cfg.insert_stuff,
                                     min_target_area=cfg.min_target_area)
        return cls(index, cfg, seed)

    def __len__(self) -> int:
        return int(self.targets.size)

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """For target layer `t` (global index): S_k as a label-id map (R, R) int32 painted from the image's layers
        0..k-1 (k = layer_k[t]), and the target mask A_k (R, R) bool, both on `resize_grid`."""
        ix, R = self.index, self.cfg.resolution
        img = int(ix.layer_image[t])
        lo = int(ix.layer_start[img])
        H, W = int(ix.heights[img]), int(ix.widths[img])
        k = t - lo
        offs = ix.rle_offsets[lo : t + 2]
        layer, s, e = foreground_runs(ix.rle_data[offs[0] : offs[-1]], offs - offs[0], H * W)
        grid = _grid(H, W, R)
        nx, ny, expand = grid.nx, grid.ny, grid.expand
        a, b = grid.count_before(s), grid.count_before(e)  # the run's span on the (column-major) grid
        hit = b > a
        layer, a, b = layer[hit], a[hit], b[hit]
        run_at = np.searchsorted(layer, np.arange(k + 2))  # runs of layer j are run_at[j]:run_at[j + 1]
        pix = _expand(a, b)
        pix_at = np.r_[0, np.cumsum(b - a)][run_at]
        ids = np.zeros(nx * ny, np.int32)  # column-major (nx, ny) grid of the distinct source pixels
        lids = ix.label_id[lo:t]
        for j in range(k):
            if pix_at[j + 1] > pix_at[j]:
                ids[pix[pix_at[j] : pix_at[j + 1]]] = lids[j]
        target = np.zeros(nx * ny, bool)
        target[pix[pix_at[k] : pix_at[k + 1]]] = True
        ids, target = ids.reshape(nx, ny).T, target.reshape(nx, ny).T
        if expand is not None:  # upsampling: repeat rows / columns
            ids, target = ids[expand], target[expand]
        return ids, target

    def _draw(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, int(i)])
        for _ in range(MAX_DRAWS):
            t = int(self.targets[rng.integers(self.targets.size)])
            ids, target = self.render(t)
            if target.any():
                break
        kind = GUIDANCE_KINDS[int(np.searchsorted(self._mix_cdf, rng.random(), side="right"))]
        g = guidance_from_mask(kind, target, rng)
        return {"t": t, "ids": ids, "target": target, "kind": kind, "g": g}

    def sample(self, i: int) -> dict:
        d = self._draw(i)
        ix, t = self.index, d["t"]
        img = int(ix.layer_image[t])
        # (3, R, R) float32 in [0, 1]; `take` is several times faster than fancy indexing here.
        layout_CHW = self._colours.take(np.ascontiguousarray(d["ids"]), axis=1)
        guided = apply_guidance(layout_CHW, d["g"], self.cfg.alpha, channel_axis=0)
        H, W = float(ix.heights[img]), float(ix.widths[img])
        x, y, w, h = (float(v) for v in ix.bbox[t])
        box = np.clip(np.array([x / W, y / H, (x + w) / W, (y + h) / H], np.float32), 0.0, 1.0)
        return {
            "layout": guided,
            "target": d["target"].astype(np.float32),
            "obj": ix.label(t),
            "context": ix.captions[img] or "",
            "guidance": d["kind"],
            "image_id": str(ix.image_ids[img]),
            "k": int(ix.layer_k[t]),
            "box": box,
        }

    def batch(self, indices: Sequence[int]) -> dict:
        items = [self.sample(i) for i in indices]
        if not items:
            raise ValueError("batch needs at least one index")
        out: dict = {}
        for key in items[0]:
            vals = [it[key] for it in items]
            out[key] = np.stack(vals) if isinstance(vals[0], np.ndarray) else vals
        return out
