"""The model's R×R grid: how an (H, W) image, its masks and its layers land on the square the model sees.

Training (the sampler paints S_k from RLE strings) and inference (S_I from a segmenter's or the lake's masks, the
user's guidance) both go through `resize_grid`, so a layout is bit-identical at both times.

Resize: a plain (aspect-changing) nearest-neighbour resize of the whole image to R², not letterbox padding.
(1) Padding would need a colour for "outside the image", and black already means "nothing painted here", where
objects may be inserted; (2) normalised coordinates are then the same in the image and in the layout, so boxes
need no conversion and a predicted mask goes back to the image by a plain resize to (H, W); (3) every one of the
R² pixels carries image content. The price is a fixed anisotropic stretch, identical at training and inference.

Speed: no mask is decoded at full resolution. In COCO's column-major RLE a foreground run [s, e) covers exactly
the grid points [n(s), n(e)), where n(p) (grid points before flat index p) is two table lookups (`Grid`); many
RLE strings are parsed together with vectorised numpy (`parse_counts`). Measured: bench/bench_sampler.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


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
class Grid:
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
def grid_tables(H: int, W: int, R: int) -> Grid:
    return tables_for(H, W, *resize_grid(H, W, R))


def tables_for(H: int, W: int, ys: np.ndarray, xs: np.ndarray) -> Grid:
    """The `Grid` of any non-decreasing source rows `ys` and columns `xs` (the whole image's resize, or the focus
    window's: conditioning/focus.py)."""
    R_y, R_x = ys.size, xs.size
    uy, iy = np.unique(ys, return_inverse=True)
    ux, ix = np.unique(xs, return_inverse=True)
    col_read = np.zeros(W + 1, np.int64)
    col_read[ux] = 1
    col_base = np.searchsorted(ux, np.arange(W + 1)) * uy.size
    row_before = np.searchsorted(uy, np.arange(H + 1))
    expand = None if (uy.size == R_y and ux.size == R_x) else np.ix_(iy, ix)
    return Grid(H, int(ux.size), int(uy.size), col_base, col_read, row_before, expand)


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


def expand_runs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Concatenation of arange(a[j], b[j]) over j (all b > a)."""
    lengths = b - a
    cum = np.cumsum(lengths)
    return np.arange(int(cum[-1]) if cum.size else 0) + np.repeat(a - (cum - lengths), lengths)
