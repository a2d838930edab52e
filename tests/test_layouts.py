"""Stored layered layouts (smartmask.design.store), layer operations (ops), the colour picture (picture) and
`smartmask layout ...`: small canvases, CPU, fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from smartmask.conditioning.vocabulary import Vocabulary
from smartmask.design import ops
from smartmask.design.layered import DesignLayer, LayeredLayout
from smartmask.design.picture import label_colours, layout_picture, legend_picture, picture_with_legend
from smartmask.design.store import (
    LayoutNotFound,
    layout_dir,
    layout_info,
    list_layouts,
    list_versions,
    load_layout,
    save_layout,
)
from smartmask.inference.layout import LayoutError
from smartmask.lake.query import run_query

W, H = 24, 16


def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def blob(seed: int) -> np.ndarray:
    """An irregular mask: RLE and shifts must keep every pixel, not just rectangles."""
    rng = np.random.default_rng(seed)
    m = rng.random((H, W)) < 0.35
    m[:, :2] = False
    return m


def scene() -> LayeredLayout:
    return LayeredLayout(width=W, height=H, context="a dog on a lawn under the sky", layers=(
        DesignLayer(label="sky", mask_HW=box(0, 0, W, 8), is_stuff=True, origin="background"),
        DesignLayer(label="grass", mask_HW=box(0, 8, W, H), is_stuff=True, origin="background"),
        DesignLayer(label="dog", mask_HW=box(4, 6, 12, 14), box=(4.0, 6.0, 12.0, 14.0), seed=7, planner="prior",
                    score=0.75),
        DesignLayer(label="ball", mask_HW=blob(1), origin="user"),
    ), note="first try")


def masks_of(layout: LayeredLayout) -> list[np.ndarray]:
    return [lay.mask_HW for lay in layout.layers]


def same_layers(a: LayeredLayout, b: LayeredLayout) -> bool:
    return a.labels == b.labels and all(np.array_equal(x, y) for x, y in zip(masks_of(a), masks_of(b), strict=True))


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return tmp_path / "lake"


# --- the store ----------------------------------------------------------------------------------------------------


def test_round_trip_is_bit_exact_with_every_field(lake: Path) -> None:
    original = scene()
    stored = save_layout(lake, original, operation="design")
    assert stored.layout_id and len(stored.layout_id) == 12 and stored.version == 1 and stored.parent is None
    back = load_layout(lake, stored.layout_id)
    assert (back.width, back.height, back.context, back.note) == (W, H, original.context, "first try")
    assert same_layers(back, original)
    for a, b in zip(back.layers, original.layers, strict=True):
        assert (a.is_stuff, a.origin, a.box, a.seed, a.planner, a.score) == (
            b.is_stuff, b.origin, b.box, b.seed, b.planner, b.score)
        assert a.mask_HW.dtype == bool
    folder = layout_dir(lake, stored.layout_id, 1)
    picture = np.asarray(Image.open(folder / "layout.png").convert("RGB"))
    assert np.array_equal(picture, layout_picture(original, label_colours(original.labels)))
    legend = np.asarray(Image.open(folder / "layout_legend.png").convert("RGB"))
    assert legend.shape[1] > W and np.array_equal(legend[:H * 4:4, :W * 4:4], picture)  # enlarged x4
    info = json.loads((folder / "layout.json").read_text())
    assert info["operation"] == {"op": "design"} and info["parent"] is None and info["created_at"].endswith("Z")
    assert list_layouts(lake) == [stored.layout_id]


def test_edits_are_new_versions_and_old_ones_stay(lake: Path) -> None:
    v1 = save_layout(lake, scene(), operation="design")
    v2 = save_layout(lake, ops.remove(v1, 3), operation={"op": "remove", "layer": 3})
    v3 = save_layout(lake, ops.move(v2, 2, 3, 1), operation={"op": "move", "layer": 2, "dx": 3, "dy": 1})
    assert (v2.layout_id, v2.version, v2.parent) == (v1.layout_id, 2, 1)
    assert (v3.version, v3.parent) == (3, 2)
    assert list_versions(lake, v1.layout_id) == [1, 2, 3]
    assert same_layers(load_layout(lake, v1.layout_id, 1), scene())  # untouched by the later saves
    assert load_layout(lake, v1.layout_id).version == 3
    assert len(load_layout(lake, v1.layout_id, 2).layers) == 3
    assert layout_info(lake, v1.layout_id, 3)["operation"] == {"op": "move", "layer": 2, "dx": 3, "dy": 1}
    # an edit of an older version branches from it: the next number, that version as its parent
    branch = save_layout(lake, ops.reorder(load_layout(lake, v1.layout_id, 1), 3, 0), operation="reorder")
    assert (branch.version, branch.parent) == (4, 1)


def test_concurrent_saves_get_distinct_versions(lake: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    v1 = save_layout(lake, scene(), operation="design")
    with ThreadPoolExecutor(4) as pool:  # flock conflicts between open files, so threads contend like processes
        saved = list(pool.map(lambda i: save_layout(lake, ops.move(v1, 2, i + 1, 0), operation="move"), range(4)))
    assert sorted(s.version for s in saved) == [2, 3, 4, 5] and list_versions(lake, v1.layout_id) == [1, 2, 3, 4, 5]
    for s in saved:  # each version holds the edit that claimed its number
        assert np.array_equal(load_layout(lake, v1.layout_id, s.version).layers[2].mask_HW, s.layers[2].mask_HW)


def test_a_failed_save_leaves_no_version_and_no_staging(lake: Path) -> None:
    v1 = save_layout(lake, scene(), operation="design")
    # A stray file where version 2's folder goes: the publishing rename fails after the version is fully staged.
    blocker = layout_dir(lake, v1.layout_id, 2)
    blocker.write_text("not a version")
    with pytest.raises(OSError):
        save_layout(lake, ops.remove(v1, 0), operation="remove")
    assert list_versions(lake, v1.layout_id) == [1]
    assert not any((lake / "_staging" / "layouts").rglob("*.parquet"))
    blocker.unlink()
    # litter of a killed save (a half-written staging folder) is invisible, and cleared by the next save
    litter = lake / "_staging" / "layouts" / f"layout={v1.layout_id}" / "version=2.dead"
    litter.mkdir(parents=True)
    (litter / "layers.parquet").write_bytes(b"half")
    assert list_versions(lake, v1.layout_id) == [1]
    assert save_layout(lake, ops.remove(v1, 0), operation="remove").version == 2
    assert not litter.exists()


@pytest.mark.parametrize("layout_id, version, what", [("nope", None, "layout"), ("../etc", None, "layout"),
                                                       ("", None, "layout"), ("KNOWN", 9, "version")])
def test_bad_ids_and_versions_are_one_line_errors(lake: Path, layout_id, version, what) -> None:
    known = save_layout(lake, scene(), operation="design").layout_id
    with pytest.raises(LayoutNotFound) as e:
        load_layout(lake, known if layout_id == "KNOWN" else layout_id, version)
    assert e.value.what == what and "\n" not in str(e.value)


def test_pictures_take_the_vocabulary_colours_and_edits_keep_them(lake: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from smartmask.lake.paths import model_dir

    vocab = Vocabulary.build([("dog", False), ("grass", True), ("sky", True)])
    model_dir(lake, "m1").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(vocab.rows()), model_dir(lake, "m1") / "vocabulary.parquet")
    v1 = save_layout(lake, scene(), operation="design", vocabulary="model:m1")
    v2 = save_layout(lake, ops.move(v1, 3, 2, 0), operation="move")  # no vocabulary given: the parent's
    sky = tuple(int(c) for c in vocab.colours[vocab.ids["sky"]])
    for v in (1, 2):
        assert layout_info(lake, v1.layout_id, v)["vocabulary"] == "model:m1"
        picture = np.asarray(Image.open(layout_dir(lake, v1.layout_id, v) / "layout.png").convert("RGB"))
        assert tuple(int(c) for c in picture[0, 0]) == sky
    assert v2.version == 2


def test_bad_vocabulary_reference_writes_nothing(lake: Path) -> None:
    with pytest.raises(LayoutError, match="vocabulary"):
        save_layout(lake, scene(), operation="design", vocabulary="model:missing")
    assert list_layouts(lake) == []


def test_duckdb_views_list_layers_and_versions(lake: Path) -> None:
    v1 = save_layout(lake, scene(), operation="design")
    save_layout(lake, ops.reorder(v1, 2, 3), operation={"op": "reorder", "layer": 2, "to": 3})
    rows = run_query(lake, 'SELECT version, "order", label, area, visible_area, seed FROM layout_layers '
                           'WHERE layout = ? ORDER BY version, "order"', [v1.layout_id]).to_pylist()
    assert [(r["version"], r["label"]) for r in rows] == [
        ("1", "sky"), ("1", "grass"), ("1", "dog"), ("1", "ball"), ("2", "sky"), ("2", "grass"), ("2", "ball"),
        ("2", "dog")]
    dog = [r for r in rows if r["label"] == "dog"]
    assert dog[0]["area"] == dog[1]["area"] == 64 and dog[0]["seed"] == 7
    assert dog[1]["visible_area"] == 64 > dog[0]["visible_area"]  # in front of the ball once reordered
    meta = run_query(lake, "SELECT version, parent, op, n_layers FROM layouts ORDER BY version").to_pylist()
    assert meta == [{"version": "1", "parent": None, "op": "design", "n_layers": 4},
                    {"version": "2", "parent": 1, "op": "reorder", "n_layers": 4}]


def test_views_exist_on_an_empty_lake(lake: Path) -> None:
    lake.mkdir()
    assert run_query(lake, "SELECT count(*) AS n FROM layout_layers").to_pylist() == [{"n": 0}]
    assert "layout" in run_query(lake, "SELECT * FROM layouts").column_names


# --- operations ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dx, dy", [(3, 2), (-5, 0), (20, -9), (-30, 40)])  # inside, partly off, wholly off
def test_move_then_move_back_is_exact(dx: int, dy: int, lake: Path) -> None:
    original = scene()
    for i in range(len(original.layers)):
        there = ops.move(original, i, dx, dy)
        assert not np.array_equal(there.layers[i].mask_HW, original.layers[i].mask_HW)
        back = ops.move(there, i, -dx, -dy)
        assert same_layers(back, original)
        assert back.layers[i].full_mask is None  # back on the canvas: the same layer it started as
    # ... also when the off-canvas part has to survive the store in between (two versions, as the CLI does it)
    stored = save_layout(lake, ops.move(original, 3, dx, dy), operation="move")
    reloaded = load_layout(lake, stored.layout_id)
    assert same_layers(ops.move(reloaded, 3, -dx, -dy), original)


def test_moves_that_sum_to_zero_restore_and_uncover_what_was_behind() -> None:
    original = scene()
    path = [(7, 0), (0, -20), (-30, 11), (23, 9)]
    layout = original
    for dx, dy in path:
        layout = ops.move(layout, 2, dx, dy)
    assert same_layers(layout, original)
    away = ops.move(original, 2, 0, -100)  # the dog leaves the canvas: grass and sky show where it was
    owner = away.owner_HW()
    assert not away.layers[2].mask_HW.any() and away.layers[2].full_mask is not None
    assert np.all(owner[box(4, 8, 12, 14) & ~original.layers[3].mask_HW] == 1)
    assert np.all(owner[box(4, 6, 12, 8) & ~original.layers[3].mask_HW] == 0)


def test_remove_then_add_restores() -> None:
    original = scene()
    for i, layer in enumerate(original.layers):
        removed = ops.remove(original, i)
        assert len(removed.layers) == 3 and layer.label not in removed.labels
        restored = ops.add(removed, layer.label, layer.mask_HW, at=i, is_stuff=layer.is_stuff)
        assert same_layers(restored, original)
        assert [lay.is_stuff for lay in restored.layers] == [lay.is_stuff for lay in original.layers]
        assert np.array_equal(restored.owner_HW(), original.owner_HW())


def test_add_defaults_to_the_front_and_checks_its_input() -> None:
    layout = ops.add(scene(), "kite", box(0, 0, 3, 3))
    assert layout.labels[-1] == "kite" and layout.layers[-1].origin == "user"
    assert np.all(layout.owner_HW()[:3, :3] == 4)
    with pytest.raises(LayoutError, match="out of range"):
        ops.add(scene(), "kite", box(0, 0, 3, 3), at=5)
    with pytest.raises(LayoutError, match="24x16"):
        ops.add(scene(), "kite", np.ones((4, 4), bool))
    with pytest.raises(LayoutError, match="empty"):
        ops.add(scene(), "kite", np.zeros((H, W), bool))
    with pytest.raises(LayoutError, match="out of range"):
        ops.remove(scene(), 4)
    with pytest.raises(LayoutError, match="out of range"):
        ops.move(scene(), -1, 1, 1)


def test_scale_keeps_the_box_centre_and_integer_round_trips() -> None:
    original = scene()
    big = ops.scale(original, 2, 2.0)  # dog box x 4..12, y 6..14: centre (8, 10), 8x8 -> 16x16 at (0, 2)
    whole, at = big.layers[2].whole()
    assert whole.shape == (16, 16) and at == (0, 2) and whole.all()
    assert np.array_equal(big.layers[2].mask_HW, box(0, 2, 16, H))  # 2 rows off the canvas's bottom, kept
    assert same_layers(ops.scale(big, 2, 0.5), original)
    small = ops.scale(original, 2, 0.5)
    assert np.array_equal(small.layers[2].mask_HW, box(6, 8, 10, 12))
    ring = box(2, 2, 12, 12) & ~box(3, 3, 11, 11)  # shrunk to one pixel, it samples its empty middle
    with pytest.raises(LayoutError, match="no pixel"):
        ops.scale(ops.add(original, "ring", ring), 4, 0.01)
    with pytest.raises(LayoutError, match="times"):
        ops.scale(original, 0, 64)
    with pytest.raises(LayoutError, match="factor"):
        ops.scale(original, 2, 0)


def test_reorder_changes_which_layer_is_seen_not_the_masks() -> None:
    original = scene()
    overlap = original.layers[2].mask_HW & original.layers[3].mask_HW
    assert overlap.any() and np.all(original.owner_HW()[overlap] == 3)  # the ball in front of the dog
    swapped = ops.reorder(original, 3, 2)
    assert swapped.labels == ("sky", "grass", "ball", "dog")
    assert np.all(swapped.owner_HW()[overlap] == 3) and swapped.layers[3].label == "dog"
    assert np.array_equal(swapped.visible_HW(3), original.layers[2].mask_HW)  # the whole dog is seen now
    assert np.array_equal(swapped.owner_HW()[~overlap], np.where(
        original.owner_HW() == 2, 3, np.where(original.owner_HW() == 3, 2, original.owner_HW()))[~overlap])
    assert same_layers(ops.reorder(swapped, 2, 3), original)
    assert ops.reorder(original, 0, 3).labels == ("grass", "dog", "ball", "sky")  # sky in front of everything


def test_operations_leave_their_input_alone() -> None:
    original = scene()
    before = [m.copy() for m in masks_of(original)]
    ops.move(original, 2, 5, 5)
    ops.scale(original, 2, 3)
    ops.remove(original, 0)
    assert all(np.array_equal(a, b) for a, b in zip(before, masks_of(original), strict=True))


# --- the picture --------------------------------------------------------------------------------------------------


def test_picture_paints_visible_labels_in_vocabulary_colours() -> None:
    layout = scene()
    vocab = Vocabulary.build([("dog", False), ("grass", True), ("sky", True)])
    colours = label_colours(layout.labels, vocab)
    assert colours["dog"] == tuple(int(v) for v in vocab.colours[vocab.ids["dog"]])
    assert len(set(colours.values())) == 4  # "ball" (not in the vocabulary) gets a colour of its own
    pic = layout_picture(layout, colours)
    assert pic.shape == (H, W, 3) and pic.dtype == np.uint8
    owner = layout.owner_HW()
    for i, lay in enumerate(layout.layers):
        assert np.all(pic[owner == i] == colours[lay.label])
    empty = LayeredLayout(width=W, height=H, context="", layers=(layout.layers[2],))
    assert np.all(layout_picture(empty)[~layout.layers[2].mask_HW] == 0)  # no layer: black


def test_fallback_palette_is_stable_and_distinct() -> None:
    labels = [f"thing{i}" for i in range(30)]
    a, b = label_colours(labels), label_colours(reversed(labels))
    assert a == b and len(set(a.values())) == 30
    assert all(c != (0, 0, 0) for c in a.values())
    assert label_colours(["unknown"])["unknown"] == (128, 128, 128)


def test_legend_has_a_row_per_layer_with_its_colour() -> None:
    layout = scene()
    colours = label_colours(layout.labels)
    legend = legend_picture(layout, colours)
    assert legend.shape[0] >= 4 * 16
    for row, i in enumerate(reversed(range(4))):  # front-most first
        swatch = legend[4 + row * 16 + 5, 4 + 5]
        assert tuple(int(v) for v in swatch) == colours[layout.labels[i]]
    both = picture_with_legend(layout, colours)
    zoom = legend.shape[0] // H  # a 16-row canvas beside a 4-row legend: enlarged by pixel repeat
    assert zoom == 4 and np.array_equal(both[:H * zoom:zoom, :W * zoom:zoom], layout_picture(layout, colours))
    assert np.array_equal(both[1:H * zoom:zoom, 3:W * zoom:zoom], layout_picture(layout, colours))


# --- the CLI ------------------------------------------------------------------------------------------------------


def cli(*args: str):
    from flows.cli import app

    return CliRunner().invoke(app, ["layout", *map(str, args)])


def last(result) -> str:
    return result.stdout.strip().splitlines()[-1]


def test_cli_edits_make_versions_and_move_back_is_exact(lake: Path, tmp_path: Path) -> None:
    lid = save_layout(lake, scene(), operation="design").layout_id
    r = cli("move", lid, "--layer", 2, "--dx", 15, "--dy", -4, "--lake", lake)
    assert r.exit_code == 0, r.output
    assert last(r) == f"{lid}@2"
    r = cli("move", lid, "--layer", 2, "--dx", -15, "--dy", 4, "--lake", lake)
    assert last(r) == f"{lid}@3"
    assert same_layers(load_layout(lake, lid, 3), scene())
    r = cli("remove", lid, "--layer", 3, "--lake", lake)
    assert last(r) == f"{lid}@4"
    png = tmp_path / "ball.png"
    Image.fromarray(blob(1).astype(np.uint8) * 255).save(png)
    r = cli("add", lid, "--label", "ball", "--mask", png, "--at", 3, "--lake", lake)
    assert r.exit_code == 0, r.output
    assert last(r) == f"{lid}@5"
    assert same_layers(load_layout(lake, lid, 5), scene())
    assert last(cli("reorder", lid, "--layer", 0, "--to", 3, "--lake", lake)) == f"{lid}@6"
    assert last(cli("scale", lid, "--layer", 1, "--factor", 0.5, "--version", 1, "--lake", lake)) == f"{lid}@7"
    assert load_layout(lake, lid, 7).parent == 1
    assert layout_info(lake, lid, 6)["operation"] == {"op": "reorder", "layer": 0, "to": 3, "from": 5}
    r = cli("show", f"{lid}@6", "--lake", lake)
    assert r.exit_code == 0, r.output
    table = r.stdout.split("label", 1)[1]  # the rows, back to front
    assert f"{lid}@6" in r.stdout and table.index("grass") < table.index("dog") < table.index("sky")
    assert "seed 7" in r.stdout and "layout_legend.png" in last(r)


@pytest.mark.parametrize("args, flag", [
    (["move", "ID", "--layer", "4", "--dx", "1"], "--layer"),
    (["move", "ID", "--layer", "1", "--dx", "one"], "--dx"),
    (["move", "ID", "--layer", "1", "--dz", "1"], "--dz"),
    (["remove", "ID"], "--layer"),
    (["scale", "ID", "--layer", "2", "--factor", "100"], "--factor"),
    (["scale", "ID", "--layer", "2", "--factor", "-1"], "--factor"),
    (["reorder", "ID", "--layer", "1", "--to", "9"], "--to"),
    (["add", "ID", "--label", "kite", "--mask", "MISSING"], "--mask"),
    (["add", "ID", "--label", " ", "--mask", "MISSING"], "--label"),
    (["show", "ID", "--version", "8"], "--version"),
    (["show", "nothere"], "LAYOUT_ID"),
    (["render", "ID", "--renderer", "synthetic", "--seed", "-3"], "--seed"),
])
def test_cli_bad_input_is_one_line_naming_the_flag(lake: Path, tmp_path: Path, args, flag) -> None:
    lid = save_layout(lake, scene(), operation="design").layout_id
    args = [lid if a == "ID" else str(tmp_path / "missing.png") if a == "MISSING" else a for a in args]
    r = cli(*args, "--lake", lake)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}"), lines
    assert list_versions(lake, lid) == [1]  # nothing was written


def test_cli_render_of_weights_that_are_not_there_is_one_line(lake: Path) -> None:
    lid = save_layout(lake, scene(), operation="design").layout_id
    r = cli("render", lid, "--renderer", "controlnet-seg:nobody/not-cached+nobody/not-cached-seg", "--lake", lake)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: --renderer"), r.output


def test_cli_render_writes_the_image(lake: Path, tmp_path: Path) -> None:
    lid = save_layout(lake, scene(), operation="design").layout_id
    r = cli("render", lid, "--renderer", "synthetic", "--seed", 3, "--out", tmp_path / "out", "--lake", lake)
    assert r.exit_code == 0, r.output
    out = Path(last(r))
    assert out == (tmp_path / "out").resolve()
    image = np.asarray(Image.open(out / "image.png"))
    assert image.shape == (H, W, 3)
    assert json.loads((out / "render.json").read_text())["layout"] == f"{lid}@1"
    r = cli("render", lid, "--renderer", "nonsense", "--lake", lake)
    assert r.exit_code == 2 and r.stderr.startswith("error: --renderer")
