"""What the synthetic world knows: its classes, stuff, support rules, sizes and perspective; scene sampling.

Perspective is a ground plane seen by a level camera: an object standing at image row `foot_y` is
(foot_y - horizon) / camera_height pixels per metre tall, so things further down the image are nearer, larger and
painted later (in front). Depth is a sort key per instance; nothing here rasterises (see render.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smartmask.config import SynthConfig
from smartmask.synth.shapes import FLOOR_LAMP, SEATED, SEATED_HIP, SHAPES, Shape, finish, place

THINGS = ("person", "dog", "tree", "car", "house", "bench", "boat", "bird", "cloud",
          "table", "chair", "sofa", "lamp", "vase", "bottle", "plant", "painting", "window")  # fmt: skip
STUFF = ("sky", "grass", "water", "wall", "floor")

# Support rules as data: class -> what it may stand on / float on / hang on / fly in. Tests check them.
SUPPORT: dict[str, tuple[str, ...]] = {
    "person": ("grass", "floor"), "dog": ("grass", "floor"), "tree": ("grass",), "car": ("grass",),
    "house": ("grass",), "bench": ("grass",), "boat": ("water",), "bird": ("sky",), "cloud": ("sky",),
    "table": ("floor",), "chair": ("floor",), "sofa": ("floor",), "plant": ("floor",),
    "lamp": ("table",), "vase": ("table",), "bottle": ("table",), "painting": ("wall",), "window": ("wall",),
}  # fmt: skip
PLURAL = {name: name + "s" for name in THINGS} | {"person": "people", "bench": "benches"}

# The context world's rules (SynthConfig(world="context")): a shape that follows its surroundings, so a model that
# reads the layout can beat the class-mean shape. The dataset card and annotations.json record them.
CONTEXT_RULES = (
    "person: sits on a bench, chair or sofa in the scene (seated silhouette, hips on the seat, feet on the ground "
    "in front of it, drawn just in front of the seat) with probability 0.7; stands elsewhere",
    "dog: stands beside a person of the scene (same foot row, its nearer edge 2-10% of its width from the person's "
    "legs), facing them; a scene that draws dogs and no person draws a person instead of its first dog, and a dog "
    "with no room beside anyone is left out",
    "lamp: a floor lamp (1.6 m, a tall pole under the shade) standing on the floor with probability 0.5 or when "
    "the room has no table; otherwise a table lamp on a table",
)
SEATED_PROB = 0.7
FLOOR_LAMP_PROB = 0.5
FLOOR_LAMP_M = 1.6
# Seat height of each seat class, as a fraction of its box from the top (where the drawing's seat line is).
SEAT_LINE = {"bench": 0.56, "chair": 0.5, "sofa": 0.5}


@dataclass(frozen=True)
class Spec:
    height_m: float  # physical height; sky things: their width as a fraction of the image width
    max_frac: float  # cap on the drawn height / image height: a very near sofa would hide the whole scene
    weight: tuple[float, float]  # sampling weight (outdoor, indoor)
    wobble: float = 0.012  # shape variation; rigid man-made things wobble less


# fmt: off
SPECS: dict[str, Spec] = {
    "person": Spec(1.7, 0.55, (4.0, 2.5)), "dog": Spec(0.6, 0.25, (1.5, 0.8)),
    "tree": Spec(6.0, 0.8, (3.0, 0.0)), "car": Spec(1.5, 0.22, (1.5, 0.0)),
    "house": Spec(7.0, 0.35, (1.2, 0.0), 0.004), "bench": Spec(0.9, 0.15, (1.2, 0.0)),
    "boat": Spec(3.5, 0.3, (2.5, 0.0)), "bird": Spec(0.045, 1.0, (1.5, 0.0)), "cloud": Spec(0.2, 1.0, (1.5, 0.0)),
    "table": Spec(0.75, 0.35, (0.0, 2.0), 0.006), "chair": Spec(0.9, 0.4, (0.0, 3.0)),
    "sofa": Spec(0.85, 0.35, (0.0, 1.0)), "plant": Spec(0.9, 0.35, (0.0, 1.5)),
    "lamp": Spec(0.6, 1.0, (0.0, 1.5)), "vase": Spec(0.35, 1.0, (0.0, 1.5)), "bottle": Spec(0.3, 1.0, (0.0, 1.5)),
    "painting": Spec(0.7, 1.0, (0.0, 1.5), 0.004), "window": Spec(1.4, 1.0, (0.0, 1.0), 0.004),
}
# Depth layers, back to front; within layer 5 (things on the ground plane) depth is the foot row.
_LAYER = {"sky": 0, "wall": 0, "cloud": 1, "painting": 1, "window": 1, "bird": 2, "grass": 3, "floor": 3,
          "water": 4}
_SHADE = {"sky": (0.82, 1.15), "water": (1.1, 0.8), "grass": (0.85, 1.12), "wall": (1.05, 0.92),
          "floor": (0.82, 1.1)}  # brightness at the top / bottom of the region: light sky at the horizon, deep water
# fmt: on


@dataclass(eq=False)
class Instance:
    name: str
    poly: np.ndarray  # (N, 2) final outline: clipped to the image, rounded to 2 decimals
    key: tuple  # depth sort key: larger = nearer = painted later
    stuff: bool = False
    parent: Instance | None = None  # the thing it stands on (a lamp's table), None for ground/stuff support
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # unclipped template box x0, y0, x1, y1
    flip: bool = False
    ppm: float = 0.0  # pixels per metre at its depth; dependents inherit their supporter's
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-instance colour variation
    shade: tuple[float, float] = (1.08, 0.9)  # brightness at the top / bottom of its box
    cache: dict = field(default_factory=dict)  # render.py keeps the rasterised mask here


@dataclass(eq=False)
class Scene:
    kind: str  # "outdoor" | "indoor"
    width: int
    height: int
    horizon: float  # eye level: the row where the ground plane vanishes
    ground_top: float  # lowest row of the sky/wall boundary: ground things stand below it
    sky_bottom: float  # highest row of that boundary: sky things float above it
    cam_h: float  # camera height in metres
    target: int  # how many things the scene wants
    water: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # shoreline xs, top ys, bottom ys
    instances: list[Instance] = field(default_factory=list)
    seq: int = 0
    world: str = "classic"  # SynthConfig.world: "context" turns on CONTEXT_RULES

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def _tint(rng: np.random.Generator, spread: float = 0.08) -> tuple[float, float, float]:
    """Per-instance colour variation: a brightness factor times a small per-channel cast."""
    rgb = rng.normal(1.0, spread, 3) * rng.uniform(1.0 - 2 * spread, 1.0 + 2 * spread)
    return tuple(float(v) for v in np.clip(rgb, 0.6, 1.4))


def _stuff(scene: Scene, name: str, pts, rng: np.random.Generator) -> None:
    poly = finish(np.asarray(pts, dtype=np.float64), scene.width, scene.height)
    key = (_LAYER[name], 0.0, scene.next_seq(), 0)
    # Stuff varies less than things: a teal sky or a purple lawn would no longer read as sky or grass.
    scene.instances.append(Instance(name, poly, key, stuff=True, tint=_tint(rng, 0.03), shade=_SHADE[name]))


def _outdoor(rng: np.random.Generator, W: int, H: int, target: int) -> Scene:
    horizon = H * rng.uniform(0.3, 0.46)
    xs = np.linspace(0.0, W, int(rng.integers(4, 8)))
    hills = horizon + H * rng.uniform(-0.05, 0.01, len(xs))  # rolling hills hide the sky's lower edge
    sc = Scene(
        "outdoor", W, H, horizon, float(hills.max()), float(hills.min()), rng.uniform(2.0, 3.0), target
    )
    # The sky's amodal extent continues behind the hills, so the grass genuinely occludes it.
    _stuff(sc, "sky", [(0, 0), (W, 0), (W, hills.max() + 2), (0, hills.max() + 2)], rng)
    _stuff(sc, "grass", [*zip(xs, hills, strict=True), (W, H), (0, H)], rng)
    if rng.random() < 0.5:
        depth = H - sc.ground_top
        top = sc.ground_top + depth * (rng.uniform(0.15, 0.45) + rng.uniform(-0.03, 0.03, len(xs)))
        if rng.random() < 0.35:
            bottom = np.full(len(xs), float(H))  # the water reaches the viewer: a shore scene
        else:
            bottom = np.minimum(top + depth * rng.uniform(0.2, 0.4, len(xs)), H)
        sc.water = (xs, top, bottom)
        _stuff(sc, "water", [*zip(xs, top, strict=True), *zip(xs[::-1], bottom[::-1], strict=True)], rng)
    return sc


def _indoor(rng: np.random.Generator, W: int, H: int, target: int) -> Scene:
    floor_line = H * rng.uniform(0.42, 0.58)
    horizon = floor_line - H * rng.uniform(0.12, 0.22)  # eye level sits on the back wall, above the floor
    sc = Scene("indoor", W, H, horizon, floor_line, floor_line, rng.uniform(1.4, 1.7), target)
    _stuff(sc, "wall", [(0, 0), (W, 0), (W, floor_line + 2), (0, floor_line + 2)], rng)
    _stuff(sc, "floor", [(0, floor_line), (W, floor_line), (W, H), (0, H)], rng)
    return sc


def sample_scene(rng: np.random.Generator, config: SynthConfig) -> Scene:
    """Stuff layout plus an initial set of things; the number of things is uniform in [min_things, max_things]."""
    target = int(rng.integers(config.min_things, config.max_things + 1))
    make = _outdoor if rng.random() < config.outdoor_prob else _indoor
    scene = make(rng, config.width, config.height, target)
    scene.world = config.world
    add_things(scene, rng, target)
    return scene


def _in_water(scene: Scene, xs: np.ndarray, y: float, margin: float) -> np.ndarray:
    wx, top, bottom = scene.water
    return (np.interp(xs, wx, top) + margin <= y) & (y <= np.interp(xs, wx, bottom) - margin)


def _make(scene, rng, name, v, fx, fy, w, h, ppm=0.0, parent=None, key=None, flip: bool | None = None,
          shape: Shape | None = None) -> Instance | None:
    drawn = bool(rng.random() < 0.5)  # drawn even when `flip` is given: the classic world's draws stay the same
    flip = drawn if flip is None else flip
    unit = (shape or SHAPES[name]).variants[v]
    raw = place(unit, fx, fy, w, h, rng, flip=flip, wobble=SPECS[name].wobble)
    seq = scene.next_seq()
    key = key if key is not None else (_LAYER.get(name, 5), float(fy), seq, 0)
    shade = (rng.uniform(1.0, 1.15), rng.uniform(0.8, 0.95))
    box = (fx - w / 2, fy - h, fx + w / 2, fy)
    poly = finish(raw, scene.width, scene.height)
    if len(poly) < 3:  # clipped away; also pycocotools would read a 2-point "polygon" as a bbox
        return None
    return Instance(name, poly, key, False, parent, box, flip, ppm, _tint(rng), shade)


def _place_thing(scene: Scene, rng: np.random.Generator, name: str) -> Instance | None:
    W, H, spec, shape = scene.width, scene.height, SPECS[name], SHAPES[name]
    if scene.world == "context":
        seats = [i for i in scene.instances if i.name in SEAT_LINE] if name == "person" else []
        if seats and rng.random() < SEATED_PROB:
            return _seated(scene, rng, seats[int(rng.integers(len(seats)))])
        if name == "dog":
            return _beside_person(scene, rng)
        if name == "lamp" and (rng.random() < FLOOR_LAMP_PROB or not any(i.name == "table" for i in scene.instances)):
            aspect = FLOOR_LAMP.aspects[0] * rng.uniform(0.9, 1.1)
            return _on_ground(scene, rng, name, 0, aspect, "floor", FLOOR_LAMP_M, 0.9, FLOOR_LAMP)
    v = int(rng.integers(len(shape.variants)))
    aspect = shape.aspects[v] * rng.uniform(0.9, 1.1)
    support = SUPPORT[name][0]
    if support == "sky":
        w = max(12.0, W * spec.height_m * rng.uniform(0.6, 1.4))
        h = min(w / aspect, scene.sky_bottom * 0.6)  # a low sky (high horizon) shrinks what flies in it
        if h < 3:
            return None
        w = h * aspect
        fy = rng.uniform(h + 1, scene.sky_bottom - 1)
        return _make(scene, rng, name, v, rng.uniform(0, W), fy, w, h)
    if support == "wall":
        ppm = (scene.ground_top - scene.horizon) / scene.cam_h  # the back wall's scale
        h = min(spec.height_m * ppm * rng.uniform(0.8, 1.3), scene.ground_top * 0.8)
        w = min(h * aspect, W * 0.9)
        if h < 6:
            return None
        fy = rng.uniform(h + 0.03 * H, scene.ground_top - 3)
        return _make(scene, rng, name, v, rng.uniform(w / 2, W - w / 2), fy, w, h, ppm)
    if support == "table":
        return _on_table(scene, rng, name, v, aspect)
    return _on_ground(scene, rng, name, v, aspect, support, spec.height_m, spec.max_frac)


def _on_ground(scene: Scene, rng: np.random.Generator, name: str, v: int, aspect: float, support: str,
               height_m: float, max_frac: float, shape: Shape | None = None) -> Instance | None:
    """Standing on the ground plane (grass, floor) or floating on water: perspective sizes everything."""
    W, H = scene.width, scene.height
    # A table must be tall enough that its top is a few pixels thick, or nothing could visibly stand on it.
    min_px = max(20.0, 0.08 * H) if name == "table" else _min_ground_px(H)
    lo = max(scene.ground_top + 2, scene.horizon + min_px * scene.cam_h / height_m)
    hi = min(H - 1.0, scene.horizon + max_frac * H * scene.cam_h / height_m)
    if lo >= H - 1:
        return None
    hi = max(hi, lo + 1.0)
    for _ in range(12):
        fx = rng.uniform(0, W)
        if support == "water":
            if scene.water is None:
                return None
            wx, top, bottom = scene.water
            t, b = float(np.interp(fx, wx, top)), float(np.interp(fx, wx, bottom))
            # Keep the keel well inside the water: a hull touching the far shoreline reads as beached.
            margin = max(2.0, 0.2 * (b - t))
            t, b = t + margin, b - 2.0
            fy = rng.uniform(max(lo, t), max(min(hi, b), max(lo, t)))
        else:
            # Far placements are favoured (power > 1): many small far things and fewer big near ones, so a
            # crowded scene still leaves most things visible.
            fy = lo + (hi - lo) * rng.random() ** 1.4
        ppm = (fy - scene.horizon) / scene.cam_h
        h = height_m * ppm * rng.uniform(0.9, 1.1)
        w = h * aspect
        if support == "water":
            keel = np.linspace(fx - 0.42 * w, fx + 0.42 * w, 9)  # the hull's bottom spans ~70 % of the width
            if not _in_water(scene, keel, fy, margin / 2).all():
                continue
        elif scene.water is not None:
            feet = np.linspace(fx - 0.55 * w, fx + 0.55 * w, 9)
            if _in_water(scene, feet, fy, -2.0).any():  # nobody stands in the lake
                continue
        return _make(scene, rng, name, v, fx, fy, w, h, ppm, shape=shape)
    return None


def _min_ground_px(H: float) -> float:
    """The smallest drawn height of a thing on the ground plane (tables aside: `_on_ground`)."""
    return max(6.0, 0.05 * H)


def _beside_person(scene: Scene, rng: np.random.Generator, tries: int = 4) -> Instance | None:
    """A dog (context world) beside a random person, at the person's foot row, its nearer edge 2-10% of its width
    from the person's outline at the dog's height (the legs, not the box: arms reach wider), facing the person.
    So close, the person's legs fall inside the dog's focus window (conditioning/focus.py pads a box by 12.5%), and
    the heading is always readable from the layout: no dog of this world faces a random way."""
    people = [i for i in scene.instances if i.name == "person"]
    spec, shape = SPECS["dog"], SHAPES["dog"]
    for _ in range(tries if people else 0):
        person = people[int(rng.integers(len(people)))]
        aspect = shape.aspects[0] * rng.uniform(0.9, 1.1)
        fy = person.box[3]
        ppm = (fy - scene.horizon) / scene.cam_h
        h = spec.height_m * ppm * rng.uniform(0.9, 1.1)
        w = h * aspect
        low = person.poly[person.poly[:, 1] >= fy - h]
        gap = w * rng.uniform(0.02, 0.1)
        left = rng.random() < 0.5  # the side the dog stands on; it faces the person, i.e. away from that side
        if h < _min_ground_px(scene.height) or len(low) == 0:
            continue
        fx = low[:, 0].min() - gap - w / 2 if left else low[:, 0].max() + gap + w / 2
        if fx - w / 2 < 0 or fx + w / 2 > scene.width:
            continue
        if scene.water is not None and _in_water(scene, np.linspace(fx - 0.55 * w, fx + 0.55 * w, 9), fy, -2).any():
            continue
        return _make(scene, rng, "dog", 0, fx, fy, w, h, ppm, flip=not left)
    return None


def _seated(scene: Scene, rng: np.random.Generator, seat: Instance) -> Instance | None:
    """A person sitting on `seat` (context world): hips on its seat line, feet on the ground line in front of it,
    so the seat decides the person's height; drawn just in front of the seat, which carries it (`parent`)."""
    x0, y0, x1, y1 = seat.box
    seat_row = y0 + SEAT_LINE[seat.name] * (y1 - y0)
    h = (y1 - seat_row) / (1.0 - SEATED_HIP)
    w = h * SEATED.aspects[0]
    if h < 6:
        return None
    key = (5, seat.key[1], seat.key[2], scene.next_seq())
    if seat.name == "chair":  # back against the chair's backrest (drawn on the left unless flipped), facing away
        inset = 0.5 * w + 0.05 * (x1 - x0)
        fx, flip = (x1 - inset if seat.flip else x0 + inset), seat.flip
    else:
        fx, flip = x0 + (x1 - x0) * rng.uniform(0.3, 0.7), None
    return _make(scene, rng, "person", 0, fx, y1, w, h, seat.ppm, parent=seat, key=key, flip=flip, shape=SEATED)


