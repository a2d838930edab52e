"""`smartmask suggest` and `smartmask insert`: one image, in this process (no Prefect or Ray start-up to pay for a
single image), through `SmartMaskPipeline`. Library errors name the request field (`BadInput.field`); `FLAGS`
turns that into the flag the user typed.

Exit codes as everywhere: 0 done, 2 bad input with one line on stderr (a non-image or oversized file, a box or
point outside the image, an empty object name, an unknown model version, a segmenter or inpainter that cannot be
found offline, an output folder inside a lake's published data, a device this machine does not have, ...), anything
else a failure. The last line of stdout is the folder the job wrote.

Each command runs in two phases. First every option is checked, cheaply and silently: the output folder, the
device, the ranges, the photo (decoded: a non-image is bad input), the control, the model version, the layout
reference (read from the lake) or the segmenter's files, the inpainter's files. Only then do models load, with
stage-level progress on stderr (`smartmask.progress`: a bar on a terminal, one line per stage otherwise), so bad
input costs no model load and its one error line is all that stderr shows.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_app import (
    SEED_MAX,
    LakeOpt,
    app,
    bad_input,
    device_option,
    lake_folder,
    offline_defaults,
    output_folder,
)

N_MAX = 64  # suggestions are sampled in one batch: memory grows with N (--n 1000 took 6.7 GB)
STEPS_MAX = 1000  # the schedulers' training horizon; more steps only cost time

ObjOpt = Annotated[str, typer.Option("--object", help="What to insert, e.g. 'a woman'")]
CtxOpt = Annotated[str, typer.Option("--context", help="Scene description, e.g. 'a woman beside the river'")]
BboxOpt = Annotated[str | None, typer.Option("--bbox", help="x0,y0,x1,y1 in image pixels")]
PointOpt = Annotated[str | None, typer.Option("--point", help="x,y[,r]: a rough location (r: radius in pixels)")]
ScribbleOpt = Annotated[Path | None, typer.Option("--scribble", help="PNG of the image's size; white = scribble")]
NOpt = Annotated[int, typer.Option(
    "--n", min=1, max=N_MAX, help=f"suggestions to sample, 1..{N_MAX} (near-duplicates are dropped)")]
LayoutOpt = Annotated[str | None, typer.Option(
    "--layout-from", help="DATASET:IMAGE_ID[:K]: ground-truth layout (first K layers), no segmenter")]
SegOpt = Annotated[str | None, typer.Option("--segmenter", help="Mask2Former panoptic model: directory or hub id")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="model version (default: the newest)")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="0..2**32-1; suggestion j uses seed+j")]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, max=STEPS_MAX, help=f"sampling steps, 1..{STEPS_MAX}")]
SchedOpt = Annotated[str, typer.Option("--scheduler", help="dpm | ddim")]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="cpu | cuda | cuda:N | mps (default: cuda when available)")]
LooseOpt = Annotated[bool, typer.Option(
    "--loose-box", help="--bbox only bounds the object: cut suggestions to it instead of stretching them onto it")]


# The request field a library error names (`BadInput.field`) → the flag the user typed.
FLAGS = {"image": "IMAGE", "object": "--object", "box": "--bbox", "point": "--point", "scribble": "--scribble",
         "control": "--bbox/--point/--scribble", "layout": "--layout-from/--segmenter", "n": "--n",
         "steps": "--steps", "scheduler": "--scheduler", "mask": "--mask", "pick": "--pick",
         "segmenter": "--segmenter", "inpainter": "--inpainter", "model": "--model"}

# What the progress counts, after the checks (which decode the photo: a non-image is bad input, reported alone).
SUGGEST_STAGES = ("load model", "layout", "sample", "write")
INSERT_STAGES = ("load models", "layout", "sample", "inpaint", "write")
INSERT_MASK_STAGES = ("load inpainter", "inpaint", "write")


def _errors():
    from smartmask.inference.errors import BadInput
    from smartmask.pretrained import ModelNotFound
    from smartmask.registry import NotFound

    return BadInput, ModelNotFound, NotFound


def _exit2(e: Exception) -> typer.Exit:
    """A library error as the CLI's one line, led by the flag it concerns."""
    flag = FLAGS.get(getattr(e, "field", None) or "")
    return bad_input(f"{flag}: {e}" if flag else str(e))


