"""Layered layouts in the lake, versioned: every save is a new, immutable version beside the old ones.

    <lake>/layouts/layout=<id>/version=<n>/
        layers.parquet      one row per layer, back to front (schema `LAYOUT_LAYERS`; the amodal masks as COCO RLE)
        layout.json         width, height, context, parent, note, operation, vocabulary, created_at
        layout.parquet      the same as one row (schema `LAYOUTS`), for the `layouts` DuckDB view
        layout.png          the colour picture (visible labels; `smartmask.design.picture`)
        layout_legend.png   the picture with its legend beside it

    save_layout(lake, layout, operation="design")      -> the stored layout (layout_id, version set)
    load_layout(lake, layout_id)                        -> its newest version (or version=N)
    list_versions(lake, layout_id)                      -> [1, 2, ...]

A version is written in full under `<lake>/_staging/layouts/` and renamed into place, so a reader sees all of it or
nothing, and a killed save leaves only staging litter (removed by the next save of that layout). Version numbers
are allocated under the layout's lock (`smartmask.lake.locks`, kind "layout"): two concurrent saves of one layout
get two numbers, never one. Both keep their own parent: versions form a tree, "newest" is the highest number.

A new layout (no `layout_id`) gets 12 random hex digits as its id: layouts are made by people and planners, not
derived from content, so two identical designs are still two layouts.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from smartmask import masks
from smartmask.design.layered import DesignLayer, LayeredLayout
from smartmask.design.picture import label_colours, layout_picture, picture_with_legend, vocabulary_for
from smartmask.inference.layout import LayoutError
from smartmask.lake.io import rows_to_table, utc_stamp, write_json_atomic, write_parquet_atomic
from smartmask.lake.locks import lake_lock
from smartmask.lake.schemas import LAYOUT_LAYERS, LAYOUTS

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class LayoutNotFound(LayoutError):
    """A layout id or version that is not in the lake (or is not a valid id). `what`: "layout" or "version"."""

    def __init__(self, message: str, what: str = "layout"):
        super().__init__(message)
        self.what = what


def layouts_root(lake: Path) -> Path:
    return Path(lake) / "layouts"


def layout_dir(lake: Path, layout_id: str, version: int | None = None) -> Path:
    d = layouts_root(lake) / f"layout={layout_id}"
    return d if version is None else d / f"version={int(version)}"


def check_id(layout_id: str) -> str:
    if not isinstance(layout_id, str) or not _ID.match(layout_id):
        raise LayoutNotFound(f"{layout_id!r} is not a layout id (letters, digits, - and _, at most 64)")
    return layout_id


def list_versions(lake: str | os.PathLike, layout_id: str) -> list[int]:
    """The stored versions of `layout_id`, ascending; [] when there is none."""
    d = layout_dir(Path(lake), check_id(layout_id))
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = re.fullmatch(r"version=([1-9][0-9]*)", p.name)
        if m and p.is_dir():
            out.append(int(m.group(1)))
    return sorted(out)


def list_layouts(lake: str | os.PathLike) -> list[str]:
    """Every layout id with at least one stored version, sorted."""
    root = layouts_root(Path(lake))
    ids = [p.name.removeprefix("layout=") for p in root.glob("layout=*")] if root.is_dir() else []
    return sorted(i for i in ids if _ID.match(i) and list_versions(lake, i))


def _resolve(lake: Path, layout_id: str, version: int | None) -> int:
    versions = list_versions(lake, layout_id)
    if not versions:
        raise LayoutNotFound(f"layout {layout_id!r} is not in {lake}")
    if version is None:
        return versions[-1]
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or int(version) not in versions:
        raise LayoutNotFound(f"layout {layout_id!r} has no version {version!r} (it has {_span(versions)})", "version")
    return int(version)


def _span(versions: list[int]) -> str:
    return f"1..{versions[-1]}" if versions == list(range(1, versions[-1] + 1)) else ", ".join(map(str, versions))


def layout_info(lake: str | os.PathLike, layout_id: str, version: int | None = None) -> dict[str, Any]:
    """A version's `layout.json` (newest by default), with `layout_id`, `version` and `path` added."""
    lake = Path(lake)
    v = _resolve(lake, check_id(layout_id), version)
    d = layout_dir(lake, layout_id, v)
    info = json.loads((d / "layout.json").read_text())
    return {**info, "layout_id": layout_id, "version": v, "path": str(d)}


