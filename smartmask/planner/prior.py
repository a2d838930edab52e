"""The prior planner: where each class goes, learned from a dataset version's train split. No model, a few ms a call.

    planner = PriorPlanner.from_lake(lake, "synth")          # or "synth@VERSION"; None: the only dataset / synth
    planner.propose(scene, "lamp", "a lamp on a table in a living room", n=4, seed=0)

What it learns, per class, from every layer k of the train images (S_k = the layers painted before it), all in
normalised image coordinates so datasets of any size mix:

- its boxes, each with the set of classes S_k held (candidates are drawn from the boxes of similar layouts);
- the labels visible in a thin band under the box's bottom edge (what it stands on) and inside the box (what it is
  seen against), as a ratio to the same box placed at random in the same layout. The ratio is what makes a label
  a support: a lamp's band shows "table" far more often than a random box's would, "sky" far less. Nothing is
  read from the synthetic world's rules, so the same statistics come out of any amodal dataset;
- depth order: its bottom edge relative to the lowest bottom edge of the things already painted (in a layered
  layout later layers are nearer, and nearer things stand lower in the picture);
- perspective: its height relative to the distance from its bottom edge up to the top of the region it stands on
  (the horizon for grass, the tabletop for a lamp).

`propose` draws candidates from the class's boxes (weighted by how alike their layouts' class sets are to the
scene's), jitters them with `seed`, scores each by the log of its support ratios plus the log densities of its
depth order and perspective, and ranks them by expected IoU under the scores (a box many good candidates agree
with ranks above a lone outlier of slightly higher score). A class never seen falls back to the pooled statistics
of all thing classes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from smartmask.inference.layout import SceneLayout
from smartmask.planner.base import BoxProposal, PlannerError, clip_box
from smartmask.planner.prior_fit import (  # noqa: F401  (re-exported: the planner's public statistics)
    ORDER_EDGES,
    SCALE_EDGES,
    ClassPrior,
    Density,
    PriorConfig,
    PriorStats,
    box_features,
    fit_prior,
    label_grid,
)
from smartmask.registry import NotFound, resolve_dataset

_CACHE: dict[tuple, PriorStats] = {}  # insertion-ordered: the oldest fit goes first when it is full
_CACHE_LOCK = threading.Lock()
CACHE_FITS = 8  # fits kept in a long-lived process (a server designing against many dataset versions)


def default_dataset(lake: Path) -> str:
    """The dataset a bare `prior` fits on: the lake's only dataset, or `synth` when there are several."""
    names = sorted(p.name.removeprefix("name=") for p in (lake / "datasets").glob("name=*") if p.is_dir())
    if not names:
        raise PlannerError(f"the prior planner needs a dataset; {lake} has none")
    if len(names) == 1 or "synth" in names:
        return names[0] if len(names) == 1 else "synth"
    raise PlannerError(f"{lake} holds several datasets ({', '.join(names)}): say which, prior:DATASET[@VERSION]")


