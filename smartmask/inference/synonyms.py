"""From a segmenter's label set to a SmartMask vocabulary: the synonym table and `map_label`.

A panoptic segmenter names what it sees in its own label set (Mask2Former COCO-panoptic checkpoints: the 133
classes below, read from `model.config.id2label`); a SmartMask version knows only the labels of the dataset it
was trained on (its `vocabulary.parquet`). `map_label` bridges the two, in this order:

1. an explicit "no" in the table (value None / JSON null): the label stays unknown;
2. exact match: the segmenter's label is a vocabulary label ("person", "boat", "bench", ...);
3. the synonym table (`SYNONYMS`, plus a user's override): "dining table" → "table", "sea" → "water", ...;
4. normalisations: lower case, "_" → " ", the COCO suffixes "-merged" / "-other" / "-stuff" stripped, the base
   of a "<base>-<variant>" name ("wall-brick" → "wall", "floor-wood" → "floor"), then singular / plural.

What still does not match returns None: the caller paints it as an "unknown" region and counts it, never drops it.
The table is deliberately conservative: it maps a class only onto a label that means the same thing for the
model's purposes (what stands on it, what it occludes). A wrong label teaches the model a wrong support surface
("road" → "floor" would invite sofas onto streets); an honest unknown region only says "something is here".
The default targets the synthetic world's labels (person, dog, tree, car, house, bench, boat, bird, cloud, table,
chair, sofa, lamp, vase, bottle, plant, painting, window; stuff sky, grass, water, wall, floor) and any vocabulary
that uses plain names for them (COCOA's free-form names). datasets/README.md lists the choices.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

# Mask2Former COCO-panoptic checkpoints (`facebook/mask2former-swin-*-coco-panoptic`): id2label 0..79 are the
# thing classes, 80..132 the stuff classes, in this order (detectron2's COCO_CATEGORIES).
COCO_PANOPTIC_THINGS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip
COCO_PANOPTIC_STUFF: tuple[str, ...] = (
    "banner", "blanket", "bridge", "cardboard", "counter", "curtain", "door-stuff", "floor-wood", "flower",
    "fruit", "gravel", "house", "light", "mirror-stuff", "net", "pillow", "platform", "playingfield", "railroad",
    "river", "road", "roof", "sand", "sea", "shelf", "snow", "stairs", "tent", "towel", "wall-brick", "wall-stone",
    "wall-tile", "wall-wood", "water-other", "window-blind", "window-other", "tree-merged", "fence-merged",
    "ceiling-merged", "sky-other-merged", "cabinet-merged", "table-merged", "floor-other-merged",
    "pavement-merged", "mountain-merged", "grass-merged", "dirt-merged", "paper-merged", "food-other-merged",
    "building-other-merged", "rock-merged", "wall-other-merged", "rug-merged",
)  # fmt: skip
COCO_PANOPTIC_LABELS: tuple[str, ...] = COCO_PANOPTIC_THINGS + COCO_PANOPTIC_STUFF

# Segmenter label → vocabulary label, where the names differ. Names equal to a vocabulary label need no entry
# (exact match), nor do those the normalisations find ("tree-merged" → "tree", "wall-brick" → "wall").
# They are listed anyway where the mapping is a decision worth reading.
SYNONYMS: Mapping[str, str | None] = {
    # furniture and plants
    "dining table": "table",
    "table-merged": "table",
    "couch": "sofa",
    "potted plant": "plant",
    "flower": "plant",  # cut or growing flowers: a plant for support purposes (stands on a table or floor)
    "light": "lamp",  # COCO's "light" stuff is mostly lamps and light fixtures
    # buildings
    "house": "house",
    "building-other-merged": "house",  # the synthetic world's only building
    "tree-merged": "tree",
    # water: boats float on it, whatever its name
    "sea": "water",
    "river": "water",
    "water-other": "water",
    # sky, ground, walls, floors
    "sky-other-merged": "sky",
    "grass-merged": "grass",
    "playingfield": "grass",  # sports fields are mostly turf; people stand on them
    "wall-brick": "wall",
    "wall-stone": "wall",
    "wall-tile": "wall",
    "wall-wood": "wall",
    "wall-other-merged": "wall",
    "floor-wood": "floor",
    "floor-other-merged": "floor",
    "rug-merged": "floor",  # lies flat on the floor: furniture stands on it
    "window-blind": "window",
    "window-other": "window",
    # Deliberately unmapped (they stay unknown unless a vocabulary has the very name): road, pavement, dirt, sand,
    # gravel, snow (not grass: nothing in the world stands on them the way it stands on grass), ceiling (not a
    # wall: paintings do not hang on it), truck / bus (not a car), mountain, rock, fence, roof.
}

_SUFFIXES = ("-merged", "-other", "-stuff")
_IRREGULAR = {"people": "person", "person": "people", "men": "man", "man": "men", "women": "woman",
              "woman": "women", "children": "child", "child": "children"}  # fmt: skip


class SynonymError(ValueError):
    """A user's synonym table that cannot be used. One line."""


