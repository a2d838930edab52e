"""The prior planner's statistics and their fit over a dataset version's train split (see
`smartmask.planner.prior` for what they mean and how `propose` scores with them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from smartmask import masks
from smartmask.inference.layout import SceneLayout
from smartmask.lake.paths import dataset_dir


@dataclass(frozen=True, kw_only=True, slots=True)
class PriorConfig:
    grid: int = 96  # the label grid's longest side: features are read on at most grid x grid cells
    band: float = 0.03  # the footing band's height, as a share of the image height (at least one grid row)
    null_boxes: int = 4  # random placements per training box, the denominator of the support ratios
    max_per_class: int = 2000  # training boxes per class (a seeded subsample beyond that)
    candidates: int = 128  # boxes scored per `propose`
    jitter: float = 0.06  # candidate jitter: position by this share of the image, size by twice this share
    similarity: float = 4.0  # candidate weight exp(similarity * Jaccard(class sets)) when drawing
    dedupe_iou: float = 0.6  # a proposal overlapping a better one by more than this is dropped
    temperature: float = 1.0  # softmax temperature turning scores into the weights of the expected IoU
    support_weight: float = 4.0  # the support term's weight against the order and perspective log densities
    margin: float = 1.5  # only candidates scoring within this of the best compete on expected IoU

    def __post_init__(self) -> None:
        if min(self.grid, self.null_boxes, self.max_per_class, self.candidates) < 1:
            raise ValueError("grid, null_boxes, max_per_class and candidates must be >= 1")
        if not (0 < self.band < 1 and self.temperature > 0 and 0 < self.dedupe_iou <= 1):
            raise ValueError(f"band must be in (0, 1), temperature > 0, dedupe_iou in (0, 1]: {self}")


# ---------------------------------------------------------------------------------------------------------------
# The statistics. Labels are ids into `PriorStats.labels`: 0 nothing painted, 1 a label the fit never saw.

NOTHING, OTHER = 0, 1


@dataclass(frozen=True, eq=False)
class Density:
    """A smoothed histogram density over `edges` (values outside fall in the end bins); `floor` is the log
    density used when the feature is undefined for a box (e.g. nothing to stand on in its columns)."""

    edges: np.ndarray
    log_p: np.ndarray
    floor: float

    @classmethod
    def fit(cls, values: np.ndarray, edges: np.ndarray, undefined: int = 0, base: Density | None = None,
            pseudo: float = 5.0) -> Density:
        """`undefined`: how many samples had no value. `base`: a density whose shape a sparse class borrows
        (`pseudo` samples' worth), so ten persons' boxes do not make every other bottom edge impossible."""
        counts = np.histogram(np.clip(values, edges[0], edges[-1]), edges)[0].astype(np.float64)
        prior = np.exp(base.log_p) * np.diff(edges) if base is not None else np.full(len(counts), 1 / len(counts))
        counts += pseudo * prior / prior.sum() + 1e-3
        total = counts.sum() + undefined + 0.5
        log_p = np.log(counts / total / np.diff(edges))
        return cls(edges, log_p, float(np.log((undefined + 0.5) / total)))

    def log_density(self, x: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(self.edges, x, side="right") - 1, 0, len(self.log_p) - 1)
        return self.log_p[i]


ORDER_EDGES = np.linspace(-1.0, 1.0, 49)  # bottom edge minus the lowest painted thing's, image heights
SCALE_EDGES = np.linspace(-4.0, 3.0, 57)  # log(box height / distance from the bottom edge up to the support's top)


@dataclass(frozen=True, eq=False)
class ClassPrior:
    """One class: its training boxes (n, 4) normalised x0 y0 x1 y1 with the class sets of their layouts (n, L),
    the label shares (n, 4, L) under and inside each box and under and inside the same box placed at random, and
    the order and perspective densities."""

    boxes_N4: np.ndarray
    present_NL: np.ndarray
    shares_N4L: np.ndarray
    order: Density
    scale: Density

    @property
    def count(self) -> int:
        return len(self.boxes_N4)

    def ratios(self, weight_N: np.ndarray) -> np.ndarray:
        """(2, L) support ratios under and inside the box, over the training boxes weighted by `weight_N`: how
        much more often a label is there than at random placements in the same layouts. Weighting by layout
        similarity makes them conditional: among indoor scenes, a random box's footing is on the floor half the
        time, so the floor's ratio for a person is higher there than pooled with outdoor scenes."""
        mean_4L = np.tensordot(weight_N / weight_N.sum(), self.shares_N4L, axes=1)
        a = 0.01  # keeps a label never seen under the class finite
        return (mean_4L[:2] + a) / (mean_4L[2:] + a)


@dataclass(frozen=True, eq=False)
class PriorStats:
    """Everything fitted on one dataset version: `labels` (ids 0 nothing, 1 other, then the dataset's), one
    `ClassPrior` per class seen in the train split, and `agnostic`, pooled over every thing class."""

    dataset: str
    version: str
    labels: tuple[str, ...]
    classes: dict[str, ClassPrior]
    agnostic: ClassPrior

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    @property
    def label_index(self) -> dict[str, int]:
        return {lab: i for i, lab in enumerate(self.labels) if i > OTHER}


def _grid_rc(H: int, W: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """The source rows and columns a grid of at most `grid` cells a side samples (nearest, cell centres)."""
    gh, gw = min(H, grid), min(W, grid)
    return ((np.arange(gh) + 0.5) * H / gh).astype(np.intp), ((np.arange(gw) + 0.5) * W / gw).astype(np.intp)


def label_grid(scene: SceneLayout, label_index: dict[str, int], grid: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scene's visible labels on the grid (gh, gw) int16, the label ids present (L,) bool, and the bottom
    edges (normalised, exclusive) of its things."""
    rows, cols = _grid_rc(scene.height, scene.width, grid)
    grid_hw = np.zeros((len(rows), len(cols)), np.int16)
    present = np.zeros(max(label_index.values(), default=OTHER) + 1, bool)
    bottoms = []
    for r in scene.regions:
        lid = label_index.get(r.label, OTHER)
        present[lid] = True
        grid_hw[r.mask_HW[np.ix_(rows, cols)]] = lid
        if not r.is_stuff:
            on = np.flatnonzero(r.mask_HW.any(axis=1))
            if on.size:
                bottoms.append((on[-1] + 1) / scene.height)
    return grid_hw, present, np.asarray(bottoms, np.float64)


def box_features(grid_hw: np.ndarray, boxes_N4: np.ndarray, band: float, n_labels: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each normalised box: label shares (N, L) in the footing band under it (all zero when the box reaches
    the bottom edge) and inside it, and the normalised top of its footing label in its central column (N,).

    The footing band is the `band` x H rows under the box's central 70 % of columns (a thing stands on its middle:
    legs, wheels, a base, not its bounding corners); the footing label is the band's majority, or at the bottom
    edge that of the box's own last rows, never "nothing". A few boxes (fitting: one box and its random
    placements per layer) are counted on slices, many (proposing) on integral images: the same counts."""
    gh, gw = grid_hw.shape
    x0, y0, x1, y1 = np.asarray(boxes_N4, np.float64).T
    c0 = np.clip(np.floor(x0 * gw), 0, gw - 1).astype(np.intp)
    c1 = np.clip(np.ceil(x1 * gw), c0 + 1, gw).astype(np.intp)
    r0 = np.clip(np.floor(y0 * gh), 0, gh - 1).astype(np.intp)
    r1 = np.clip(np.ceil(y1 * gh), r0 + 1, gh).astype(np.intp)
    inset = ((c1 - c0) * 0.15).astype(np.intp)
    f0, f1 = c0 + inset, np.maximum(c1 - inset, c0 + inset + 1)
    bh = max(1, round(band * gh))
    b1 = np.minimum(r1 + bh, gh)
    s0 = np.where(b1 > r1, r1, np.maximum(r1 - bh, 0))  # the rows the footing label is read from
    s1 = np.where(b1 > r1, b1, r1)
    n = len(x0)
    if n <= 8:
        def counts(ra, rb, ca, cb):
            return np.stack([np.bincount(grid_hw[ra[i]:rb[i], ca[i]:cb[i]].ravel(), minlength=n_labels)
                             for i in range(n)]).T
        labels = np.arange(n_labels)
        tops_UW = None
    else:
        labels = np.unique(grid_hw)
        onehot = grid_hw[None] == labels[:, None, None]
        integral = np.zeros((len(labels), gh + 1, gw + 1), np.int32)
        integral[:, 1:, 1:] = onehot.cumsum(1, dtype=np.int32).cumsum(2, dtype=np.int32)
        tops_UW = np.where(onehot.any(axis=1), onehot.argmax(axis=1), gh)  # each label's top row per column

        def counts(ra, rb, ca, cb):
            return integral[:, rb, cb] - integral[:, ra, cb] - integral[:, rb, ca] + integral[:, ra, ca]

    inside_UN, under_UN = counts(r0, r1, c0, c1), counts(r1, b1, f0, f1)
    foot_UN = np.where((labels == NOTHING)[:, None], -1, counts(s0, s1, f0, f1))
    foot = foot_UN.argmax(0)
    mid = (f0 + f1) // 2
    if tops_UW is None:
        col = grid_hw[:, mid] == labels[foot][None, :]
        top_row = np.where(col.any(0), col.argmax(0), gh)
    else:
        top_row = tops_UW[foot, mid]
    inside = np.zeros((n, n_labels))
    under = np.zeros_like(inside)
    inside[:, labels] = (inside_UN / np.maximum(inside_UN.sum(0), 1)).T
    under[:, labels] = (under_UN / np.maximum(under_UN.sum(0), 1)).T
    return under, inside, top_row / gh


def fit_prior(lake: Path, dataset: str, version: str, *, grid: int, band: float, null_boxes: int,
              max_per_class: int, seed: int = 0) -> PriorStats:
    """The statistics of the module docstring over the train split of `dataset@version`: every layer k's box in
    its S_k (layers 0..k-1) on the label grid; a class with more than `max_per_class` layers keeps a seeded
    subsample. Only the images holding a kept layer are decoded, each once, layers painted back to front."""
    d = dataset_dir(lake, dataset, version)
    images = pq.read_table(d / "images", columns=["image_id", "split", "height", "width"]).to_pylist()
    size = {r["image_id"]: (r["height"], r["width"]) for r in images if r["split"] == "train"}
    if not size:  # (and an empty "in" filter is an Arrow type error, not an empty table)
        raise ValueError(f"dataset {dataset}@{version} has no train images to fit the prior planner on")
    t = pq.read_table(d / "layers", columns=["image_id", "layer", "label", "is_stuff", "bbox", "rle"],
                      filters=[("image_id", "in", list(size))])
    rows = sorted(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True), key=lambda r: r[:2])
    labels = ("", "<other>", *sorted({r[2] for r in rows}))
    index = {lab: i for i, lab in enumerate(labels) if i > OTHER}
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_class.setdefault(r[2], []).append(i)
    keep = set()
    for label in sorted(by_class):
        idx = by_class[label]
        keep.update(idx if len(idx) <= max_per_class else rng.choice(idx, max_per_class, replace=False).tolist())
    L = len(labels)
    recs: dict[str, list] = {}
    start = 0
    while start < len(rows):  # one image at a time: its layers are contiguous after the sort
        image_id = rows[start][0]
        end = start
        while end < len(rows) and rows[end][0] == image_id:
            end += 1
        last = max((i for i in range(start, end) if i in keep), default=None)
        if last is not None:
            H, W = size[image_id]
            rr, cc = _grid_rc(H, W, grid)
            grid_hw = np.zeros((len(rr), len(cc)), np.int16)
            present = np.zeros(L, bool)
            bottoms: list[float] = []
            for i in range(start, last + 1):
                _, _, label, stuff, (x, y, w, h), rle = rows[i]
                box = np.array([[x / W, y / H, (x + w) / W, (y + h) / H]])
                if i in keep and w > 0 and h > 0:
                    null = rng.uniform(0, 1, (null_boxes, 2)) * (1 - (box[:, 2:] - box[:, :2]))
                    cand = np.concatenate([box, np.concatenate([null, null + box[:, 2:] - box[:, :2]], 1)])
                    under, inside, top = box_features(grid_hw, cand, band, L)
                    on_edge = under.sum(1) == 0
                    under = np.where(on_edge[:, None], inside, under)
                    order = box[0, 3] - max(bottoms) if bottoms else np.nan
                    reach = box[0, 3] - top[0]
                    scale = np.log(box[0, 3] - box[0, 1]) - np.log(reach) if reach > 1e-3 else np.nan
                    recs.setdefault(label, []).append((box[0], present.copy(), under[0], inside[0],
                                                       under[1:].mean(0), inside[1:].mean(0), order, scale,
                                                       stuff))
                m = masks.decode({"size": [H, W], "counts": rle})[np.ix_(rr, cc)].astype(bool)
                grid_hw[m] = index[label]
                present[index[label]] = True
                if not stuff:
                    bottoms.append((y + h) / H)
        start = end
    if not recs:
        raise ValueError(f"dataset {dataset}@{version} has no train layers to fit the prior on")
    things = [r for label in sorted(recs) for r in recs[label] if not r[8]]
    agnostic = _class_prior(things or [r for v in recs.values() for r in v], None)
    classes = {label: _class_prior(recs[label], agnostic) for label in sorted(recs)}
    return PriorStats(dataset, version, labels, classes, agnostic)


def _class_prior(recs: list, base: ClassPrior | None) -> ClassPrior:
    boxes, present, under, inside, under0, inside0, order, scale, _ = (np.asarray(v) for v in zip(*recs, strict=True))
    shares = np.stack([under, inside, under0, inside0], axis=1).astype(np.float32)
    order, scale = order.astype(np.float64), scale.astype(np.float64)
    fin_o, fin_s = np.isfinite(order), np.isfinite(scale)
    return ClassPrior(boxes_N4=boxes.astype(np.float32), present_NL=present.astype(bool),
                      shares_N4L=shares,
                      order=Density.fit(order[fin_o], ORDER_EDGES, 0, base and base.order),
                      scale=Density.fit(scale[fin_s], SCALE_EDGES, int((~fin_s).sum()), base and base.scale))
