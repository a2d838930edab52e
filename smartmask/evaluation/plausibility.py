"""Placement plausibility of a mask-free suggestion in the synthetic world, judged by the world's own support rules.

A mask-free suggestion has no ground truth to compare with, but the synthetic world says where each class may be
(`smartmask.synth.world.SUPPORT`: a person stands on grass or floor, a boat floats on water, a lamp stands on a
table, a bird flies in the sky, a painting hangs on a wall). `placement_check` asks whether a suggested mask obeys
that rule in the scene's layout, from the layout's visible labels (`label_map`). Two relations:

- "in" — classes whose every support is sky or wall (bird, cloud, painting, window): they are seen *against* their
  support. Plausible when at least half of the mask's pixels show a supporting label, or a class that is itself
  only in those supports (a bird in front of a cloud is still in the sky; a painting beside a window on the wall).
- "on" — every other class rests on its support at its bottom edge. For each column the mask occupies take its
  lowest mask pixel; the contacts are those in the footing band, at most max(reach, round(FOOTING × the mask's
  height)) rows above the mask's lowest row (a canopy, a tabletop between its legs or a chair's seat overhangs
  whatever is behind the thing: counting those columns judged real synthetic trees, tables and chairs
  implausible). A contact is supported when one of the `reach` pixels straight below it (rows row + 1 … row + reach
  inside the image, reach = max(2, round(2 % of H))) shows a supporting label: looking a few pixels down rather
  than at row + 1 only forgives a mask that stops a pixel short of its support, not a thing floating above it.
  (Every pixel below a column's lowest mask pixel is outside the mask, so "the first non-mask pixel" would always
  be row + 1.) Plausible when at least half of the judged contacts are supported.

  A contact on the image's last row has nothing visible below it (the object is cut by the bottom edge): it is
  'unknown' and left out of the share, so an object partly cut by the edge is judged by its other contacts. When
  every contact is unknown there is nothing to stand on in view; the object is then judged by overlap with its
  ground supports (at least half of its pixels on a supporting label: a person cut at the knees should be seen
  against grass or floor, not against the sky), and the verdict says so (relation "in", the reason names it).

Visible labels mean a footing hidden behind a nearer thing (a person's feet behind a car) counts as unsupported;
the 50 % rule tolerates partial occlusion. Pixels nothing is painted on support nothing. Checked on synthetic
worlds: every ground-truth thing placed in its layers-below layout is plausible (30 scenes, 160×120, seed 0: 185
of 185; 120 scenes, 256×192, seed 7: 740 of 740), and 17-19 % of the same masks moved up by a third of the image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from smartmask.inference.layout import SceneLayout
from smartmask.synth.world import SUPPORT

IN_SUPPORTS = frozenset({"sky", "wall"})  # a class supported only by these is judged "in" them, not "on"
FOOTING = 0.1  # the footing band: contacts within this share of the mask's height above its lowest row
PLAUSIBLE_SHARE = 0.5  # the least share of supported pixels / contacts for a plausible placement


@dataclass(frozen=True)
class PlacementVerdict:
    """`plausible`: support_share >= PLAUSIBLE_SHARE. `relation`: the test applied, "on" (contacts) or "in" (pixel
    overlap). `support_share`: the supported share of the contacts ("on") or of the mask's pixels ("in").
    `reason`: one line, what was counted."""

    plausible: bool
    relation: str
    support_share: float
    reason: str


def label_map(scene: SceneLayout) -> tuple[tuple[str, ...], np.ndarray]:
    """The visible label of every pixel: (labels, index_HW) where `labels` are the layout's distinct labels in
    order of first appearance (back to front) and index_HW int16 (H, W) holds, per pixel, the index into `labels`
    of the last region (front-most in painting order) covering it, -1 where no region does."""
    labels: list[str] = []
    index = np.full((scene.height, scene.width), -1, np.int16)
    for r in scene.regions:
        if r.label not in labels:
            labels.append(r.label)
        index[r.mask_HW] = labels.index(r.label)
    return tuple(labels), index


def _supported(index: np.ndarray, labels: tuple[str, ...], supports: Iterable[str]) -> np.ndarray:
    """bool, same shape as `index`: the pixel's visible label is one of `supports` (-1, nothing painted, is not)."""
    wanted = set(supports)
    ids = [i for i, lab in enumerate(labels) if lab in wanted]
    return np.isin(index, ids)


