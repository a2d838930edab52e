"""The synthetic amodal world: determinism, COCOA schema, mask/order consistency, support rules, captions."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smartmask import masks
from smartmask.config import SynthConfig
from smartmask.synth import generate, render, world
from smartmask.synth.shapes import SEATED_HIP, SHAPES, clip_to_image, finish

TINY = SynthConfig.small()
N_SCENES = 50


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    path = generate(out, N_SCENES, seed=7, config=TINY, workers=1)
    return path, json.loads(path.read_text())


@pytest.fixture(scope="module")
def decoded(dataset):
    """Per annotation: (regions, amodal masks rasterised from the JSON polygons, as an ingest would)."""
    _, data = dataset
    out = []
    for ann in data["annotations"]:
        amodal = [masks.decode(masks.from_polygons([r["segmentation"]], TINY.height, TINY.width)).astype(bool)
                  for r in ann["regions"]]  # fmt: skip
        out.append((ann, amodal))
    return out


def _split(region: dict, amodal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if "visible_mask" in region:
        return masks.decode(region["visible_mask"]).astype(bool), masks.decode(
            region["invisible_mask"]
        ).astype(bool)
    return amodal, np.zeros_like(amodal)


def _bottom_row(mask: np.ndarray) -> tuple[int, np.ndarray]:
    row = int(np.flatnonzero(mask.any(1))[-1])
    return row, np.flatnonzero(mask[row])


# ----------------------------------------------------------------------------------------------- determinism
def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_is_byte_identical_across_worker_counts(tmp_path):
    one = generate(tmp_path / "one", 10, seed=3, config=TINY, workers=1).parent
    two = generate(tmp_path / "two", 10, seed=3, config=TINY, workers=2).parent
    files_one, files_two = _tree_bytes(one), _tree_bytes(two)
    assert sorted(files_one) == ["annotations.json"] + [f"images/{i:012d}.png" for i in range(1, 11)]
    assert files_one == files_two  # no temp files left behind either


def test_different_seed_differs(tmp_path):
    a = generate(tmp_path / "a", 3, seed=1, config=TINY, workers=1)
    b = generate(tmp_path / "b", 3, seed=2, config=TINY, workers=1)
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ja["annotations"] != jb["annotations"]
    img = "images/000000000001.png"
    assert (a.parent / img).read_bytes() != (b.parent / img).read_bytes()


def test_scene_is_a_function_of_seed_and_index_only(tmp_path):
    """Scene k is the same whether 2 or 5 scenes are generated: the per-scene rng is [seed, index]."""
    short = json.loads(generate(tmp_path / "s", 2, seed=9, config=TINY, workers=1).read_text())
    long = json.loads(generate(tmp_path / "l", 5, seed=9, config=TINY, workers=1).read_text())
    assert short["annotations"] == long["annotations"][:2]
    assert short["images"] == long["images"][:2]


# ----------------------------------------------------------------------------------------------- schema
def test_cocoa_schema(dataset):
    path, data = dataset
    assert data["info"]["seed"] == 7 and data["info"]["config"]["width"] == TINY.width
    assert [im["id"] for im in data["images"]] == list(range(1, N_SCENES + 1))
    assert [a["image_id"] for a in data["annotations"]] == list(range(1, N_SCENES + 1))
    for im in data["images"]:
        assert im["file_name"] == f"{im['id']:012d}.png" and im["scene"] in ("outdoor", "indoor")
        with Image.open(path.parent / "images" / im["file_name"]) as png:
            assert png.size == (im["width"], im["height"]) == (TINY.width, TINY.height) and png.mode == "RGB"
    for ann in data["annotations"]:
        assert ann["author"] == "smartmask-synth" and ann["url"] == "" and ann["size"] == len(ann["regions"])
        assert re.fullmatch(r"(\d+-\d+(,\d+-\d+)*)?", ann["depth_constraint"])
        for r in ann["regions"]:
            seg = r["segmentation"]
            assert isinstance(seg, list) and len(seg) >= 6 and len(seg) % 2 == 0
            assert all(isinstance(v, float) and round(v, 2) == v for v in seg)
            assert r["isStuff"] == int(r["name"] in world.STUFF)
            assert r["name"] in world.STUFF or r["name"] in world.THINGS
            occluded = r["occlude_rate"] > 0
            assert ("visible_mask" in r) == ("invisible_mask" in r) == occluded
            if occluded:
                assert r["visible_mask"]["size"] == [TINY.height, TINY.width]
                assert isinstance(r["visible_mask"]["counts"], str)


def test_vocabulary_coverage(dataset):
    _, data = dataset
    names = {r["name"] for a in data["annotations"] for r in a["regions"]}
    assert len(names & set(world.THINGS)) >= 12
    assert len(names & set(world.STUFF)) >= 3
    assert {im["scene"] for im in data["images"]} == {"outdoor", "indoor"}


def test_templates_are_single_outlines():
    assert len(world.THINGS) >= 12 and len(world.STUFF) >= 3
    assert set(SHAPES) == set(world.THINGS) == set(world.SUPPORT) == set(world.SPECS)
    for shape in SHAPES.values():
        for v in shape.variants:
            assert v.ndim == 2 and v.shape[1] == 2 and len(v) >= 3
            assert np.allclose(v.min(0), 0) and np.allclose(v.max(0), 1)


def test_clip_keeps_one_outline_inside_the_frame():
    poly = np.array([[-10.0, 5.0], [30.0, -8.0], [50.0, 40.0], [5.0, 70.0]])
    clipped = finish(poly, 40, 60)
    assert clipped[:, 0].min() >= 0 and clipped[:, 0].max() <= 40
    assert clipped[:, 1].min() >= 0 and clipped[:, 1].max() <= 60
    inside = np.array([[1.0, 1.0], [3.0, 1.0], [2.0, 3.0]])
    assert clip_to_image(inside, 10, 10) is inside


# ----------------------------------------------------------------------------------------------- masks & order
def test_masks_match_the_polygons_exactly(decoded):
    for ann, amodal in decoded:
        for r, m in zip(ann["regions"], amodal, strict=True):
            assert m.any(), r["name"]
            assert r["area"] == float(m.sum())
            vis, inv = _split(r, m)
            assert not (vis & inv).any()
            assert np.array_equal(vis | inv, m)  # visible + invisible == the re-rasterised amodal mask
            if "visible_mask" in r:  # canonical RLE: the same string pycocotools makes from the pixels
                assert r["visible_mask"] == masks.encode(vis) and r["invisible_mask"] == masks.encode(inv)
            assert r["occlude_rate"] == pytest.approx(inv.sum() / m.sum(), abs=1e-6)
            if not r["isStuff"]:
                assert vis.sum() >= TINY.min_visible_fraction * m.sum()


def test_order_is_front_to_back_and_matches_painting(decoded):
    for ann, amodal in decoded:
        regions = ann["regions"]
        n = len(regions)
        assert [r["order"] for r in regions] == list(range(1, n + 1))  # listed front-most first
        assert regions[0]["occlude_rate"] == 0
        # Painting amodal masks back to front (descending order) gives the same label map as the visible masks.
        painted = np.full((TINY.height, TINY.width), -1)
        for k in range(n - 1, -1, -1):
            painted[amodal[k]] = k
        from_visible = np.full_like(painted, -1)
        for k, (r, m) in enumerate(zip(regions, amodal, strict=True)):
            vis, _ = _split(r, m)
            assert (from_visible[vis] == -1).all()  # visible masks never overlap
            from_visible[vis] = k
        assert np.array_equal(painted, from_visible)
        assert (painted >= 0).all()  # stuff covers the whole frame


def test_depth_constraints_agree_with_order_and_explain_every_hidden_pixel(decoded):
    for ann, amodal in decoded:
        regions = ann["regions"]
        pairs = [tuple(map(int, p.split("-"))) for p in ann["depth_constraint"].split(",") if p]
        assert len(set(pairs)) == len(pairs)
        split = [_split(r, m) for r, m in zip(regions, amodal, strict=True)]
        for a, b in pairs:
            assert regions[a - 1]["order"] < regions[b - 1]["order"]
            assert (split[a - 1][0] & amodal[b - 1]).any()  # a overlaps b and is visible in the overlap
        for b, (_, inv) in enumerate(split, start=1):
            if (
                inv.any()
            ):  # every hidden pixel of b is visible pixels of some region constrained in front of it
                cover = np.zeros_like(inv)
                for a, bb in pairs:
                    if bb == b:
                        cover |= split[a - 1][0]
                assert not (inv & ~cover).any()


# ----------------------------------------------------------------------------------------------- world rules
def test_support_rules_hold_geometrically(decoded):
    """Every thing's contact row lies on an allowed supporter's amodal mask (boats on water, lamps on a
    table's top, people on grass/floor and never in the water); sky things inside the sky, wall things on it."""
    checked = {"boat": 0, "table_top": 0}
    for ann, amodal in decoded:
        regions = ann["regions"]
        by_name: dict[str, list[int]] = {}
        for k, r in enumerate(regions):
            by_name.setdefault(r["name"], []).append(k)
        for k, r in enumerate(regions):
            if r["isStuff"]:
                continue
            allowed = world.SUPPORT[r["name"]]
            if allowed[0] in ("sky", "wall"):
                assert not (amodal[k] & ~amodal[by_name[allowed[0]][0]]).any(), r["name"]
                continue
            row, cols = _bottom_row(amodal[k])
            on = [s for name in allowed for s in by_name.get(name, []) if amodal[s][row, cols].all()]
            assert on, (ann["image_id"], r["name"])
            if "table" in allowed:
                # ...on the table's TOP: its bottom row is within the top slab's first rows, and it is in front.
                table_top = min(int(np.flatnonzero(amodal[s].any(1))[0]) for s in on)
                assert row - table_top <= 3
                assert any(regions[s]["order"] > r["order"] for s in on)
                checked["table_top"] += 1
            if allowed == ("water",):
                checked["boat"] += 1
            elif "water" in by_name:
                assert not amodal[by_name["water"][0]][row, cols].any(), (ann["image_id"], r["name"])
    assert checked["boat"] > 0 and checked["table_top"] > 0  # the rules were actually exercised


def test_nearer_ground_things_are_in_front(decoded):
    """Perspective: of two overlapping things standing on the ground plane, the lower foot is in front."""
    compared = 0
    for ann, amodal in decoded:
        regions = ann["regions"]
        ground = [k for k, r in enumerate(regions)
                  if not r["isStuff"] and set(world.SUPPORT[r["name"]]) & {"grass", "floor", "water"}]  # fmt: skip
        feet = {k: _bottom_row(amodal[k])[0] for k in ground}
        for i in ground:
            for j in ground:
                if feet[i] > feet[j] + 1 and (amodal[i] & amodal[j]).any():
                    assert regions[i]["order"] < regions[j]["order"]
                    compared += 1
    assert compared > 0


def test_caption_mentions_every_class_and_the_relations(dataset):
    _, data = dataset
    seen_front = seen_on = 0
    for im, ann in zip(data["images"], data["annotations"], strict=True):
        cap = im["caption"]
        names = [r["name"] for r in ann["regions"]]
        for name in set(names) - set(world.STUFF):
            assert re.search(rf"\b({name}|{world.PLURAL[name]})\b", cap), (name, cap)
        setting = {"outdoor": ("in a park", "by a lake"), "indoor": ("room",)}[im["scene"]]
        assert any(s in cap for s in setting)
        if "water" in names:
            assert "by a lake" in cap
        for dep in ("lamp", "vase", "bottle"):
            if dep in names:
                assert re.search(rf"\b{dep}s? on (a|two|three|four|five|many) tables?\b", cap), cap
                seen_on += 1
        # A depth relation is mentioned whenever one thing visibly occludes another.
        things = {k + 1 for k, r in enumerate(ann["regions"]) if not r["isStuff"]}
        pairs = [tuple(map(int, p.split("-"))) for p in ann["depth_constraint"].split(",") if p]
        if any(a in things and b in things and not _stands_on(ann, a, b) for a, b in pairs):
            assert " in front of " in cap, cap
            seen_front += 1
    assert seen_front > 0 and seen_on > 0


def _stands_on(ann: dict, a: int, b: int) -> bool:
    """Support pairs (a lamp over its table) are captioned as "on", not "in front of"."""
    return world.SUPPORT[ann["regions"][a - 1]["name"]] == (ann["regions"][b - 1]["name"],)


# ----------------------------------------------------------------------------------------------- rendering
def test_rendering_follows_the_visible_masks(dataset, decoded):
    """Each visible region is drawn in one hue family: its pixels are near its palette colour x tint x shade,
    so the picture, the visible masks and the order agree (checked through the mean colour per region)."""
    path, data = dataset
    for im, (ann, amodal) in list(zip(data["images"], decoded, strict=True))[:10]:
        rgb = np.asarray(Image.open(path.parent / "images" / im["file_name"])).astype(float)
        for r, m in zip(ann["regions"], amodal, strict=True):
            vis, _ = _split(r, m)
            if vis.sum() < 30:
                continue
            mean = rgb[vis].mean(0)
            base = np.asarray(render.PALETTE[r["name"]], float)
            cos = mean @ base / (np.linalg.norm(mean) * np.linalg.norm(base))
            assert cos > 0.93, (r["name"], mean, base)


def test_png_writer_and_window_decoder_are_exact():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(render.png_bytes(image)))), image)
    H, W = 50, 70
    for _ in range(200):
        pts = np.clip(np.round(rng.uniform(-5, 75, (int(rng.integers(3, 12)), 2)), 2), 0, [W, H])
        rle = masks.from_polygons([pts.ravel().tolist()], H, W)
        x, y, w, h = (int(v) for v in masks.bbox([rle])[0])
        if w and h:
            full = masks.decode(rle).astype(bool)
            assert np.array_equal(render.decode_crop(rle, (y, y + h, x, x + w)), full[y : y + h, x : x + w])


