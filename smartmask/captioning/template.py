"""The offline `template` captioner: a caption from an image's layers, their labels and spatial relations.

    "a lamp on a table, a woman in front of a sofa, two chairs and a plant, in a scene with a wall and a floor"

It reads only what the lake already holds per layer (label, stuff flag, layer order, amodal box and RLE,
occlusion), needs no pixels and never decodes a mask: thousands of images per second on one core. Relations:
- "A on B":  A's bottom edge lies in the top band of B's box, A is horizontally over B, in front and smaller.
- "A in front of B":  A is a later layer and their amodal masks overlap (checked in RLE space, only for the few
  candidates that box overlap proposes), so A hides part of B.
- "A next to B":  both stand on about the same ground line, side by side without overlapping.
Relations join two different classes (never "a tree in front of a tree"). Every thing class present is mentioned,
with a count; stuff classes (mass nouns, no article) close the caption.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from smartmask import masks

_IRREGULAR = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
              "sheep": "sheep", "fish": "fish", "deer": "deer", "foot": "feet", "tooth": "teeth"}
_NUMBERS = ["no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
MAX_RELATIONS = 3


def plural(word: str) -> str:
    head, _, last = word.rpartition(" ")
    if last in _IRREGULAR:
        p = _IRREGULAR[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        p = last + "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return f"{head} {p}" if head else p


def article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def counted(label: str, n: int) -> str:
    if n == 1:
        return article(label)
    return f"{_NUMBERS[n] if n < len(_NUMBERS) else 'many'} {plural(label)}"


@dataclass(frozen=True, slots=True)
class Relation:
    subject: int  # layer index of A
    kind: str  # "on" | "in front of" | "next to"
    object: int  # layer index of B


_KINDS = ("on", "in front of", "next to")
_TOP_K = 16  # candidates kept per image; the caption states at most MAX_RELATIONS of them


def relations(labels: Sequence[str], is_stuff: Sequence[bool], bbox_N4: np.ndarray,
              occlusion: Sequence[float]) -> list[Relation]:
    """Candidate relations between things of different classes, strongest first. Layers come back to front."""
    things = [i for i in range(len(labels)) if not is_stuff[i]]
    n = len(things)
    if n < 2:
        return []
    b = np.asarray(bbox_N4, dtype=np.float64)[things]
    x0, y0, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    x1, y1 = x0 + w, y0 + h
    cx = x0 + w / 2
    ix = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    iy = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    inter = ix * iy
    area = np.maximum(w * h, 1.0)
    k = np.arange(n)
    ids: dict[str, int] = {}
    code = np.array([ids.setdefault(labels[i], len(ids)) for i in things])
    differ = code[:, None] != code[None]
    front = (k[:, None] > k[None]) & differ  # row a is painted after column b: a is in front
    occ = np.asarray(occlusion, dtype=np.float64)[things]
    score = np.full((n, n, 3), -np.inf)
    # "on": a's base sits in the top band of b, over it, and a is the smaller one. Most of a must rise above
    # b's top edge: a bird flying in front of a cloud overlaps it, a vase on a table stands above the table top.
    on = (front & (y1[:, None] >= y0[None] - 0.05 * h[None]) & (y1[:, None] <= y0[None] + 0.35 * h[None])
          & (y0[None] - y0[:, None] >= 0.6 * h[:, None])
          & (cx[:, None] > x0[None]) & (cx[:, None] < x1[None]) & (area[:, None] < 0.8 * area[None]))
    rows = np.flatnonzero(on.any(1))
    if rows.size:
        # Of several surfaces under a's base (a vase over a table that stands before a sofa), the support is
        # the one whose top edge is closest to that base (ties: the one painted last, nearest in depth).
        dy = np.where(on[rows], np.abs(y1[rows, None] - y0[None]) / np.maximum(h[None], 1.0), np.inf)
        best = n - 1 - np.argmin(dy[:, ::-1], axis=1)
        score[rows, best, 0] = 3.0 + inter[rows, best] / area[rows]
    # "in front of": boxes overlapping by a good share of the smaller one, and the one behind really hidden.
    cover = inter / np.minimum(area[:, None], area[None])
    fr = front & ~on & (cover > 0.15) & (occ[None] > 0.02)
    score[..., 1] = np.where(fr, 2.0 + cover, -np.inf)
    # "next to": same ground line, side by side, no overlap, similar size.
    gap = np.maximum(x0[None], x0[:, None]) - np.minimum(x1[None], x1[:, None])
    wmax = np.maximum(w[:, None], w[None])
    nxt = ((np.abs(y1[:, None] - y1[None]) < 0.1 * np.maximum(h[:, None], h[None])) & (inter == 0)
           & (gap < 0.5 * wmax) & (k[:, None] < k[None]) & differ
           & (np.minimum(area[:, None], area[None]) > 0.25 * np.maximum(area[:, None], area[None])))
    score[..., 2] = np.where(nxt, 1.0 - gap / np.maximum(wmax, 1.0), -np.inf)
    flat = score.ravel()
    idx = np.flatnonzero(flat > -np.inf)
    if idx.size > _TOP_K:
        idx = idx[np.argpartition(-flat[idx], _TOP_K)[:_TOP_K]]
    idx = idx[np.lexsort((idx, -flat[idx]))]  # strongest first; ties by (subject, object, kind)
    return [Relation(things[i // (3 * n)], _KINDS[i % 3], things[(i // 3) % n]) for i in idx.tolist()]


def _overlaps(a: dict, b: dict) -> bool:
    return masks.area([masks.merge([a, b], intersect=True)])[0] > 0


def caption(labels: Sequence[str], is_stuff: Sequence[bool], bbox_N4: np.ndarray, occlusion: Sequence[float],
            rles: Sequence[dict] | Callable[[int], dict] | None = None) -> tuple[str, list[Relation]]:
    """One image's layers (back to front) → (caption, the relations it states).

    With `rles` (the amodal masks, or a function from layer index to mask), an "in front of" candidate is kept
    only if the masks really overlap.
    """
    get = rles if callable(rles) else (rles.__getitem__ if rles is not None else None)
    rels = relations(labels, is_stuff, bbox_N4, occlusion)
    chosen: list[Relation] = []
    seen_pairs: set[tuple[str, str]] = set()
    for r in rels:  # at most one relation per pair of classes, and never both directions
        pair = tuple(sorted((labels[r.subject], labels[r.object])))
        if pair in seen_pairs:
            continue
        if r.kind == "in front of" and get is not None and not _overlaps(get(r.subject), get(r.object)):
            continue
        seen_pairs.add(pair)
        chosen.append(r)
        if len(chosen) == MAX_RELATIONS:
            break
    parts = [f"{article(labels[r.subject])} {r.kind} {article(labels[r.object])}" for r in chosen]
    mentioned = {labels[r.subject] for r in chosen} | {labels[r.object] for r in chosen}
    counts = Counter(lab for lab, s in zip(labels, is_stuff, strict=True) if not s)
    rest = [counted(lab, n) for lab, n in sorted(counts.items(), key=lambda t: (-t[1], t[0])) if lab not in mentioned]
    if rest:
        parts.append(rest[0] if len(rest) == 1 else ", ".join(rest[:-1]) + " and " + rest[-1])
    stuff = list(dict.fromkeys(lab for lab, s in zip(labels, is_stuff, strict=True) if s))
    text = ", ".join(parts)
    if stuff:
        tail = "in a scene with " + (stuff[0] if len(stuff) == 1 else ", ".join(stuff[:-1]) + " and " + stuff[-1])
        text = f"{text}, {tail}" if text else tail
    return text or "an empty scene", chosen
