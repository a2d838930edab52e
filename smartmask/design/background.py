"""The background of a design from an empty canvas: which stuff classes, and where the horizon lies.

SmartMask inserts into a layout; on an empty (all black) canvas it has nothing to stand things on, and a planner
trained on real scenes proposes boxes relative to the sky and the ground. So a design from scratch first lays
stuff layers, back to front, each a full-width band:

- the kind of scene from the words of the context and the objects: indoor words (room, kitchen, office, ...) and
  objects that stand on a floor, table or wall vote indoor; outdoor words (park, street, field, ...) and objects
  on grass, water or in the sky vote outdoor. Context words count twice (they describe the whole scene), a tie is
  outdoor.
- indoor: a wall above, a floor below the floor line. Outdoor: sky above, grass below the horizon, and a band of
  water across the ground when the context speaks of water (lake, river, sea, ...) or an object floats (a boat).
  The upper band reaches two rows past the line, as the synthetic world draws it: its amodal extent continues
  behind the ground, which is painted later and covers it.
- only labels the model's vocabulary has (through `smartmask.inference.synonyms.map_label`, so "sky-other-merged"
  counts as sky); a role with no label is left out, and with neither band there is no background at all.
- the line's height: a scene drawn by the seed from the dataset's own stuff (`StuffStats.from_lake`: per image
  the row between its upper and its ground stuff boxes, the water box's rows), else the rule of the synthetic
  world that drew those scenes: horizon at 30-46 % of the height outdoors, floor line at 42-58 % indoors, water
  from 15-45 % of the ground's depth below the horizon, 20-40 % of it deep.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smartmask.design.layered import DesignLayer
from smartmask.inference.synonyms import map_label
from smartmask.synth.world import SUPPORT

INDOOR_WORDS = frozenset({
    "room", "kitchen", "bedroom", "bathroom", "office", "hall", "hallway", "indoor", "indoors", "inside",
    "interior", "house", "apartment", "flat", "studio", "lobby", "cafe", "restaurant", "library", "classroom",
    "museum", "gallery", "shop", "store", "corridor", "attic", "basement", "living", "dining", "home",
})  # fmt: skip
OUTDOOR_WORDS = frozenset({
    "park", "street", "road", "field", "meadow", "garden", "yard", "beach", "lake", "river", "sea", "ocean",
    "pond", "outdoor", "outdoors", "outside", "sky", "forest", "wood", "woods", "mountain", "hill", "hills",
    "countryside", "village", "town", "city", "harbour", "harbor", "shore", "coast", "lawn", "grass",
    "sunset", "sunrise", "camp", "campsite", "farm", "playground", "square",
})  # fmt: skip
WATER_WORDS = frozenset({"lake", "river", "sea", "ocean", "pond", "water", "harbour", "harbor", "shore",
                         "coast", "bay", "canal", "stream", "lagoon"})
INDOOR_SUPPORTS = frozenset({"floor", "table", "wall"})
OUTDOOR_SUPPORTS = frozenset({"grass", "water", "sky"})

# Each role's label, in the order tried against the vocabulary.
ROLES = {
    "sky": ("sky",), "wall": ("wall",), "water": ("water", "sea", "river"),
    "grass": ("grass", "playingfield", "ground", "dirt", "sand", "snow"), "floor": ("floor", "rug"),
}  # fmt: skip
UPPER = {"outdoor": "sky", "indoor": "wall"}
GROUND = {"outdoor": "grass", "indoor": "floor"}

# The synthetic world's rule (smartmask.synth.world._outdoor / _indoor), as fractions of the image height.
RULE_LINE = {"outdoor": (0.30, 0.46), "indoor": (0.42, 0.58)}
RULE_WATER_TOP = (0.15, 0.45)  # of the ground's depth below the line
RULE_WATER_DEPTH = (0.20, 0.40)
OVERLAP_ROWS = 2  # the upper band's amodal extent past the line, hidden by the ground


def _words(text: str) -> list[str]:
    out = []
    for w in re.findall(r"[a-z]+", text.lower()):
        out.append(w[:-1] if w.endswith("s") and not w.endswith("ss") and w[:-1] in INDOOR_WORDS | OUTDOOR_WORDS
                   else w)
    return out


def scene_kind(context: str, objects: Iterable[str] = ()) -> str:
    """"indoor" or "outdoor" by the module's vote (context words twice, objects' supports once; a tie: outdoor)."""
    words = _words(context)
    indoor = 2 * sum(w in INDOOR_WORDS for w in words)
    outdoor = 2 * sum(w in OUTDOOR_WORDS for w in words)
    for obj in objects:
        sup = set(SUPPORT.get(obj, ()))
        indoor += bool(sup) and sup <= INDOOR_SUPPORTS
        outdoor += bool(sup) and sup <= OUTDOOR_SUPPORTS
    return "indoor" if indoor > outdoor else "outdoor"


def wants_water(context: str, objects: Iterable[str] = ()) -> bool:
    return any(w in WATER_WORDS for w in _words(context)) or any(SUPPORT.get(o) == ("water",) for o in objects)


def role_label(role: str, vocab_labels: Iterable[str]) -> str | None:
    """The vocabulary's label for a background role ("sky", "grass", ...), or None when it has none."""
    labels = [v for v in vocab_labels if v]
    for name in ROLES[role]:
        found = map_label(name, labels)
        if found:
            return found
    return None