def test_default_config_density(tmp_path):
    """At the default size, instances per image (stuff included) average close to the paper's ~22."""
    data = json.loads(generate(tmp_path, 24, seed=0, workers=1).read_text())
    sizes = [a["size"] for a in data["annotations"]]
    assert 18 <= np.mean(sizes) <= 26
    things = [sum(not r["isStuff"] for r in a["regions"]) for a in data["annotations"]]
    assert max(things) <= SynthConfig().max_things


def test_library_never_imports_orchestration():
    src = Path(render.__file__).parent
    for py in src.glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+(prefect|ray)\b", py.read_text(), re.M), py


def test_zero_scenes_is_valid_and_bad_count_rejected(tmp_path):
    data = json.loads(generate(tmp_path, 0, seed=1, config=TINY, workers=2).read_text())
    assert data["images"] == [] and data["annotations"] == []
    with pytest.raises(ValueError):
        generate(tmp_path, -1, seed=1, config=TINY)


# ----------------------------------------------------------------------------------------- the context world


def _scenes(world_name: str, n: int = 60) -> list:
    cfg = SynthConfig(world=world_name)
    return [world.sample_scene(np.random.default_rng([5, i]), cfg) for i in range(n)]


def test_world_is_classic_by_default_and_checked():
    assert SynthConfig().world == "classic"
    with pytest.raises(ValueError, match="unknown synthetic world"):
        SynthConfig(world="fancy")


