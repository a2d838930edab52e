"""`smartmask suggest` and `smartmask insert`: one image, in this process (no Prefect or Ray start-up to pay for a
single image; bulk jobs go through `bulk-insert`).

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

from flows.cli import LakeOpt, _bad_input, _offline_defaults, app

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


def _errors():
    from smartmask.inference.images import BadInput
    from smartmask.inference.layout import LayoutError
    from smartmask.models.loader import ModelNotFound
    from smartmask.registry import NotFound

    return BadInput, LayoutError, ModelNotFound, NotFound


def _suggest_job(image, obj, context, bbox, point, scribble, n, layout_from, segmenter, model, lake, seed, steps,
                 scheduler, device, loose_box=False):
    """Shared by suggest and insert: the loaded image, the model, the layout, the control and the suggestions."""
    from smartmask.inference.images import BadInput, load_image, load_mask
    from smartmask.inference.pipeline import load_for_inference, request_record, run_suggest, scene_layout
    from smartmask.inference.suggest import Control, SuggestConfig
    from smartmask.lake.layout import lake_root

    if not obj.strip():
        raise BadInput("--object is empty")
    if scheduler not in ("dpm", "ddim"):
        raise BadInput(f"--scheduler must be dpm or ddim, got {scheduler!r}")
    root = lake_root(lake)
    pixels = load_image(image)
    H, W = pixels.shape[:2]
    scribble_HW = load_mask(scribble, (H, W)) if scribble is not None else None
    control = Control.parse(H, W, bbox=bbox, point=point, scribble_HW=scribble_HW)
    cfg = SuggestConfig(n=n, steps=steps, scheduler=scheduler, seed=seed, fit_box=not loose_box)
    lm = load_for_inference(root, model, device=device)
    scene = scene_layout(pixels, lm, lake=root, layout_from=layout_from, segmenter=segmenter, device=device)
    result = run_suggest(pixels, lm, scene, control, obj, context, cfg)
    request = request_record(image, pixels, lm, scene, control, obj, context, cfg)
    return root, pixels, control, result, request


def _out_dir(out: Path | None, root: Path, kind: str) -> Path:
    if out is not None:
        return out
    run = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    return root / "runs" / f"kind={kind}" / f"run={run}"


@app.command()
def suggest(image: Annotated[Path, typer.Argument(help="The image to insert into")], obj: ObjOpt, context: CtxOpt,
            bbox: BboxOpt = None, point: PointOpt = None, scribble: ScribbleOpt = None, n: NOpt = 4,
            layout_from: LayoutOpt = None, segmenter: SegOpt = None, model: ModelOpt = None, lake: LakeOpt = None,
            out: Annotated[Path | None, typer.Option("--out", help="output folder (default: a run in the lake)")] = None,
            seed: SeedOpt = 0, steps: StepsOpt = 20, scheduler: SchedOpt = "dpm", device: DeviceOpt = None,
            loose_box: LooseOpt = False) -> None:
    """N mask suggestions for inserting --object into IMAGE: mask PNGs, an overlay preview, a JSON record each."""
    _offline_defaults()
    try:
        root, pixels, _, result, request = _suggest_job(image, obj, context, bbox, point, scribble, n, layout_from,
                                                        segmenter, model, lake, seed, steps, scheduler, device,
                                                        loose_box)
    except _errors() as e:
        raise _bad_input(str(e)) from None
    from smartmask.inference.pipeline import write_suggestions

    folder = _out_dir(out, root, "suggest")
    summary = write_suggestions(folder, pixels, result, request)
    for s in summary["suggestions"]:
        typer.echo(f"#{s['rank']} seed {s['seed']} score {s['score']:.3f} area {s['area_fraction']:.3f} "
                   f"bbox {s['bbox']}{' EMPTY' if s['empty'] else ''}")
    typer.echo(f"{len(summary['suggestions'])} suggestion(s), {summary['duplicates_dropped']} near-duplicate(s) "
               f"dropped, model {request['model_version']}, layout {request['layout_source']} "
               f"({request['unknown_regions']} unknown region(s)), {summary['seconds']:.1f} s")
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
    _offline_defaults()
    import dataclasses

    from smartmask.inference.images import BadInput, load_image, load_mask, save_png
    from smartmask.inference.inpaint import InpaintConfig, load_inpainter, parse_spec
    from smartmask.inference.insert import insert_object
    from smartmask.inference.paste import box_mask
    from smartmask.inference.pipeline import write_suggestions
    from smartmask.inference.suggest import Control
    from smartmask.lake.io import write_json_atomic

    try:
        if mask_from not in ("smartmask", "box"):
            raise BadInput(f"--mask-from must be smartmask or box, got {mask_from!r}")
        if not obj.strip():
            raise BadInput("--object is empty")
        try:
            parse_spec(inpainter)
        except ValueError as e:
            raise BadInput(str(e)) from None
        record: dict = {"object": obj, "context": context, "inpainter_spec": inpainter}
        if mask is not None or mask_from == "box":
            pixels = load_image(image)
            H, W = pixels.shape[:2]
            if mask is not None:
                chosen = load_mask(mask, (H, W))
                record["mask_source"] = f"file:{mask.resolve()}"
            else:
                control = Control.parse(H, W, bbox=bbox)
                if control.kind != "box":
                    raise BadInput("--mask-from box needs --bbox")
                chosen = box_mask(control.box, H, W)
                record["mask_source"] = "box-baseline"
            if not chosen.any():
                raise BadInput("the mask is empty: nothing to inpaint")
        else:
            _, pixels, _, result, request = _suggest_job(image, obj, context, bbox, point, scribble, n, layout_from,
                                                         segmenter, model, lake, seed, steps, scheduler, device,
                                                         loose_box)
            write_suggestions(out, pixels, result, request)
            if pick > len(result.suggestions):
                raise BadInput(f"--pick {pick}: only {len(result.suggestions)} distinct suggestion(s)")
            s = result.suggestions[pick - 1]
            if s.empty:
                raise BadInput(f"suggestion {pick} is empty (the model placed no {obj}); try another --seed or --pick")
            chosen = s.mask_HW
            record |= {"mask_source": f"smartmask:{request['model_version']}", "pick": pick, "suggest": request}
        cfg = InpaintConfig()
        if inpaint_steps is not None:
            cfg = dataclasses.replace(cfg, steps=inpaint_steps)
        painter = load_inpainter(inpainter, device=device, config=cfg)
    except _errors() as e:
        raise _bad_input(str(e)) from None
    try:
        res = insert_object(pixels, chosen, obj, context, painter, cfg, seed=seed)
    except ValueError as e:  # e.g. the synthetic inpainter asked for a class the world does not have
        raise _bad_input(str(e)) from None
    save_png(out / "inserted.png", res.image)
    save_png(out / "mask.png", chosen)
    save_png(out / "dilated-mask.png", res.dilated)
    write_json_atomic(record | res.record(), out / "insert.json")
    typer.echo(f"inserted {obj!r} with {res.inpainter_id}: mask {int(chosen.sum())} px, crop {res.crop_box} at "
               f"{res.native}px, {res.timings.get('total', 0.0):.1f} s")
    typer.echo(str(out))