def _on_table(scene: Scene, rng: np.random.Generator, name: str, v: int, aspect: float) -> Instance | None:
    tables = [i for i in scene.instances if i.name == "table"]
    if not tables:
        return None
    table = tables[int(rng.integers(len(tables)))]
    sy, sx0, sx1 = SHAPES["table"].surface
    if table.flip:
        sx0, sx1 = 1.0 - sx1, 1.0 - sx0
    x0, y0, x1, y1 = table.box
    h = SPECS[name].height_m * table.ppm * rng.uniform(0.85, 1.15)
    w = h * aspect
    lo = max(x0 + sx0 * (x1 - x0) + w / 2, w / 2)
    hi = min(x0 + sx1 * (x1 - x0) - w / 2, scene.width - w / 2)
    if lo > hi or h < 3:
        return None
    fy = y0 + sy * (y1 - y0)
    # Just in front of its table: after the table, before anything standing nearer than the table.
    key = (5, table.key[1], table.key[2], scene.next_seq())
    return _make(scene, rng, name, v, rng.uniform(lo, hi), fy, w, h, table.ppm, parent=table, key=key)


def add_things(scene: Scene, rng: np.random.Generator, count: int) -> None:
    """Draw `count` classes for this scene type and place them; a placement that fails is simply skipped."""
    col = 0 if scene.kind == "outdoor" else 1
    names = [n for n in THINGS if SPECS[n].weight[col] > 0 and (n != "boat" or scene.water is not None)]
    p = np.array([SPECS[n].weight[col] for n in names])
    drawn = [names[i] for i in rng.choice(len(names), size=count, p=p / p.sum())]
    has_table = any(i.name == "table" for i in scene.instances) or "table" in drawn
    dependent = [k for k, n in enumerate(drawn) if SUPPORT[n] == ("table",)]
    if dependent and not has_table:
        drawn[dependent[0]] = "table"  # a lamp needs a table to stand on: the first one brings it
    # Supporters first, so every dependent drawn in this batch finds a table already placed; in the context world
    # seats before the people who may sit on them, people before the dogs that stand beside them.
    if scene.world == "context":
        people = any(i.name == "person" for i in scene.instances) or "person" in drawn
        if "dog" in drawn and not people:
            drawn[drawn.index("dog")] = "person"  # a dog stands beside a person: the first one brings them
        order = sorted(drawn, key=lambda n: (SUPPORT[n] == ("table",), n == "dog", n == "person"))
    else:
        order = sorted(drawn, key=lambda n: SUPPORT[n] == ("table",))
    for name in order:
        inst = _place_thing(scene, rng, name)
        if inst is not None:
            scene.instances.append(inst)


