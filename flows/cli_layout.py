"""`smartmask layout ...`: look at a stored layered layout, edit it layer by layer, render it.

    smartmask layout show LAYOUT_ID [--version N]                  table of layers (front-most last)
    smartmask layout add LAYOUT_ID --label L --mask PNG [--at I] [--stuff]
    smartmask layout remove LAYOUT_ID --layer I
    smartmask layout move LAYOUT_ID --layer I --dx DX --dy DY
    smartmask layout scale LAYOUT_ID --layer I --factor F
    smartmask layout reorder LAYOUT_ID --layer I --to J
    smartmask layout render LAYOUT_ID [--version N] --renderer R [--seed S] [--out DIR]

Each edit starts from `--version` (default: the newest), stores the result as a new version
(`smartmask.design.store`; the old one stays) and prints `LAYOUT_ID@N` as the last line of stdout. `render` prints
the folder it wrote. Bad input is one line on stderr naming the flag, exit 2, before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_app import SEED_MAX, LakeOpt, app, bad_input, lake_folder, one_line, output_folder

layout_app = typer.Typer(no_args_is_help=True, help="Stored layered layouts: show, edit layer by layer, render.")
app.add_typer(layout_app, name="layout")

IdArg = Annotated[str, typer.Argument(help="The layout id (or ID@VERSION)", metavar="LAYOUT_ID")]
VersionOpt = Annotated[int | None, typer.Option("--version", min=1, help="the version to start from (default: "
                                                                        "the newest)")]
LayerOpt = Annotated[int, typer.Option("--layer", min=0, help="the layer's order, 0 = back-most")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="a note stored with the new version")]


def _load(root: Path, ref: str, version: int | None):
    """The layout to start from; its errors named after the argument or flag they came from."""
    from smartmask.design.store import LayoutNotFound, load_layout, parse_ref

    try:
        layout_id, at = parse_ref(ref)
        if at is not None and version is not None and at != version:
            raise bad_input(f"--version: {version} contradicts {ref}")
        return load_layout(root, layout_id, version if version is not None else at)
    except LayoutNotFound as e:
        raise bad_input(f"{'--version' if e.what == 'version' else 'LAYOUT_ID'}: {e}") from None


def _start(lake: str | None, ref: str, version: int | None):
    """(lake, layout) for an edit: the lake must exist and be writable, the layout must be in it."""
    root = lake_folder(lake, must_exist=True, writes=True)
    return root, _load(root, ref, version)


def _commit(root: Path, layout, flag: str, operation: dict, note: str | None, edit) -> None:
    """Apply `edit` (an ops function bound to its arguments; its `LayoutError` is `flag`'s fault), store the result
    as a new version, print `LAYOUT_ID@N` last."""
    import dataclasses

    from smartmask.design.store import layout_dir, save_layout, version_ref
    from smartmask.inference.layout import LayoutError
    from smartmask.lake.locks import LockHeld

    try:
        new = edit(layout)
    except LayoutError as e:
        raise bad_input(f"{flag}: {e}") from None
    if note is not None:
        new = dataclasses.replace(new, note=note)
    try:
        stored = save_layout(root, new, operation={**operation, "from": layout.version})
    except LockHeld as e:
        raise bad_input(f"LAYOUT_ID: {e}") from None
    typer.echo(f"{operation['op']}: {len(layout.layers)} -> {len(stored.layers)} layer(s), "
               f"{layout_dir(root, stored.layout_id, stored.version)}")
    typer.echo(version_ref(stored))


@layout_app.command("show")
def show(layout_id: IdArg, version: VersionOpt = None, lake: LakeOpt = None) -> None:
    """The layers of a stored layout, back to front, with where its picture is."""
    import numpy as np

    root = lake_folder(lake, must_exist=True)
    layout = _load(root, layout_id, version)
    from smartmask.design.store import layout_info

    info = layout_info(root, layout.layout_id, layout.version)
    op = info.get("operation") or {}
    typer.echo(f"layout {layout.layout_id}@{layout.version} ({layout.width}x{layout.height}), "
               f"{len(layout.layers)} layer(s), parent {info.get('parent')}, made by "
               f"{json.dumps(op, sort_keys=True)}, {info.get('created_at')}")
    if layout.context:
        typer.echo(f"context: {layout.context}")
    if layout.note:
        typer.echo(f"note: {layout.note}")
    owner = layout.owner_HW()
    typer.echo(f"{'#':>3}  {'label':<20} {'kind':<6} {'origin':<10} {'area':>8} {'visible':>8}  {'box':<19}  "
               "made by")
    for i, lay in enumerate(layout.layers):
        ys, xs = np.nonzero(lay.mask_HW)
        box = f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}" if xs.size else "-"
        off = " (+off-canvas)" if lay.full_mask is not None else ""
        made = []
        if lay.planner:
            made.append(lay.planner)
        if lay.box is not None:
            made.append("box " + ",".join(f"{v:g}" for v in lay.box))
        if lay.seed is not None:
            made.append(f"seed {lay.seed}")
        if lay.score is not None:
            made.append(f"score {lay.score:.3f}")
        typer.echo(f"{i:>3}  {lay.label[:20]:<20} {'stuff' if lay.is_stuff else 'thing':<6} {lay.origin[:10]:<10} "
                   f"{int(lay.mask_HW.sum()):>8} {int(np.count_nonzero(owner == i)):>8}  {box:<19}  "
                   f"{' '.join(made) or '-'}{off}")
    typer.echo(f"picture: {Path(info['path']) / 'layout_legend.png'}")


@layout_app.command("add")
def add(layout_id: IdArg,
        label: Annotated[str, typer.Option("--label", help="the new layer's label")],
        mask: Annotated[Path, typer.Option("--mask", help="PNG of the layout's size; white = the layer")],
        at: Annotated[int | None, typer.Option("--at", min=0, help="its order (default: in front of all)")] = None,
        stuff: Annotated[bool, typer.Option("--stuff", help="a stuff layer (sky, road, ...)")] = False,
        version: VersionOpt = None, note: NoteOpt = None, lake: LakeOpt = None) -> None:
    """Add a layer from a mask PNG; it covers the layers behind it."""
    from smartmask.design import ops
    from smartmask.inference.errors import BadInput
    from smartmask.inference.images import load_mask

    label = label.strip()
    if not label:
        raise bad_input("--label: the label is empty")
    root, layout = _start(lake, layout_id, version)
    if at is not None and at > len(layout.layers):
        raise bad_input(f"--at: {at} is out of range: a layer can go at 0..{len(layout.layers)} (0 = back-most)")
    try:
        mask_HW = load_mask(mask, (layout.height, layout.width))
    except BadInput as e:
        raise bad_input(f"--mask: {e}") from None
    op = {"op": "add", "label": label, "at": at, "stuff": stuff, "mask": str(mask.resolve())}
    _commit(root, layout, "--mask", op, note, lambda lay: ops.add(lay, label, mask_HW, at=at, is_stuff=stuff))


@layout_app.command("remove")
def remove(layout_id: IdArg, layer: LayerOpt, version: VersionOpt = None, note: NoteOpt = None,
           lake: LakeOpt = None) -> None:
    """Remove a layer; what it covered shows the layers behind it."""
    from smartmask.design import ops

    root, layout = _start(lake, layout_id, version)
    _commit(root, layout, "--layer", {"op": "remove", "layer": layer}, note, lambda lay: ops.remove(lay, layer))


@layout_app.command("move")
def move(layout_id: IdArg, layer: LayerOpt,
         dx: Annotated[int, typer.Option("--dx", help="pixels to the right (negative: left)")] = 0,
         dy: Annotated[int, typer.Option("--dy", help="pixels down (negative: up)")] = 0,
         version: VersionOpt = None, note: NoteOpt = None, lake: LakeOpt = None) -> None:
    """Shift a layer; parts pushed off the canvas are kept, so moving it back restores it exactly."""
    from smartmask.design import ops

    root, layout = _start(lake, layout_id, version)
    _commit(root, layout, "--layer", {"op": "move", "layer": layer, "dx": dx, "dy": dy}, note,
            lambda lay: ops.move(lay, layer, dx, dy))


@layout_app.command("scale")
def scale(layout_id: IdArg, layer: LayerOpt,
          factor: Annotated[float, typer.Option("--factor",
                                                help="size factor (0, 64], about the centre of the layer's box")],
          version: VersionOpt = None, note: NoteOpt = None, lake: LakeOpt = None) -> None:
    """Resize a layer about the centre of its box (nearest neighbour)."""
    from smartmask.design import ops

    root, layout = _start(lake, layout_id, version)
    _check_layer(layout, layer)
    # With the layer known to exist, what scale refuses (a factor that empties or oversizes it) is the factor's.
    _commit(root, layout, "--factor", {"op": "scale", "layer": layer, "factor": factor}, note,
            lambda lay: ops.scale(lay, layer, factor))


@layout_app.command("reorder")
def reorder(layout_id: IdArg, layer: LayerOpt,
            to: Annotated[int, typer.Option("--to", min=0, help="its new order, 0 = back-most")],
            version: VersionOpt = None, note: NoteOpt = None, lake: LakeOpt = None) -> None:
    """Move a layer to another place in the stack (in front of or behind others)."""
    from smartmask.design import ops

    root, layout = _start(lake, layout_id, version)
    _check_layer(layout, layer)
    _commit(root, layout, "--to", {"op": "reorder", "layer": layer, "to": to}, note,
            lambda lay: ops.reorder(lay, layer, to))


def _check_layer(layout, layer: int) -> None:
    n = len(layout.layers)
    if layer >= n:
        raise bad_input(f"--layer: {layer} is out of range: the layout has {n} layer(s)"
                        + (f" (0..{n - 1}, 0 = back-most)" if n else ""))


@layout_app.command("render")
def render(layout_id: IdArg,
           renderer: Annotated[str, typer.Option("--renderer", help="synthetic | controlnet-seg[:BASE[+CONTROLNET]]")],
           version: VersionOpt = None,
           seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="0..2**32-1")] = 0,
           out: Annotated[Path | None, typer.Option(
               "--out", help="output folder (default: a run in the lake, runs/kind=layout_render/)")] = None,
           lake: LakeOpt = None) -> None:
    """Render a stored layout to an image (image.png, its picture, render.json); prints the folder."""
    from smartmask.design.store import save_render
    from smartmask.inference.errors import BadInput

    root = lake_folder(lake, must_exist=True, writes=out is None)
    folder = output_folder(out, lake=root, kind="layout_render") if out is not None else None
    layout = _load(root, layout_id, version)
    if not renderer.strip():
        raise bad_input("--renderer: empty; give synthetic or controlnet-seg[:BASE[+CONTROLNET]]")
    from smartmask.design.render import render_layout
    from smartmask.inference.inpaint import ContentFiltered
    from smartmask.pretrained import ModelNotFound

    try:
        image = render_layout(layout, renderer, seed=seed, lake=root)
    except BadInput as e:
        flag = RENDER_FLAGS.get(getattr(e, "field", None) or "", "--renderer")
        raise bad_input(f"{flag}: {e}") from None
    except (ModelNotFound, ContentFiltered) as e:  # weights not there (offline), or the safety checker's verdict
        raise bad_input(f"--renderer: {one_line(e)}") from None
    ref = f"{layout.layout_id}@{layout.version}"
    folder = save_render(root, layout, image, renderer=renderer, seed=seed, folder=folder)
    typer.echo(f"rendered {ref} with {renderer} (seed {seed}): {image.shape[1]}x{image.shape[0]}")
    typer.echo(str(folder))


# A render error's field (`BadInput.field`) -> the flag it concerns; anything else is the renderer's.
RENDER_FLAGS = {"layout": "LAYOUT_ID", "inpainter": "--renderer"}