@dataclass(frozen=True)
class StuffStats:
    """Where a dataset version's stuff lies, one entry per image, as fractions of the image height: `lines[kind]`
    the row between the upper and the ground stuff; `water` (line, water top, water bottom) per outdoor image with
    water."""

    lines: dict[str, tuple[float, ...]]
    water: tuple[tuple[float, float, float], ...]
    source: str

    @classmethod
    def from_lake(cls, lake: str | Path, dataset: str, version: str) -> StuffStats | None:
        """From the `layers` table's stuff boxes (no mask is decoded); None when the version has no such scene."""
        import pyarrow.parquet as pq

        from smartmask.lake.paths import dataset_dir

        table = pq.read_table(dataset_dir(Path(lake), dataset, version) / "layers",
                              columns=["image_id", "label", "bbox", "height"], filters=[("is_stuff", "=", True)])
        labels = sorted(set(table.column("label").to_pylist()))
        role = {lab: r for r in ROLES for lab in labels if role_label(r, [lab]) == lab}
        per_image: dict[str, dict[str, tuple[float, float]]] = {}
        for row in table.to_pylist():
            r = role.get(row["label"])
            if r and row["bbox"] and row["height"]:
                x, y, w, h = row["bbox"]
                per_image.setdefault(row["image_id"], {})[r] = (y / row["height"], (y + h) / row["height"])
        lines: dict[str, list[float]] = {"outdoor": [], "indoor": []}
        water = []
        for roles in per_image.values():
            for kind in ("outdoor", "indoor"):
                up, ground = roles.get(UPPER[kind]), roles.get(GROUND[kind])
                if ground is None:
                    continue
                # The ground's top is its highest point (a hill); the upper band reaches past the lowest: between.
                line = ground[0] if up is None else 0.5 * (ground[0] + min(up[1], 1.0))
                lines[kind].append(line)
                if kind == "outdoor" and "water" in roles and roles["water"][0] > line:
                    water.append((line, *roles["water"]))
        if not lines["outdoor"] and not lines["indoor"]:
            return None
        return cls({k: tuple(v) for k, v in lines.items()}, tuple(water), f"{dataset}@{version}")


@dataclass(frozen=True, kw_only=True)
class BackgroundPlan:
    """The stuff bands of a design from scratch: `upper` above `line` (a fraction of the height), `ground` below,
    `water` (a label) between `water_band` (fractions). `source`: "statistics:DATASET@VERSION" or "rule"."""

    kind: str
    upper: str | None
    ground: str | None
    line: float
    water: str | None = None
    water_band: tuple[float, float] | None = None
    source: str = "rule"

    def layers(self, width: int, height: int, seed: int) -> list[DesignLayer]:
        """The bands as `DesignLayer`s back to front (origin "background", stuff), at width × height."""
        rows = np.arange(height)[:, None]
        cut = int(round(self.line * height))
        bands = []
        if self.upper:
            bands.append((self.upper, rows < min(cut + OVERLAP_ROWS, height)))
        if self.ground:
            bands.append((self.ground, rows >= cut))
        if self.water and self.water_band:
            top, bottom = (int(round(v * height)) for v in self.water_band)
            bands.append((self.water, (rows >= top) & (rows < bottom)))
        return [DesignLayer(label=lab, mask_HW=np.broadcast_to(band, (height, width)).copy(), is_stuff=True,
                            origin="background", seed=seed) for lab, band in bands if band.any()]

    def describe(self) -> str:
        water = f", {self.water} {self.water_band[0]:.2f}-{self.water_band[1]:.2f}" if self.water else ""
        return (f"{self.kind}: {self.upper or '-'} above / {self.ground or '-'} below {self.line:.2f} of the height"
                f"{water} ({self.source})")


def plan_background(context: str, objects: Iterable[str], vocab_labels: Iterable[str], *, seed: int,
                    stats: StuffStats | None = None) -> BackgroundPlan | None:
    """The background for a design from scratch (module doc); None when the vocabulary has no label for it."""
    objects, labels = list(objects), [v for v in vocab_labels if v]
    kind = scene_kind(context, objects)
    upper, ground = role_label(UPPER[kind], labels), role_label(GROUND[kind], labels)
    if upper is None and ground is None:
        return None
    water = role_label("water", labels) if kind == "outdoor" and wants_water(context, objects) else None
    rng = np.random.default_rng(seed)
    lines = stats.lines.get(kind, ()) if stats else ()
    source = f"statistics:{stats.source}" if lines else "rule"
    band = None
    if water and stats and stats.water:
        line, top, bottom = stats.water[int(rng.integers(len(stats.water)))]  # one real scene's water
        band = (top, bottom)
    elif lines:
        line = float(lines[int(rng.integers(len(lines)))])
    else:
        line = float(rng.uniform(*RULE_LINE[kind]))
    if water and band is None:
        depth = 1.0 - line
        top = line + depth * rng.uniform(*RULE_WATER_TOP)
        band = (top, min(top + depth * rng.uniform(*RULE_WATER_DEPTH), 1.0))
        source = f"{source}, water by rule" if source != "rule" else source
    return BackgroundPlan(kind=kind, upper=upper, ground=ground, line=line, water=water if band else None,
                          water_band=band, source=source)