def _available(source: str, field: str) -> None:
    """A model source (directory or hub id) that can be loaded here, checked from its files without loading it
    (`model_revision` reads configs and samples the weights; offline, a hub id must be in the cache)."""
    from smartmask.inference.errors import BadInput
    from smartmask.pretrained import ModelNotFound, model_revision

    try:
        model_revision(source)
    except ModelNotFound as e:
        raise BadInput(str(e), field) from None


def _check_layout(root: Path, pixels, layout_from: str | None, segmenter: str | None) -> None:
    """The layout source is usable: a ground-truth reference that resolves to an image of the photo's size (read
    here and again by the pipeline: a few rows, so a bad reference never waits for a model load), or a segmenter
    whose files are there."""
    from smartmask.inference.errors import BadInput
    from smartmask.inference.layout import layout_from_lake, parse_layout_ref
    from smartmask.registry import NotFound

    if layout_from:
        try:
            scene, _ = layout_from_lake(root, *parse_layout_ref(layout_from))
        except NotFound as e:
            raise BadInput(str(e), "layout") from None
        H, W = pixels.shape[:2]
        if (scene.height, scene.width) != (H, W):
            raise BadInput(f"layout {layout_from}: that image is {scene.width}x{scene.height}, the input is {W}x{H}",
                           "layout")
    elif segmenter:
        _available(segmenter, "segmenter")
    else:
        raise BadInput("no layout: give a panoptic segmenter (a Mask2Former directory or hub id) or a ground-truth "
                       "layout reference DATASET:IMAGE_ID[:K]", "layout")


def _check_model(root: Path, model: str | None) -> str:
    """The model version to load (the newest when None), resolved from its lineage file without loading it."""
    from smartmask.inference.errors import BadInput
    from smartmask.registry import NotFound, resolve_model

    try:
        return resolve_model(root, model)
    except NotFound as e:
        raise BadInput(str(e), "model") from None


def _check_inpainter(spec: str) -> None:
    from smartmask.inference.errors import BadInput
    from smartmask.inference.inpaint import parse_spec

    try:
        parsed = parse_spec(spec)
    except ValueError as e:
        raise BadInput(str(e), "inpainter") from None
    for source in (parsed.base, parsed.controlnet):
        if source:
            _available(source, "inpainter")


def _request(*, image, obj, context, bbox, point, scribble, n, seed, steps, scheduler, loose_box):
    """The decoded image, the control and the suggest config from the CLI's values."""
    from smartmask.inference.errors import BadInput
    from smartmask.inference.images import load_image, load_mask
    from smartmask.inference.suggest import Control, SuggestConfig

    if not obj.strip():
        raise BadInput("the object name is empty", "object")
    if scheduler not in ("dpm", "ddim"):
        raise BadInput(f"the scheduler must be dpm or ddim, got {scheduler!r}", "scheduler")
    pixels = load_image(image)
    H, W = pixels.shape[:2]
    scribble_HW = load_mask(scribble, (H, W)) if scribble is not None else None
    control = Control.parse(H, W, bbox=bbox, point=point, scribble_HW=scribble_HW)
    cfg = SuggestConfig(n=n, steps=steps, scheduler=scheduler, seed=seed, fit_box=not loose_box)
    return pixels, control, cfg


@contextmanager
def _stages(what: str, names: tuple[str, ...]) -> Iterator:
    """Stage-level progress on stderr; yields `enter(name)`, called as each stage starts (a line each when stderr is
    not a terminal: stages take from milliseconds to minutes, so a line per stage is the useful record)."""
    from smartmask.progress import Progress

    with Progress(what, total=len(names), unit="stages", every_s=0) as p:
        def enter(name: str) -> None:
            p.update(names.index(name), stage=name)

        yield enter
        p.update(len(names), stage="done")