def load_layout(lake: str | os.PathLike, layout_id: str, version: int | None = None) -> LayeredLayout:
    """Version `version` (default: the newest) of `layout_id`, masks bit-exact as saved."""
    info = layout_info(lake, layout_id, version)
    H, W = int(info["height"]), int(info["width"])
    rows = pq.read_table(Path(info["path"]) / "layers.parquet").to_pylist()
    rows.sort(key=lambda r: r["order"])
    layers = []
    for r in rows:
        if (r["height"], r["width"]) != (H, W):
            raise LayoutError(f"layout {layout_id}@{info['version']}: layer {r['order']} is {r['width']}x"
                              f"{r['height']}, the layout {W}x{H} (a damaged version)")
        box = None if r["box_x0"] is None else (r["box_x0"], r["box_y0"], r["box_x1"], r["box_y1"])
        full, at = None, (0, 0)
        if r["full_rle"] is not None:
            full = masks.decode({"size": [r["full_height"], r["full_width"]], "counts": r["full_rle"]}).astype(bool)
            at = (int(r["full_x"]), int(r["full_y"]))
        layers.append(DesignLayer(
            label=r["label"], mask_HW=masks.decode({"size": [H, W], "counts": r["rle"]}).astype(bool),
            is_stuff=bool(r["is_stuff"]), origin=r["origin"], box=box, seed=r["seed"], planner=r["planner"],
            score=r["score"], full_mask=full, full_at=at))
    return LayeredLayout(width=W, height=H, context=info.get("context", ""), layers=tuple(layers),
                         layout_id=layout_id, version=info["version"], parent=info.get("parent"),
                         note=info.get("note", ""))


def _operation(operation: str | Mapping[str, Any]) -> dict[str, Any]:
    op = {"op": operation} if isinstance(operation, str) else dict(operation)
    if not isinstance(op.get("op"), str) or not op["op"]:
        raise LayoutError(f"an operation needs a name: a string or a mapping with 'op', got {operation!r}")
    return op


def _layer_rows(layout: LayeredLayout, layout_id: str, version: int) -> list[dict]:
    owner = layout.owner_HW()
    rows = []
    for i, layer in enumerate(layout.layers):
        box = layer.box if layer.box is not None else (None,) * 4
        full = layer.full_mask
        rows.append({
            "layout_id": layout_id, "version": version, "order": i, "label": layer.label,
            "is_stuff": bool(layer.is_stuff), "origin": layer.origin, "rle": masks.encode(layer.mask_HW)["counts"],
            "height": layout.height, "width": layout.width, "area": int(layer.mask_HW.sum()),
            "visible_area": int(np.count_nonzero(owner == i)),
            "box_x0": box[0], "box_y0": box[1], "box_x1": box[2], "box_y1": box[3],
            "seed": layer.seed, "planner": layer.planner, "score": layer.score,
            "full_rle": None if full is None else masks.encode(full)["counts"],
            "full_x": None if full is None else layer.full_at[0], "full_y": None if full is None else layer.full_at[1],
            "full_height": None if full is None else full.shape[0], "full_width": None if full is None else full.shape[1],
        })
    return rows


def _write_version(lake: Path, folder: Path, layout: LayeredLayout, info: dict) -> None:
    from smartmask.inference.images import save_png

    folder.mkdir(parents=True)
    lid, v = info["layout_id"], info["version"]
    write_parquet_atomic(rows_to_table(_layer_rows(layout, lid, v), LAYOUT_LAYERS), folder / "layers.parquet")
    row = {**{k: info[k] for k in ("layout_id", "version", "width", "height", "context", "parent", "note",
                                   "vocabulary", "created_at")},
           "op": info["operation"]["op"], "n_layers": len(layout.layers),
           "operation": json.dumps(info["operation"], sort_keys=True, default=str)}
    write_parquet_atomic(rows_to_table([row], LAYOUTS), folder / "layout.parquet")
    write_json_atomic(info, folder / "layout.json")
    colours = label_colours(layout.labels, vocabulary_for(lake, info["vocabulary"]))
    save_png(folder / "layout.png", layout_picture(layout, colours))
    save_png(folder / "layout_legend.png", picture_with_legend(layout, colours))


