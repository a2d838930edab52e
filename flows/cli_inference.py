"""`smartmask suggest` and `smartmask insert`: one image, in this process (no Prefect or Ray start-up to pay for a
single image), through `SmartMaskPipeline`. Library errors name the request field (`BadInput.field`); `FLAGS`
turns that into the flag the user typed.

Exit codes as everywhere: 0 done, 2 bad input with one line on stderr (a non-image or oversized file, a box or
point outside the image, an empty object name, an unknown model version, a segmenter or inpainter that cannot be
found offline, ...), anything else a failure. The last line of the output is the folder the job wrote.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_app import LakeOpt, app, bad_input, offline_defaults

ObjOpt = Annotated[str, typer.Option("--object", help="What to insert, e.g. 'a woman'")]
CtxOpt = Annotated[str, typer.Option("--context", help="Scene description, e.g. 'a woman beside the river'")]
BboxOpt = Annotated[str | None, typer.Option("--bbox", help="x0,y0,x1,y1 in image pixels")]
PointOpt = Annotated[str | None, typer.Option("--point", help="x,y[,r]: a rough location (r: radius in pixels)")]
ScribbleOpt = Annotated[Path | None, typer.Option("--scribble", help="PNG of the image's size; white = scribble")]
NOpt = Annotated[int, typer.Option("--n", min=1, help="suggestions to sample (near-duplicates are dropped)")]
LayoutOpt = Annotated[str | None, typer.Option(
    "--layout-from", help="DATASET:IMAGE_ID[:K]: ground-truth layout (first K layers), no segmenter")]
SegOpt = Annotated[str | None, typer.Option("--segmenter", help="Mask2Former panoptic model: directory or hub id")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="model version (default: the newest)")]
SeedOpt = Annotated[int, typer.Option("--seed")]
StepsOpt = Annotated[int, typer.Option("--steps", min=1)]
SchedOpt = Annotated[str, typer.Option("--scheduler", help="dpm | ddim")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu | cuda (default: cuda when available)")]
LooseOpt = Annotated[bool, typer.Option(
    "--loose-box", help="--bbox only bounds the object: cut suggestions to it instead of stretching them onto it")]


# The request field a library error names (`BadInput.field`) → the flag the user typed.
FLAGS = {"image": "IMAGE", "object": "--object", "box": "--bbox", "point": "--point", "scribble": "--scribble",
         "control": "--bbox/--point/--scribble", "layout": "--layout-from/--segmenter", "n": "--n",
         "steps": "--steps", "scheduler": "--scheduler", "mask": "--mask", "pick": "--pick",
         "segmenter": "--segmenter", "inpainter": "--inpainter", "model": "--model"}


def _errors():
    from smartmask.inference.errors import BadInput
    from smartmask.pretrained import ModelNotFound
    from smartmask.registry import NotFound

    return BadInput, ModelNotFound, NotFound


def _exit2(e: Exception) -> typer.Exit:
    """A library error as the CLI's one line, led by the flag it concerns."""
    flag = FLAGS.get(getattr(e, "field", None) or "")
    return bad_input(f"{flag}: {e}" if flag else str(e))


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


