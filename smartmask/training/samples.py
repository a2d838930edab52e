"""Training samples of the paper's Eq. 1 + Eq. 5, drawn from a dataset version in the lake.

One sample: pick a target uniformly among the valid (image, k) pairs of the split (layer k, 0-based, is the next
object; layers 0..k-1 are already painted), build S_k = f_layer(A_0..A_{k-1}) coloured by the dataset's vocabulary,
derive a guidance map G from A_k (kind drawn from `guidance_mix`) and return S~_k = S_k ⊙ (1 − αG) + αG with the
target mask A_k, its label (T_obj) and the image caption (T_context).

Layouts and targets are painted on the model's R×R grid without decoding masks (`smartmask.conditioning.grid`,
which explains the resize); inference paints S_I on the same grid. Measured: bench/bench_sampler.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from smartmask.boxes import xywh_to_xyxy
from smartmask.conditioning.focus import Window, box_on_window, box_window, full_window, window_samples
from smartmask.conditioning.grid import expand_runs, foreground_runs, grid_tables, tables_for
from smartmask.conditioning.guidance import ALPHA, GUIDANCE_KINDS, apply_guidance, guidance_from_mask
from smartmask.conditioning.vocabulary import Vocabulary
from smartmask.lake.paths import dataset_dir

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
    # Targets smaller than this (amodal pixels) are always box-guided: with the focus view the box's window gives
    # them the whole grid, while without a box they are a cell or two and teach the model to place nothing.
    box_only_below: int = 0
    split: str = "train"  # the split `TrainingSampler.from_lake` reads
    # The object-centred view (conditioning/focus.py): a box-guided sample's layout is the window around the box
    # stacked on the global one (6 channels) and its target is drawn in the window. The model must match.
    focus_view: bool = False

    def __post_init__(self) -> None:
        if self.resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {self.resolution}")
        mix = tuple(self.guidance_mix)
        if len(mix) != len(GUIDANCE_KINDS) or any(p < 0 or not math.isfinite(p) for p in mix) or sum(mix) <= 0:
            raise ValueError(f"guidance_mix needs {len(GUIDANCE_KINDS)} non-negative weights, got {mix}")

    @classmethod
    def for_tests(cls) -> SampleConfig:
        """Test-size settings for a tiny-preset model (the focus view on, as the preset has it; not the `tiny`
        preset itself: that is `smartmask.presets.tiny`)."""
        return cls(resolution=32, focus_view=True)


# ---------------------------------------------------------------------------------------------------------------
# The index.

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
                 area: np.ndarray, bbox: np.ndarray, rle: pa.LargeStringArray, vocabulary: Vocabulary,
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

        vocab = Vocabulary.from_table(vocabulary)
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
        self._runs: tuple | None = None  # (t, layer, start, end) of the last target's parsed RLE runs

    @classmethod
    def from_lake(cls, lake: Path, name: str, version: str, cfg: SampleConfig = SampleConfig(),
                  seed: int = 0) -> TrainingSampler:
        index = LayerIndex.from_lake(lake, name, version, cfg.split, insert_stuff=cfg.insert_stuff,
                                     min_target_area=cfg.min_target_area)
        return cls(index, cfg, seed)

    def __len__(self) -> int:
        return int(self.targets.size)

    def render(self, t: int, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For target layer `t` (global index): S_k as a label-id map (R, R) int32 painted from the image's layers
        0..k-1 (k = layer_k[t]), and the target mask A_k (R, R) bool, both on `resize_grid` or, given a focus
        `window` (image pixels), on the window's grid (cells outside the image: nothing painted, not target)."""
        ix, R = self.index, self.cfg.resolution
        img = int(ix.layer_image[t])
        lo = int(ix.layer_start[img])
        H, W = int(ix.heights[img]), int(ix.widths[img])
        k = t - lo
        runs = self._runs  # read once: safe if two threads share the sampler
        if runs is None or runs[0] != t:  # the focus view paints the same layers again: parse them once
            offs = ix.rle_offsets[lo : t + 2]
            runs = (t, *foreground_runs(ix.rle_data[offs[0] : offs[-1]], offs - offs[0], H * W))
            self._runs = runs
        _, layer, s, e = runs
        inside = None
        if window is None:
            grid = grid_tables(H, W, R)
        else:
            ys, xs, in_y, in_x = window_samples(H, W, R, window)
            grid = tables_for(H, W, ys, xs)
            inside = in_y[:, None] & in_x[None, :]
        nx, ny, expand = grid.nx, grid.ny, grid.expand
        a, b = grid.count_before(s), grid.count_before(e)  # the run's span on the (column-major) grid
        hit = b > a
        layer, a, b = layer[hit], a[hit], b[hit]
        run_at = np.searchsorted(layer, np.arange(k + 2))  # runs of layer j are run_at[j]:run_at[j + 1]
        pix = expand_runs(a, b)
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
        if inside is not None and not inside.all():
            ids, target = np.where(inside, ids, 0), target & inside
        return ids, target

    def _draw(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, int(i)])
        for _ in range(MAX_DRAWS):
            t = int(self.targets[rng.integers(self.targets.size)])
            ids, target = self.render(t)
            if target.any():
                break
        kind = GUIDANCE_KINDS[int(np.searchsorted(self._mix_cdf, rng.random(), side="right"))]
        if self.index.area[t] < self.cfg.box_only_below:
            kind = "box"
        g = guidance_from_mask(kind, target, rng)
        d = {"t": t, "ids": ids, "target": target, "kind": kind, "g": g}
        if self.cfg.focus_view:
            ix = self.index
            img = int(ix.layer_image[t])
            H, W = int(ix.heights[img]), int(ix.widths[img])
            if kind == "box":
                box = xywh_to_xyxy(*(float(v) for v in ix.bbox[t]))
                window = box_window(*box)
                f_ids, f_target = self.render(t, window)
                # The exact box on the window's grid, as `suggest` draws a user's box there.
                d.update(window=window, f_ids=f_ids, f_target=f_target, f_g=box_on_window(box, window,
                                                                                           self.cfg.resolution))
            else:  # no box: the window is the image, the focus view the global one
                d.update(window=full_window(H, W), f_ids=ids, f_target=target, f_g=g)
        return d

    def sample(self, i: int) -> dict:
        d = self._draw(i)
        ix, t = self.index, d["t"]
        img = int(ix.layer_image[t])
        # (3, R, R) float32 in [0, 1]; `take` is several times faster than fancy indexing here.
        layout_CHW = self._colours.take(np.ascontiguousarray(d["ids"]), axis=1)
        guided = apply_guidance(layout_CHW, d["g"], self.cfg.alpha, channel_axis=0)
        H, W = float(ix.heights[img]), float(ix.widths[img])
        x0, y0, x1, y1 = xywh_to_xyxy(*(float(v) for v in ix.bbox[t]))  # the lake's bbox is COCO xywh
        box = np.clip(np.array([x0 / W, y0 / H, x1 / W, y1 / H], np.float32), 0.0, 1.0)  # xyxy, normalised
        extra = {}
        target = d["target"]
        if self.cfg.focus_view:  # focus view first, then the global one; the target is the window's
            if d["f_ids"] is d["ids"]:  # no box: the focus view is the global one
                focus = guided
            else:
                focus = apply_guidance(self._colours.take(np.ascontiguousarray(d["f_ids"]), axis=1), d["f_g"],
                                       self.cfg.alpha, channel_axis=0)
            guided = np.concatenate([focus, guided])
            wx0, wy0, wx1, wy1 = d["window"]
            extra = {"window": np.array([wx0 / W, wy0 / H, wx1 / W, wy1 / H], np.float32),
                     "target_global": target.astype(np.float32)}
            target = d["f_target"]
        return {
            "layout": guided,
            "target": target.astype(np.float32),
            **extra,
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
