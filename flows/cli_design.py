"""`smartmask design`: lay out several objects one after another with a planner and SmartMask (paper §3.3), from an
empty canvas or into a photo, in this process, through `smartmask.design.designer.Designer`.

Same contract as `suggest` / `insert`: every option is checked first (canvas, objects against the model's
vocabulary, planner spec, photo, layout reference or segmenter, inpainter, output folder), cheaply and before any
model loads; bad input is exit 2 with one line naming the flag. Then the design runs; one object that cannot be
placed is a FAILED line, not a failed command. The layout is stored in the lake as a new layout (version 1) and
the last line of stdout is its id, `LAYOUT_ID@1`. `--out` also gets the colour picture, the picture with its
legend, design.json (every step) and, into a photo, the final image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli_app import LakeOpt, app, bad_input, device_option, lake_folder, offline_defaults, output_folder
from flows.cli_inference import (
    FLAGS,
    N_MAX,
    STEPS_MAX,
    DeviceOpt,
    LayoutOpt,
    ModelOpt,
    SchedOpt,
    SeedOpt,
    SegOpt,
    StepsOpt,
    _check_inpainter,
    _check_layout,
    _check_model,
    _errors,
)

BOXES_MAX = 32
DESIGN_FLAGS = FLAGS | {"objects": "--objects", "canvas": "--canvas", "planner": "--planner", "image": "--image",
                        "object": "--objects", "n": "--n", "layout": "--layout-from/--segmenter"}


def _exit2(e: Exception) -> typer.Exit:
    flag = DESIGN_FLAGS.get(getattr(e, "field", None) or "")
    return bad_input(f"{flag}: {e}" if flag else str(e))


def _canvas(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        w, h = (int(p) for p in text.split(","))
    except ValueError:
        raise bad_input(f"--canvas: expected W,H in pixels, e.g. 640,480; got {text!r}") from None
    return w, h


def _check_planner(root: Path, spec: str) -> None:
    """The planner spec's form, and what it names where that is cheap to check: a prior's dataset, a llava
    planner version or folder (the planner itself loads after the model)."""
    from smartmask.planner.base import PlannerError
    from smartmask.registry import NotFound, resolve_dataset

    kind, _, arg = spec.partition(":")
    if kind not in ("prior", "llava") or (kind == "llava" and not arg):
        raise PlannerError(f"unknown planner {spec!r}: expected prior, prior:DATASET[@VERSION] or llava:SOURCE")
    if kind == "prior" and arg:
        try:
            resolve_dataset(root, arg)
        except NotFound as e:
            raise PlannerError(str(e)) from None
    if (kind == "llava" and "/" not in arg and not Path(arg).is_dir()
            and not (root / "planners" / f"version={arg}").is_dir()):
        # not a path nor a hub id (org/name): a planner version, which must be registered in this lake
        raise PlannerError(f"llava planner version {arg!r} is not registered in {root}")


def _check_objects(root: Path, version: str, objects) -> None:
    from smartmask.conditioning.vocabulary import Vocabulary
    from smartmask.design.designer import resolve_object
    from smartmask.lake.paths import model_dir

    vocab = Vocabulary.read(model_dir(root, version) / "vocabulary.parquet")
    for o in objects:
        resolve_object(o, vocab.labels)


def _write(out: Path, result, stored, record: dict, colours) -> None:
    from smartmask.design.picture import layout_picture, picture_with_legend
    from smartmask.inference.images import save_png
    from smartmask.lake.io import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    save_png(out / "layout.png", layout_picture(stored, colours))
    save_png(out / "legend.png", picture_with_legend(stored, colours))
    if result.image is not None:
        save_png(out / "designed.png", result.image)
        save_png(out / "changed-mask.png", result.changed_HW)
    write_json_atomic(record, out / "design.json")


@app.command()
def design(context: Annotated[str, typer.Option("--context", help="the final scene's description")],
           objects: Annotated[str, typer.Option("--objects", help="what to place, back to front: a,b,c")],
           canvas: Annotated[str | None, typer.Option(
               "--canvas", help="W,H of an empty canvas (default 640,480); background stuff is laid first")] = None,
           image: Annotated[Path | None, typer.Option("--image", help="design into this photo instead")] = None,
           layout_from: LayoutOpt = None, segmenter: SegOpt = None,
           planner: Annotated[str, typer.Option(
               "--planner", help="prior | prior:DATASET[@VERSION] | llava:VERSION_OR_DIR_OR_HUB_ID")] = "prior",
           inpainter: Annotated[str, typer.Option(
               "--inpainter", help="with --image: controlnet-sd15[…] | sd-inpaint[…] | synthetic | …")
           ] = "controlnet-sd15",
           model: ModelOpt = None, seed: SeedOpt = 0, steps: StepsOpt = 20,
           n: Annotated[int, typer.Option("--n", min=1, max=N_MAX, help=f"suggestions per box, 1..{N_MAX}")] = 4,
           boxes: Annotated[int, typer.Option(
               "--boxes", min=1, max=BOXES_MAX, help=f"planner boxes per object, tried best first, 1..{BOXES_MAX}")
           ] = 4,
           scheduler: SchedOpt = "dpm",
           inpaint_steps: Annotated[int | None, typer.Option(
               "--inpaint-steps", min=1, max=STEPS_MAX, help="inpainting steps (default: the inpainter's)")] = None,
           no_background: Annotated[bool, typer.Option(
               "--no-background", help="start from a black canvas (no sky/ground or wall/floor first)")] = False,
           out: Annotated[Path | None, typer.Option(
               "--out", help="also write layout.png, legend.png, design.json (and designed.png) here")] = None,
           lake: LakeOpt = None, device: DeviceOpt = None) -> None:
    """Design a layout object by object (planner boxes → SmartMask masks → layers), store it, print LAYOUT_ID@1."""
    offline_defaults()
    import dataclasses

    from smartmask.design.designer import DesignConfig
    from smartmask.inference.errors import BadInput

    root = lake_folder(lake, writes=True)  # the layout is stored there
    folder = output_folder(out, lake=root, kind="design") if out is not None else None
    device = device_option(device)
    names = tuple(o.strip() for o in objects.split(","))
    size = _canvas(canvas)
    if image is not None and size is not None:
        raise bad_input("--canvas: give --canvas or --image, not both")
    pixels = None
    try:
        cfg = DesignConfig(objects=names, context=context, canvas=size,
                           photo=None if image is None else str(image.resolve()), layout_from=layout_from,
                           model=model, planner=planner, segmenter=segmenter, inpainter=inpainter,
                           inpaint_steps=inpaint_steps, background=not no_background, seed=seed, n_boxes=boxes,
                           steps=steps, n_suggestions=n, scheduler=scheduler)
        _check_planner(root, planner)
        version = _check_model(root, model)
        _check_objects(root, version, names)
        if image is not None:
            from smartmask.inference.images import load_image

            try:
                pixels = load_image(image)
            except BadInput as e:
                raise BadInput(str(e), "image") from None
            _check_layout(root, pixels, layout_from, segmenter)
            _check_inpainter(inpainter)
    except _errors() as e:
        raise _exit2(e) from None
    cfg = dataclasses.replace(cfg, model=version)  # the version checked is the version loaded
    from smartmask.design.designer import Designer
    from smartmask.design.picture import label_colours, vocabulary_for
    from smartmask.design.store import layout_dir, save_layout, version_ref

    try:
        designer = Designer.from_lake(root, cfg, device=device)
        result = designer.design(cfg, image=pixels)
    except _errors() as e:
        raise _exit2(e) from None
    record = result.record()
    stored = save_layout(root, result.layout, vocabulary=f"model:{version}", operation={
        "op": "design", "planner": designer.planner.id, "model_version": version, "seed": seed,
        "placed": list(result.placed), "failed": list(result.failed), "background": record["background"]})
    ref = version_ref(stored)
    where = layout_dir(root, stored.layout_id, stored.version)
    record |= {"layout_id": stored.layout_id, "version": stored.version, "stored": str(where)}
    if folder is not None:
        _write(folder, result, stored, record, label_colours(stored.labels, vocabulary_for(root, f"model:{version}")))
    for step in result.steps:
        typer.echo(step.line())
    typer.echo(f"placed {len(result.placed)}/{len(result.steps)} object(s) with {designer.planner.id}, model "
               f"{version}; background: {record['background'] or 'none'}")
    typer.echo(f"stored: {where}" + (f"; written: {folder}" if folder is not None else ""))
    typer.echo(ref)