def _out_dir(out: Path | None, root: Path, kind: str) -> Path:
    if out is not None:
        return out
    from smartmask.lake.paths import run_dir

    return run_dir(root, kind, f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")


@app.command()
def suggest(image: Annotated[Path, typer.Argument(help="The image to insert into")], obj: ObjOpt, context: CtxOpt,
            bbox: BboxOpt = None, point: PointOpt = None, scribble: ScribbleOpt = None, n: NOpt = 4,
            layout_from: LayoutOpt = None, segmenter: SegOpt = None, model: ModelOpt = None, lake: LakeOpt = None,
            out: Annotated[Path | None, typer.Option("--out", help="output folder (default: a run in the lake)")] = None,
            seed: SeedOpt = 0, steps: StepsOpt = 20, scheduler: SchedOpt = "dpm", device: DeviceOpt = None,
            loose_box: LooseOpt = False) -> None:
    """N mask suggestions for inserting --object into IMAGE: mask PNGs, an overlay preview, a JSON record each."""
    offline_defaults()
    from smartmask.inference.pipeline import SmartMaskPipeline
    from smartmask.lake.paths import lake_root

    root = lake_root(lake)
    try:
        pixels, control, cfg = _request(image=image, obj=obj, context=context, bbox=bbox, point=point,
                                        scribble=scribble, n=n, seed=seed, steps=steps, scheduler=scheduler,
                                        loose_box=loose_box)
        pipe = SmartMaskPipeline.from_lake(root, model, segmenter=segmenter, device=device)
        found = pipe.suggest(obj, context, image=pixels, layout_from=layout_from, control=control, config=cfg)
    except _errors() as e:
        raise _exit2(e) from None
    folder = _out_dir(out, root, "suggest")
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
           out: Annotated[Path, typer.Option("--out", help="output folder")],
           bbox: BboxOpt = None, point: PointOpt = None, scribble: ScribbleOpt = None,
           inpainter: Annotated[str, typer.Option(
               "--inpainter", help="controlnet-sd15[:BASE[+CN]] | controlnet-sdxl[…] | sd-inpaint[:BASE] | "
                                   "sdxl-inpaint[:BASE] | synthetic | a pipeline directory")] = "controlnet-sd15",
           mask_from: Annotated[str, typer.Option(
               "--mask-from", help="smartmask (suggest, then use --pick) | box (baseline: the --bbox as the mask)")
           ] = "smartmask",
           mask: Annotated[Path | None, typer.Option("--mask", help="use this mask PNG (e.g. from suggest)")] = None,
           pick: Annotated[int, typer.Option("--pick", min=1, help="which ranked suggestion to insert")] = 1,
           n: NOpt = 4, layout_from: LayoutOpt = None, segmenter: SegOpt = None, model: ModelOpt = None,
           lake: LakeOpt = None, seed: SeedOpt = 0, steps: StepsOpt = 20, scheduler: SchedOpt = "dpm",
           inpaint_steps: Annotated[int | None, typer.Option("--inpaint-steps", min=1)] = None,
           device: DeviceOpt = None, loose_box: LooseOpt = False) -> None:
    """Insert --object into IMAGE inside a SmartMask suggestion (or --mask / the box baseline); pixels outside the
    dilated mask stay bit-identical to the input."""
    offline_defaults()
    import dataclasses

    from smartmask.boxes import box_mask
    from smartmask.inference.errors import BadInput
    from smartmask.inference.images import load_image, load_mask
    from smartmask.inference.inpaint import InpaintConfig, parse_spec
    from smartmask.inference.pipeline import SmartMaskPipeline
    from smartmask.inference.suggest import Control
    from smartmask.lake.paths import lake_root

    root = lake_root(lake)
    cfg = InpaintConfig()
    if inpaint_steps is not None:
        cfg = dataclasses.replace(cfg, steps=inpaint_steps)
    try:
        if mask_from not in ("smartmask", "box"):
            raise BadInput(f"the mask source must be smartmask or box, got {mask_from!r}", "mask")
        if not obj.strip():
            raise BadInput("the object name is empty", "object")
        try:
            parse_spec(inpainter)
        except ValueError as e:
            raise BadInput(str(e), "inpainter") from None
        chosen, source = None, None
        if mask is not None or mask_from == "box":
            pixels = load_image(image)
            H, W = pixels.shape[:2]
            if mask is not None:
                chosen, source = load_mask(mask, (H, W)), f"file:{mask.resolve()}"
            else:
                control = Control.parse(H, W, bbox=bbox)
                if control.kind != "box":
                    raise BadInput("the box baseline needs a box", "box")
                chosen, source = box_mask(control.box, H, W), "box-baseline"
            pipe = SmartMaskPipeline.from_lake(root, with_model=False, inpainter=inpainter, inpaint_config=cfg,
                                               device=device)
            done = pipe.insert(obj, context, image=pixels, mask=chosen, mask_source=source, seed=seed)
        else:
            pixels, control, scfg = _request(image=image, obj=obj, context=context, bbox=bbox, point=point,
                                             scribble=scribble, n=n, seed=seed, steps=steps, scheduler=scheduler,
                                             loose_box=loose_box)
            pipe = SmartMaskPipeline.from_lake(root, model, segmenter=segmenter, inpainter=inpainter,
                                               inpaint_config=cfg, device=device)
            found = pipe.suggest(obj, context, image=pixels, layout_from=layout_from, control=control, config=scfg)
            found.request["image"] = str(image.resolve())
            found.write(out, pixels)
            done = pipe.insert(obj, context, image=pixels, suggestions=found, pick=pick, seed=seed)
    except _errors() as e:
        raise _exit2(e) from None
    done.write(out)
    res = done.result
    typer.echo(f"inserted {obj!r} with {res.inpainter_id}: mask {int(done.mask_HW.sum())} px, crop {res.crop_box} "
               f"at {res.native}px, {res.timings.get('total', 0.0):.1f} s")
    typer.echo(str(out))