def remove(scene: Scene, doomed: set[int]) -> None:
    """Drop instances (by id()) and, transitively, whatever stands on them: a lamp never floats in the air."""
    gone = set(doomed)
    changed = True
    while changed:
        changed = False
        for inst in scene.instances:
            if id(inst) not in gone and inst.parent is not None and id(inst.parent) in gone:
                gone.add(id(inst))
                changed = True
    scene.instances = [i for i in scene.instances if id(i) not in gone]


def things(scene: Scene) -> list[Instance]:
    return [i for i in scene.instances if not i.stuff]


# ----------------------------------------------------------------------------------------------- captions
_WHERE = {"bird": "in the sky", "cloud": "in the sky", "boat": "on the water", "painting": "on the wall",
          "window": "on the wall"}  # fmt: skip
_NUMBER = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def _count(name: str, n: int) -> str:
    return f"a {name}" if n == 1 else f"{_NUMBER.get(n, 'many')} {PLURAL[name]}"


def _setting(scene: Scene, present: dict[str, int]) -> str:
    if scene.kind == "outdoor":
        return "by a lake" if scene.water is not None else "in a park"
    if "sofa" in present:
        return "in a living room"
    return "in a dining room" if "table" in present else "in a room"


def caption(scene: Scene, occlusions: list[tuple[Instance, Instance, int]]) -> str:
    """A template caption from what the world knows: depth relations first (the largest visible occlusions
    between things), then support relations ("a lamp on a table"), then every other class present, then the
    setting. `occlusions` holds (front, back, pixels of the back one that the front one visibly hides)."""
    present: dict[str, int] = {}
    for inst in things(scene):
        present[inst.name] = present.get(inst.name, 0) + 1
    clauses: list[str] = []
    mentioned: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    # Largest first; ties broken by depth keys so the caption is a pure function of the scene.
    ranked = sorted(
        (o for o in occlusions if not o[0].stuff and not o[1].stuff and o[0].parent is not o[1]),
        key=lambda o: (-o[2], o[0].key, o[1].key),
    )
    for front, back, _ in ranked:
        if len(pairs) == 2:
            break
        if (front.name, back.name) in pairs or (back.name, front.name) in pairs:
            continue  # "a tree in front of a house, a house in front of a tree" reads as a contradiction
        pairs.add((front.name, back.name))
        other = "another " + back.name if back.name == front.name else _count(back.name, 1)
        clauses.append(f"{_count(front.name, 1)} in front of {other}")
        mentioned |= {front.name, back.name}
    described: dict[str, int] = {}  # instances of a class already told as on something ("two people on a bench")
    for name in THINGS:
        by_support: dict[str, list[Instance]] = {}  # per supporter class: the context world seats people on three
        for i in things(scene):
            if i.name == name and i.parent is not None:
                by_support.setdefault(i.parent.name, []).append(i)
        for sup_name, deps in by_support.items():
            clauses.append(f"{_count(name, len(deps))} on {_count(sup_name, len({id(i.parent) for i in deps}))}")
            mentioned.add(sup_name)
            described[name] = described.get(name, 0) + len(deps)
    for name in sorted(present, key=lambda n: (-present[n], THINGS.index(n))):
        rest = present[name] - described.get(name, 0)  # e.g. the people who stand
        if name not in mentioned and rest > 0:
            where = _WHERE.get(name)
            clauses.append(_count(name, rest) + (f" {where}" if where else ""))
    return ", ".join([*clauses, _setting(scene, present)])
