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
from collections.abc import Sequence
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


def relations(labels: Sequence[str], is_stuff: Sequence[bool], bbox_N4: np.ndarray,
              occlusion: Sequence[float]) -> list[Relation]:
    """Candidate relations between things of different classes, strongest first. Layers come back to front."""
    things = [i for i in range(len(labels)) if not is_stuff[i]]
    if len(things) < 2:
        return []
    b = np.asarray(bbox_N4, dtype=np.float64)[things]
    x0, y0, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    x1, y1 = x0 + w, y0 + h
    cx = x0 + w / 2
    ix = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    iy = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    inter = ix * iy
    area = np.maximum(w * h, 1.0)
    k = np.arange(len(things))
    lab = np.asarray([labels[i] for i in things], dtype=object)
    # row a is painted after column b (a is in front), and they are different classes
    front = (k[:, None] > k[None]) & (lab[:, None] != lab[None])
    occ = np.asarray([occlusion[i] for i in things])
    scored: list[tuple[float, Relation]] = []
    # "on": a's base sits in the top band of b, over it, and a is the smaller one.
    on = (front & (y1[:, None] >= y0[None] - 0.05 * h[None]) & (y1[:, None] <= y0[None] + 0.35 * h[None])
          & (cx[:, None] > x0[None]) & (cx[:, None] < x1[None]) & (area[:, None] < 0.8 * area[None]))
    for a, bb in zip(*np.nonzero(on), strict=True):
        scored.append((3.0 + inter[a, bb] / area[a], Relation(things[a], "on", things[bb])))
    # "in front of": substantial overlap with the hidden one really hidden.
    cover = inter / area[None]
    fr = front & ~on & (cover > 0.15) & (occ[None] > 0.02)
    for a, bb in zip(*np.nonzero(fr), strict=True):
        scored.append((2.0 + cover[a, bb], Relation(things[a], "in front of", things[bb])))
    # "next to": same ground line, side by side, no overlap, similar size.
    gap = np.maximum(x0[None], x0[:, None]) - np.minimum(x1[None], x1[:, None])
    nxt = ((np.abs(y1[:, None] - y1[None]) < 0.1 * np.maximum(h[:, None], h[None])) & (inter == 0)
           & (gap < 0.5 * np.maximum(w[:, None], w[None])) & (k[:, None] < k[None]) & (lab[:, None] != lab[None])
           & (np.minimum(area[:, None], area[None]) > 0.25 * np.maximum(area[:, None], area[None])))
    for a, bb in zip(*np.nonzero(nxt), strict=True):
        scored.append((1.0 - gap[a, bb] / max(w[a], w[bb], 1.0), Relation(things[a], "next to", things[bb])))
    scored.sort(key=lambda t: (-t[0], t[1].subject, t[1].object))
    return [r for _, r in scored]


def _overlaps(a: dict, b: dict) -> bool:
    return masks.area([masks.merge([a, b], intersect=True)])[0] > 0


def caption(labels: Sequence[str], is_stuff: Sequence[bool], bbox_N4: np.ndarray, occlusion: Sequence[float],
            rles: Sequence[dict] | None = None) -> tuple[str, list[Relation]]:
    """One image's layers (back to front) → (caption, the relations it states).

    With `rles` (the amodal masks), an "in front of" candidate is kept only if the masks really overlap.
    """
    rels = relations(labels, is_stuff, bbox_N4, occlusion)
    chosen: list[Relation] = []
    seen_pairs: set[tuple[str, str]] = set()
    for r in rels:  # at most one relation per pair of classes, and never both directions
        pair = tuple(sorted((labels[r.subject], labels[r.object])))
        if pair in seen_pairs:
            continue
        if r.kind == "in front of" and rles is not None and not _overlaps(rles[r.subject], rles[r.object]):
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