def normalise(label: str) -> str:
    """Lower case, "_" → " ", whitespace collapsed, COCO's "-merged" / "-other" / "-stuff" suffixes stripped."""
    s = " ".join(str(label).replace("_", " ").lower().split())
    stripped = True
    while stripped:
        stripped = False
        for suf in _SUFFIXES:
            if s.endswith(suf) and len(s) > len(suf):
                s, stripped = s[: -len(suf)], True
    return s


def _number_variants(word: str) -> list[str]:
    out = [word]
    if word in _IRREGULAR:
        out.append(_IRREGULAR[word])
    if word.endswith("es"):
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        out.append(word[:-1])
    out += [word + "s", word + "es"]
    return out


def _candidates(label: str) -> list[str]:
    """Normalised spellings of `label` to look up, most specific first."""
    n = normalise(label)
    bases = [n]
    if "-" in n:
        bases += [n.split("-", 1)[0], n.replace("-", " ")]  # "wall-brick" → "wall"; "t-shirt" → "t shirt"
    seen: dict[str, None] = {}
    for b in bases:
        for v in _number_variants(b):
            seen.setdefault(v, None)
    return list(seen)


def map_label(source_label: str, vocab_labels: Iterable[str],
              table: Mapping[str, str | None] = SYNONYMS) -> str | None:
    """The vocabulary label for a segmenter's `source_label`, or None when it maps to nothing (unknown).

    `table` is consulted by the exact source label, then by its normalised form; a None value means "keep this
    label unknown" (a user's way to switch off a default mapping)."""
    vocab = [v for v in vocab_labels if v]
    exact = set(vocab)
    lookup = {normalise(v): v for v in vocab}
    for key in (source_label, normalise(source_label)):
        if key in table and not table[key]:
            return None
    if source_label in exact:
        return source_label
    for key in (source_label, normalise(source_label)):
        target = table.get(key)
        if target and (target in exact or normalise(target) in lookup):
            return target if target in exact else lookup[normalise(target)]
    for cand in _candidates(source_label):
        if cand in lookup:
            return lookup[cand]
    return None


def label_map(source_labels: Iterable[str], vocab_labels: Iterable[str],
              table: Mapping[str, str | None] = SYNONYMS) -> dict[str, str | None]:
    """`map_label` for a whole label set (e.g. `model.config.id2label.values()`): source → label or None."""
    vocab = [v for v in vocab_labels if v]
    return {s: map_label(s, vocab, table) for s in source_labels}


def load_synonyms(override: Mapping[str, str | None] | str | os.PathLike | None = None) -> dict[str, str | None]:
    """The default table with a user's override on top (a dict, or the path of a JSON object of
    "segmenter label": "vocabulary label" | null). Override entries win; null switches a mapping off."""
    table: dict[str, str | None] = dict(SYNONYMS)
    if override is None:
        return table
    if isinstance(override, str | os.PathLike):
        path = Path(override)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SynonymError(f"synonym table {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise SynonymError(f"synonym table {str(path)!r} is not valid JSON: {exc}") from exc
        where = repr(str(path))
    else:
        doc, where = override, "override"
    if not isinstance(doc, Mapping):
        raise SynonymError(f"synonym table {where} must be a JSON object of label -> label, got {type(doc).__name__}")
    for k, v in doc.items():
        if not isinstance(k, str) or not k.strip() or not (v is None or isinstance(v, str)):
            raise SynonymError(f"synonym table {where}: entry {k!r}: {v!r} must map a label to a label or null")
        table[k] = v.strip() if isinstance(v, str) else None
    return table