def test_context_world_seats_people_on_what_is_beneath_them():
    seated = standing_with_seat = 0
    for scene in _scenes("context"):
        for p in (i for i in world.things(scene) if i.name == "person"):
            if p.parent is None:
                standing_with_seat += any(i.name in world.SEAT_LINE for i in scene.instances)
                continue
            seat = p.parent
            assert seat.name in world.SEAT_LINE
            x0, y0, x1, y1 = seat.box
            assert p.box[3] == pytest.approx(y1)  # feet on the seat's ground line
            hip = p.box[3] - (1 - SEATED_HIP) * (p.box[3] - p.box[1])
            assert hip == pytest.approx(y0 + world.SEAT_LINE[seat.name] * (y1 - y0))  # hips on the seat line
            assert x0 <= (p.box[0] + p.box[2]) / 2 <= x1
            assert p.key[:3] == (5, seat.key[1], seat.key[2])  # drawn just in front of its seat
            seated += 1
    assert seated >= 10 and standing_with_seat >= 3  # both poses occur where seats are
    for scene in _scenes("classic", 30):  # the classic world never seats anyone
        assert all(i.parent is None for i in world.things(scene) if i.name == "person")


def test_context_world_stands_dogs_beside_a_person_facing_them():
    dogs = 0
    for scene in _scenes("context"):
        for d in (i for i in world.things(scene) if i.name == "dog"):
            fy, w = d.box[3], d.box[2] - d.box[0]
            # Beside a person: same foot row, the nearer edge 2-10% of the dog's width from the person's legs, and
            # facing them (drawn facing right, so flipped exactly when the person is on the left).
            mates = []
            for p in (i for i in scene.instances if i.name == "person" and i.box[3] == pytest.approx(fy)):
                legs = p.poly[p.poly[:, 1] >= fy - (d.box[3] - d.box[1])][:, 0]
                if 0.02 * w - 1e-6 <= legs.min() - d.box[2] <= 0.1 * w + 1e-6:
                    mates.append(False)  # the dog stands left of the person: faces right
                if 0.02 * w - 1e-6 <= d.box[0] - legs.max() <= 0.1 * w + 1e-6:
                    mates.append(True)
            assert d.flip in mates, (mates, d.box)
            dogs += 1
    assert dogs >= 20