class PriorPlanner:
    """The statistical planner over one dataset version (see the module docstring). Build it with `from_lake`."""

    def __init__(self, stats: PriorStats, config: PriorConfig = PriorConfig()):
        self.stats = stats
        self.config = config
        self.id = f"prior:{stats.dataset}@{stats.version[:8]}"

    @classmethod
    def from_lake(cls, lake: Path, ref: str | None = None, config: PriorConfig = PriorConfig()) -> PriorPlanner:
        """Fitted on `ref` (`DATASET[@VERSION]`; None: the newest version of the lake's only dataset, or of `synth`
        when there are several). The fit is cached in-process per (lake, dataset, version, config)."""
        lake = Path(lake)
        try:
            name, version = resolve_dataset(lake, ref or default_dataset(lake))
        except NotFound as e:
            raise PlannerError(str(e)) from None
        key = (str(lake.resolve()), name, version, config.grid, config.band, config.null_boxes,
               config.max_per_class)
        with _CACHE_LOCK:  # one fit per key, also when threads ask at once
            stats = _CACHE.get(key)
            if stats is None:
                try:
                    stats = fit_prior(lake, name, version, grid=config.grid, band=config.band,
                                      null_boxes=config.null_boxes, max_per_class=config.max_per_class)
                except ValueError as e:
                    raise PlannerError(str(e)) from None
                _CACHE[key] = stats
                while len(_CACHE) > CACHE_FITS:
                    _CACHE.pop(next(iter(_CACHE)))
        return cls(stats, config)

    def class_prior(self, obj: str) -> ClassPrior:
        """The statistics `propose` uses for `obj`: its own, or the pooled ones of all things when unseen."""
        return self.stats.classes.get(obj.strip().lower()) or self.stats.agnostic

    def propose(self, scene: SceneLayout, obj: str, context: str, *, n: int = 4, seed: int = 0
                ) -> list[BoxProposal]:
        """Up to `n` boxes for `obj` in `scene`'s pixels, best first. `context` is not used: the layout already
        says which scene it is, and the class statistics carry no text."""
        if n < 1:
            raise PlannerError(f"n must be >= 1, got {n}")
        cfg, st = self.config, self.stats
        prior = self.class_prior(obj)
        H, W = scene.height, scene.width
        grid_hw, present, bottoms = label_grid(scene, st.label_index, cfg.grid)
        rng = np.random.default_rng(seed)
        a, b = prior.present_NL, present[None, :]
        union = np.count_nonzero(a | b, axis=1)
        jacc = np.where(union > 0, np.count_nonzero(a & b, axis=1) / np.maximum(union, 1), 1.0)
        weight_N = np.exp(cfg.similarity * (jacc - jacc.max()))
        ratio_2L = prior.ratios(weight_N)
        boxes_N4 = self._candidates(prior, weight_N, ratio_2L, grid_hw, rng)
        under_NL, inside_NL, top_N = box_features(grid_hw, boxes_N4, cfg.band, st.n_labels)
        score_N = self._score(prior, ratio_2L, boxes_N4, under_NL, inside_NL, top_N, bottoms)
        # Bet on the box the good candidates agree on (expected IoU), but only among the good ones: a box between
        # two tables overlaps many lamps on either and stands on neither.
        rank_N = _expected_iou(boxes_N4, score_N / cfg.temperature)
        rank_N = np.where(score_N >= score_N.max() - cfg.margin, rank_N, rank_N - 1.0)
        out: list[BoxProposal] = []
        kept: list[np.ndarray] = []
        for i in np.argsort(-rank_N, kind="stable"):
            b = boxes_N4[i]
            px = clip_box((b[0] * W, b[1] * H, b[2] * W, b[3] * H), W, H)
            # De-duplicated as the caller sees them, in pixels: on a tiny scene distinct candidates clip alike
            if any(_iou(np.asarray(px), k) > cfg.dedupe_iou for k in kept):
                continue
            kept.append(np.asarray(px))
            out.append(BoxProposal(box=px, score=float(rank_N[i]), planner=self.id))
            if len(out) == n:
                break
        return out

    # -- internals

    def _candidates(self, prior: ClassPrior, weight_N: np.ndarray, ratio_2L: np.ndarray, grid_hw: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
        """(N, 4) normalised candidate boxes, each a training box drawn by layout similarity (its size, and for
        half of them its position), jittered and kept inside. The other half are anchored on this layout: their
        bottom edge on a cell of a supporting label, or their centre on a cell of a label the class is seen
        against, cells drawn by support ratio (a lamp's training positions rarely fall on this scene's table)."""
        cfg = self.config
        n = cfg.candidates
        pick = rng.choice(len(weight_N), size=n, p=weight_N / weight_N.sum())
        boxes = prior.boxes_N4[pick].astype(np.float64)
        size = (boxes[:, 2:] - boxes[:, :2]) * np.exp(rng.uniform(-2, 2, (n, 1)) * cfg.jitter)
        centre = (boxes[:, 2:] + boxes[:, :2]) / 2 + rng.uniform(-1, 1, (n, 2)) * cfg.jitter
        gh, gw = grid_hw.shape
        for j, ratio_L in enumerate(ratio_2L):
            rows = np.arange(n // 2 + j, n, 2)
            weight = ratio_L[grid_hw].ravel()
            cell = rng.choice(weight.size, size=rows.size, p=weight / weight.sum())
            cy, cx = (cell // gw + rng.random(rows.size)) / gh, (cell % gw + rng.random(rows.size)) / gw
            centre[rows, 0] = cx
            # Under-anchored: the bottom edge on the cell's top; inside-anchored: the centre on the cell.
            centre[rows, 1] = cy - size[rows, 1] / 2 if j == 0 else cy
        size = np.clip(size, 1e-3, 1.0)
        centre = np.clip(centre, size / 2, 1 - size / 2)  # slide back inside rather than clip (keeps the size)
        return np.concatenate([centre - size / 2, centre + size / 2], axis=1)

    def _score(self, prior: ClassPrior, ratio_2L, boxes_N4, under_NL, inside_NL, top_N, bottoms) -> np.ndarray:
        eps = 0.05  # a floor under the ratios: one unsupported candidate is unlikely, not impossible
        on_edge = under_NL.sum(axis=1) == 0  # at the image's bottom edge there is no band: judge by overlap
        under = np.where(on_edge[:, None], inside_NL, under_NL)
        support = np.log(eps + under @ ratio_2L[0]) + np.log(eps + inside_NL @ ratio_2L[1])
        score = self.config.support_weight * support
        y1, h = boxes_N4[:, 3], boxes_N4[:, 3] - boxes_N4[:, 1]
        if bottoms.size:
            score += prior.order.log_density(y1 - bottoms.max())
        reach = y1 - top_N
        ok = reach > 1e-3
        score += np.where(ok, prior.scale.log_density(np.log(h / np.where(ok, reach, 1.0))), prior.scale.floor)
        return score


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _expected_iou(boxes_N4: np.ndarray, logits_N: np.ndarray) -> np.ndarray:
    """Each candidate's expected IoU with the others, weighted by softmax(logits): the box to bet on when the
    scores are a belief over where the object is, not a verdict."""
    p = np.exp(logits_N - logits_N.max())
    p /= p.sum()
    lo = np.maximum(boxes_N4[:, None, :2], boxes_N4[None, :, :2])
    hi = np.minimum(boxes_N4[:, None, 2:], boxes_N4[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = np.prod(boxes_N4[:, 2:] - boxes_N4[:, :2], axis=1)
    iou_NN = inter / (area[:, None] + area[None, :] - inter)
    return iou_NN @ p