def _run_dir(root: Path, kind: str) -> Path:
    from smartmask.lake.paths import run_dir

    return run_dir(root, kind, f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")


@app.command()
def suggest(image: Annotated[Path, typer.Argument(help="The image to insert into")], obj: ObjOpt, context: CtxOpt,
            bbox: BboxOpt = None, point: PointOpt = None, scribble: ScribbleOpt = None, n: NOpt = 4,
            layout_from: LayoutOpt = None, segmenter: SegOpt = None, model: ModelOpt = None, lake: LakeOpt = None,
            out: Annotated[Path | None, typer.Option(
                "--out", help="output folder (default: a run in the lake); never inside a lake's published data")
            ] = None,
            seed: SeedOpt = 0, steps: StepsOpt = 20, scheduler: SchedOpt = "dpm", device: DeviceOpt = None,
            loose_box: LooseOpt = False) -> None:
    """N mask suggestions for inserting --object into IMAGE: mask PNGs, an overlay preview, a JSON record each."""
    offline_defaults()
    root = lake_folder(lake, writes=out is None)  # the default output folder is a run inside the lake
    folder = output_folder(out, lake=root, kind="suggest") if out is not None else None
    device = device_option(device)
    try:
        pixels, control, cfg = _request(image=image, obj=obj, context=context, bbox=bbox, point=point,
                                        scribble=scribble, n=n, seed=seed, steps=steps, scheduler=scheduler,
                                        loose_box=loose_box)
        version = _check_model(root, model)
        _check_layout(root, pixels, layout_from, segmenter)
    except _errors() as e:
        raise _exit2(e) from None
    from smartmask.inference.pipeline import SmartMaskPipeline

    with _stages("suggest", SUGGEST_STAGES) as stage:
        try:
            stage("load model")
            pipe = SmartMaskPipeline.from_lake(root, version, segmenter=segmenter, device=device)
            stage("layout")
            scene = pipe.layout(pixels, layout_from)
            stage("sample")
            found = pipe.suggest(obj, context, scene=scene, control=control, config=cfg)
        except _errors() as e:
            raise _exit2(e) from None
        stage("write")
        folder = folder or _run_dir(root, "suggest")
        found.request["image"] = str(image.resolve())
        summary = found.write(folder, pixels)
    for s in summary["suggestions"]:
        typer.echo(f"#{s['rank']} seed {s['seed']} score {s['score']:.3f} area {s['area_fraction']:.3f} "
                   f"bbox {s['bbox']}{' EMPTY' if s['empty'] else ''}")
    typer.echo(f"{len(summary['suggestions'])} suggestion(s), {summary['duplicates_dropped']} near-duplicate(s) "
               f"dropped, model {summary['model_version']}, layout {summary['layout_source']} "
               f"({summary['unknown_regions']} unknown region(s)), {summary['seconds']:.1f} s")
    typer.echo(str(folder))


@app.command()
def insert(image: Annotated[Path, typer.Argument(help="The image to insert into")], obj: ObjOpt, context: CtxOpt,
           out: Annotated[Path, typer.Option("--out", help="output folder; never inside a lake's published data")],
           bbox: BboxOpt = None, point: PointOpt = None, scribble: ScribbleOpt = None,
           inpainter: Annotated[str, typer.Option(
               "--inpainter", help="controlnet-sd15[:BASE[+CN]] | controlnet-sdxl[…] | sd-inpaint[:BASE] | "
                                   "sdxl-inpaint[:BASE] | synthetic | a pipeline directory")] = "controlnet-sd15",
           mask_from: Annotated[str, typer.Option(
               "--mask-from", help="smartmask (suggest, then use --pick) | box (baseline: the --bbox as the mask)")
           ] = "smartmask",
           mask: Annotated[Path | None, typer.Option("--mask", help="use this mask PNG (e.g. from suggest)")] = None,
           pick: Annotated[int, typer.Option(
               "--pick", min=1, max=N_MAX, help="which ranked suggestion to insert, 1..--n")] = 1,
           n: NOpt = 4, layout_from: LayoutOpt = None, segmenter: SegOpt = None, model: ModelOpt = None,
           lake: LakeOpt = None, seed: SeedOpt = 0, steps: StepsOpt = 20, scheduler: SchedOpt = "dpm",
           inpaint_steps: Annotated[int | None, typer.Option(
               "--inpaint-steps", min=1, max=STEPS_MAX, help=f"inpainting steps, 1..{STEPS_MAX}")] = None,
           device: DeviceOpt = None, loose_box: LooseOpt = False) -> None:
    """Insert --object into IMAGE inside a SmartMask suggestion (or --mask / the box baseline); pixels outside the
    dilated mask stay bit-identical to the input."""
    offline_defaults()
    import dataclasses

    from smartmask.boxes import box_mask
    from smartmask.inference.errors import BadInput
    from smartmask.inference.images import load_image, load_mask
    from smartmask.inference.inpaint import InpaintConfig
    from smartmask.inference.suggest import Control

    root = lake_folder(lake)
    out = output_folder(out, lake=root, kind="insert")
    device = device_option(device)
    from_model = mask is None and mask_from == "smartmask"
    if from_model and pick > n:
        raise bad_input(f"--pick: {pick} is more than --n {n}: there are at most {n} suggestions to pick from")
    cfg = InpaintConfig()
    if inpaint_steps is not None:
        cfg = dataclasses.replace(cfg, steps=inpaint_steps)
    try:
        if mask_from not in ("smartmask", "box"):
            raise BadInput(f"the mask source must be smartmask or box, got {mask_from!r}", "mask")
        if not obj.strip():
            raise BadInput("the object name is empty", "object")
        _check_inpainter(inpainter)
        chosen, source = None, None
        if not from_model:
            pixels = load_image(image)
            H, W = pixels.shape[:2]
            if mask is not None:
                chosen, source = load_mask(mask, (H, W)), f"file:{mask.resolve()}"
            else:
                control = Control.parse(H, W, bbox=bbox)
                if control.kind != "box":
                    raise BadInput("the box baseline needs a box", "box")
                chosen, source = box_mask(control.box, H, W), "box-baseline"
        else:
            pixels, control, scfg = _request(image=image, obj=obj, context=context, bbox=bbox, point=point,
                                             scribble=scribble, n=n, seed=seed, steps=steps, scheduler=scheduler,
                                             loose_box=loose_box)
            version = _check_model(root, model)
            _check_layout(root, pixels, layout_from, segmenter)
    except _errors() as e:
        raise _exit2(e) from None
    from smartmask.inference.pipeline import SmartMaskPipeline

    with _stages("insert", INSERT_STAGES if from_model else INSERT_MASK_STAGES) as stage:
        try:
            if not from_model:
                stage("load inpainter")
                pipe = SmartMaskPipeline.from_lake(root, with_model=False, inpainter=inpainter, inpaint_config=cfg,
                                                   device=device)
                pipe.inpainter  # noqa: B018  (loads it now, so a broken one fails in its own stage)
                stage("inpaint")
                done = pipe.insert(obj, context, image=pixels, mask=chosen, mask_source=source, seed=seed)
            else:
                stage("load models")
                pipe = SmartMaskPipeline.from_lake(root, version, segmenter=segmenter, inpainter=inpainter,
                                                   inpaint_config=cfg, device=device)
                pipe.inpainter  # noqa: B018  (before sampling: a broken inpainter must not cost a sampling run)
                stage("layout")
                scene = pipe.layout(pixels, layout_from)
                stage("sample")
                found = pipe.suggest(obj, context, scene=scene, control=control, config=scfg)
                found.request["image"] = str(image.resolve())
                found.write(out, pixels)  # first: when the pick turns out empty, the suggestions are there to see
                stage("inpaint")
                done = pipe.insert(obj, context, image=pixels, suggestions=found, pick=pick, seed=seed)
        except _errors() as e:
            raise _exit2(e) from None
        stage("write")
        done.write(out)
    res = done.result
    typer.echo(f"inserted {obj!r} with {res.inpainter_id}: mask {int(done.mask_HW.sum())} px, crop {res.crop_box} "
               f"at {res.native}px, {res.timings.get('total', 0.0):.1f} s")
    typer.echo(str(out))