def test_context_world_stands_lamps_on_tables_or_on_the_floor():
    on_table = on_floor = 0
    for scene in _scenes("context", 120):
        for lamp in (i for i in world.things(scene) if i.name == "lamp"):
            if lamp.parent is not None:
                assert lamp.parent.name == "table"
                on_table += 1
                continue
            assert scene.kind == "indoor" and lamp.box[3] > scene.ground_top  # on the floor, in front of the wall
            ppm = (lamp.box[3] - scene.horizon) / scene.cam_h  # a floor lamp is ~1.6 m tall at its depth
            assert 0.85 * world.FLOOR_LAMP_M * ppm <= lamp.box[3] - lamp.box[1] <= 1.15 * world.FLOOR_LAMP_M * ppm
            on_floor += 1
    assert on_table >= 10 and on_floor >= 10
    for scene in _scenes("classic", 60):  # the classic world keeps every lamp on a table
        assert all(i.parent is not None for i in world.things(scene) if i.name == "lamp")


def test_classic_world_scenes_are_unchanged_by_the_context_rules():
    # The same seed gives the same classic scenes whether or not `world` is spelled out.
    a = [world.sample_scene(np.random.default_rng([5, i]), SynthConfig()) for i in range(10)]
    b = _scenes("classic", 10)
    for sa, sb in zip(a, b, strict=True):
        assert [i.name for i in sa.instances] == [i.name for i in sb.instances]
        for ia, ib in zip(sa.instances, sb.instances, strict=True):
            np.testing.assert_array_equal(ia.poly, ib.poly)