def save_layout(lake: str | os.PathLike, layout: LayeredLayout, *, operation: str | Mapping[str, Any],
                vocabulary: str | None = None, wait_s: float = 30.0) -> LayeredLayout:
    """Store `layout` as the next version of its layout (a new layout with a fresh id when `layout_id` is None)
    and return it with `layout_id`, `version` and `parent` set. `operation`: what made it ("design", or e.g.
    {"op": "move", "layer": 2, "dx": 5, "dy": 0}). `vocabulary`: where the picture's colours come from
    (`model:<version>` | `dataset:<name>[@<version>]`); None keeps the parent version's. `LockHeld` when another
    save of this layout holds its lock for longer than `wait_s`."""
    lake = Path(lake).resolve()
    op = _operation(operation)
    if vocabulary is not None:
        vocabulary_for(lake, vocabulary)  # a bad reference fails before anything is written
    new = layout.layout_id is None
    layout_id = secrets.token_hex(6) if new else check_id(layout.layout_id)
    with lake_lock(lake, "layout", layout_id, wait_s=wait_s, what=f"layout {layout_id}"):
        versions = list_versions(lake, layout_id)
        parent = layout.version if not new and layout.version in versions else None
        if vocabulary is None and parent is not None:
            vocabulary = json.loads((layout_dir(lake, layout_id, parent) / "layout.json").read_text()).get(
                "vocabulary")
        version = (versions[-1] if versions else 0) + 1
        info = {"layout_id": layout_id, "version": version, "width": layout.width, "height": layout.height,
                "context": layout.context, "parent": parent, "note": layout.note, "operation": op,
                "vocabulary": vocabulary, "n_layers": len(layout.layers), "created_at": utc_stamp()}
        staging_root = lake / "_staging" / "layouts" / f"layout={layout_id}"
        # We hold the layout's lock: anything left in its staging is a dead save's litter.
        shutil.rmtree(staging_root, ignore_errors=True)
        staging = staging_root / f"version={version}.{secrets.token_hex(4)}"
        final = layout_dir(lake, layout_id, version)
        try:
            _write_version(lake, staging, layout, info)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final)  # the publish: one rename, readers see the whole version or none of it
        finally:
            shutil.rmtree(staging_root, ignore_errors=True)
    return layout.with_layers(layout.layers, layout_id=layout_id, version=version, parent=parent)


def version_ref(layout: LayeredLayout) -> str:
    """`LAYOUT_ID@N`, what the CLI prints for a stored version."""
    if layout.layout_id is None or layout.version is None:
        raise LayoutError("the layout is not stored yet (save_layout gives it an id and a version)")
    return f"{layout.layout_id}@{layout.version}"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`LAYOUT_ID` or `LAYOUT_ID@N` → (id, version or None)."""
    layout_id, sep, v = str(ref).partition("@")
    if not sep:
        return check_id(layout_id), None
    if not re.fullmatch(r"[1-9][0-9]{0,8}", v):
        raise LayoutNotFound(f"{ref!r}: the version after @ must be a positive integer", "version")
    return check_id(layout_id), int(v)


def save_render(lake: str | os.PathLike, layout: LayeredLayout, image_HWC: np.ndarray, *, renderer: str, seed: int,
                folder: Path | None = None) -> Path:
    """A rendering of a stored layout version: image.png, the version's legend and render.json, in `folder`
    (default a new run, `<lake>/runs/kind=layout_render/run=ID-vN-STAMP/`). Never inside the version's own folder:
    a published version is not written to again."""
    import time

    from smartmask.inference.images import save_png
    from smartmask.lake.paths import run_dir

    lake = Path(lake)
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    folder = folder or run_dir(lake, "layout_render", f"{layout.layout_id}-v{layout.version}-{stamp}")
    save_png(folder / "image.png", image_HWC)
    shutil.copyfile(layout_dir(lake, layout.layout_id, layout.version) / "layout_legend.png",
                    folder / "layout_legend.png")
    write_json_atomic({"layout": version_ref(layout), "renderer": renderer, "seed": seed, "created_at": utc_stamp(),
                       "width": int(image_HWC.shape[1]), "height": int(image_HWC.shape[0])}, folder / "render.json")
    return folder
