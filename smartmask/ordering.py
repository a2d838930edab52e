"""Layer order: back-most first, from the source where it has one, else from occlusion evidence.

The output is a permutation of region indices, back to front (layer 0 = back-most), which is the order in
which `f_layer` paints them (paper Eq. 1: later layers over earlier ones).

Evidence rule: in the overlap of two amodal masks, the region whose *visible* mask covers more of the
overlap is in front. Pairs are then ordered by a topological sort; a cycle (contradictory evidence or
contradictory annotations) is broken by dropping the weakest remaining edges of one node, chosen
deterministically, and counted per image so a dataset card can report it.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from smartmask import masks

_SOURCE_WEIGHT = 1e12  # source annotations outrank any pixel evidence when a cycle must be broken


@dataclass(frozen=True, slots=True)
class Order:
    back_to_front: list[int]  # region indices, layer 0 first
    provenance: list[str]  # per region index: "source:…", "inferred:occlusion" or "unconstrained"
    pairs: int  # ordered pairs the sort had to respect
    cycles_broken: int


def _bbox_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def occlusion_edges(amodal: Sequence[dict], visible: Sequence[dict], boxes: np.ndarray, skip: set[tuple[int, int]],
                    min_pixels: int) -> dict[tuple[int, int], float]:
    """(front, back) → evidence in pixels, for every overlapping pair not in `skip`. All in RLE space."""
    edges: dict[tuple[int, int], float] = {}
    n = len(amodal)
    for i in range(n):
        for j in range(i + 1, n):
            if (i, j) in skip or (j, i) in skip or not _bbox_overlap(boxes[i], boxes[j]):
                continue
            overlap = masks.merge([amodal[i], amodal[j]], intersect=True)
            if masks.area([overlap])[0] < min_pixels:
                continue
            ei, ej = masks.area([masks.merge([visible[i], overlap], intersect=True),
                                 masks.merge([visible[j], overlap], intersect=True)])
            if ei - ej >= min_pixels:
                edges[(i, j)] = float(ei - ej)
            elif ej - ei >= min_pixels:
                edges[(j, i)] = float(ej - ei)
    return edges


def topo_back_to_front(n: int, edges: dict[tuple[int, int], float], tie_key: Sequence[tuple]) -> tuple[list[int], int]:
    """Kahn's sort emitting backs before fronts; `tie_key[i]` orders nodes with no constraint between them."""
    behind: list[dict[int, float]] = [{} for _ in range(n)]  # behind[f] = {b: weight}: b must come before f
    for (f, b), w in edges.items():
        behind[f][b] = max(w, behind[f].get(b, 0.0))
    fronts: list[list[int]] = [[] for _ in range(n)]
    for f in range(n):
        for b in behind[f]:
            fronts[b].append(f)
    ready = [(tie_key[i], i) for i in range(n) if not behind[i]]
    heapq.heapify(ready)
    placed = [False] * n
    out: list[int] = []
    cycles = 0
    while len(out) < n:
        if not ready:
            # A cycle: release the node whose remaining constraints weigh least (source edges weigh most).
            cycles += 1
            cand = min((i for i in range(n) if not placed[i]), key=lambda i: (sum(behind[i].values()), tie_key[i]))
            behind[cand].clear()
            heapq.heappush(ready, (tie_key[cand], cand))
        _, i = heapq.heappop(ready)
        if placed[i]:
            continue
        placed[i] = True
        out.append(i)
        for f in fronts[i]:
            if not placed[f] and i in behind[f]:
                del behind[f][i]
                if not behind[f]:
                    heapq.heappush(ready, (tie_key[f], f))
    return out, cycles


def order_layers(amodal: Sequence[dict], visible: Sequence[dict], is_stuff: Sequence[bool], areas: Sequence[int],
                 ranks: Sequence[int | None], source_pairs: Sequence[tuple[int, int, str]], rank_kind: str,
                 min_evidence_pixels: int = 4) -> Order:
    n = len(amodal)
    # Unconstrained ties: stuff (sky, floor) behind things, then larger regions behind smaller ones.
    tie_key = [(not is_stuff[i], -int(areas[i]), i) for i in range(n)]
    if n and all(isinstance(r, int) for r in ranks) and len(set(ranks)) == n:
        perm = sorted(range(n), key=lambda i: -ranks[i])  # rank 1 = front-most → painted last
        return Order(perm, [rank_kind] * n, n * (n - 1) // 2, 0)
    edges: dict[tuple[int, int], float] = {}
    prov = ["unconstrained"] * n
    ranked = [i for i in range(n) if isinstance(ranks[i], int)]
    for i in ranked:
        for j in ranked:
            if ranks[i] < ranks[j]:
                edges[(i, j)] = _SOURCE_WEIGHT
                prov[i] = prov[j] = rank_kind
    for f, b, kind in source_pairs:
        if f < n and b < n:
            edges[(f, b)] = _SOURCE_WEIGHT
            for k in (f, b):
                if prov[k] == "unconstrained":
                    prov[k] = kind
    boxes = masks.bbox(list(amodal))
    evidence = occlusion_edges(amodal, visible, boxes, set(edges), min_evidence_pixels)
    for (f, b), w in evidence.items():
        edges[(f, b)] = w
        for k in (f, b):
            if prov[k] == "unconstrained":
                prov[k] = "inferred:occlusion"
    perm, cycles = topo_back_to_front(n, edges, tie_key)
    return Order(perm, prov, len(edges), cycles)