def test_context_world_card_records_its_rules(tmp_path):
    from smartmask.config import RebuildConfig
    from smartmask.rebuild import rebuild

    cfg = SynthConfig(width=160, height=120, min_things=4, max_things=8, world="context")
    ann = generate(tmp_path / "w", 8, seed=0, config=cfg, workers=1)
    assert json.loads(ann.read_text())["info"]["context_rules"] == list(world.CONTEXT_RULES)
    m = rebuild(f"cocoa:{ann}", tmp_path / "w" / "images", "ctx", tmp_path / "lake", RebuildConfig.for_tests())
    card = (tmp_path / "lake" / "datasets" / "name=ctx" / f"version={m['version']}" / "CARD.md").read_text()
    assert "## Source notes" in card and "sits on a bench, chair or sofa" in card


def test_context_captions_tell_who_sits_on_what_and_who_stands():
    checked = 0
    for scene in _scenes("context"):
        people = [i for i in world.things(scene) if i.name == "person"]
        seated = [p for p in people if p.parent is not None]
        if not seated:
            continue
        clauses = world.caption(scene, []).split(", ")  # no occlusion clauses: every class gets its count clause
        by_seat: dict[str, list] = {}
        for p in seated:
            by_seat.setdefault(p.parent.name, []).append(p)
        for seat, ps in by_seat.items():
            assert f"{world._count('person', len(ps))} on {world._count(seat, len({id(p.parent) for p in ps}))}" \
                in clauses, (clauses, seat)
        standing = len(people) - len(seated)
        assert (world._count("person", standing) in clauses) == (standing > 0), clauses
        checked += 1
    assert checked >= 10