def _in(mask: np.ndarray, on_support: np.ndarray, obj: str, supports: tuple[str, ...], why: str) -> PlacementVerdict:
    """The "in" test: share of the mask's pixels whose visible label supports `obj`."""
    n = int(np.count_nonzero(mask))
    share = float(np.count_nonzero(on_support & mask) / n)
    return PlacementVerdict(share >= PLAUSIBLE_SHARE, "in", share,
                            f"{why}{share:.0%} of the {obj}'s {n} pixels on {'/'.join(supports)}")


def placement_check(mask_HW: np.ndarray, obj: str, scene: SceneLayout,
                    support: Mapping[str, tuple[str, ...]] = SUPPORT) -> PlacementVerdict | None:
    """Whether `mask_HW` (bool-like (H, W), the layout's size) is a plausible place for an `obj` in `scene`, by the
    rules of the module docstring. None when `obj` has no rule in `support` or the mask is empty (the caller counts
    empty masks on their own); ValueError when the mask's size is not the layout's."""
    mask = np.asarray(mask_HW, bool)
    H, W = scene.height, scene.width
    if mask.shape != (H, W):
        raise ValueError(f"mask is {mask.shape[0]}x{mask.shape[1]}, the layout {H}x{W}")
    supports = tuple(support.get(obj, ()))
    if not supports or not mask.any():
        return None
    labels, index = label_map(scene)
    on_support = _supported(index, labels, supports)
    if set(supports) <= IN_SUPPORTS:
        # Whatever is itself only in these supports counts as them: a bird in front of a cloud is in the sky.
        within = [c for c, sup in support.items() if sup and set(sup) <= set(supports)]
        return _in(mask, _supported(index, labels, supports + tuple(within)), obj, supports, "")
    cols = np.flatnonzero(mask.any(axis=0))
    # Lowest mask row of each occupied column: the last True when reading the column top to bottom.
    lowest = H - 1 - np.argmax(mask[::-1, cols], axis=0)
    rows = np.flatnonzero(mask.any(axis=1))
    reach = max(2, round(0.02 * H))
    # Only the footing rests on the support: a canopy, a tabletop between its legs or a chair's seat overhangs
    # whatever is behind the thing, and counting those columns failed real synthetic trees, tables and chairs.
    footing = lowest >= rows[-1] - max(reach, round(FOOTING * (rows[-1] - rows[0] + 1)))
    cols, lowest = cols[footing], lowest[footing]
    known = lowest < H - 1  # on the last row the support would be below the image: unknown
    if not known.any():
        return _in(mask, on_support, obj, supports, "cut by the bottom edge, judged by overlap: ")
    cols, lowest = cols[known], lowest[known]
    hit = np.zeros(len(cols), bool)
    for dy in range(1, reach + 1):
        below = lowest + dy
        inside = below < H
        hit[inside] |= on_support[below[inside], cols[inside]]
    share = float(hit.mean())
    skipped = int(np.count_nonzero(~known))
    note = f" ({skipped} at the bottom edge left out)" if skipped else ""
    return PlacementVerdict(share >= PLAUSIBLE_SHARE, "on", share,
                            f"{share:.0%} of {len(cols)} contact columns on {'/'.join(supports)} within {reach} px"
                            f"{note}")


def plausibility_rate(verdicts: Iterable[PlacementVerdict | None]) -> float | None:
    """Share of plausible verdicts among the non-None ones; None when there are none."""
    judged = [v for v in verdicts if v is not None]
    return sum(v.plausible for v in judged) / len(judged) if judged else None
