"""`smartmask bulk-insert CATALOG --out RUN_NAME`: the `bulk_insert` flow over a catalog, on Ray Data.

Everything that can be wrong with the job as a whole is checked before Prefect or Ray start, exit 2 with one
line naming the flag: the catalog (missing, unknown format, unknown or missing columns), the run name, the model
version, the inpainter and segmenter files, the allowed roots, a `--stage` setting, the run name taken by a
different catalog or config, the run locked by another process. A bad row is never an exit: it is a reject row.
The last line of stdout is the run name; the summary table comes before it.
"""

from __future__ import annotations

import dataclasses
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
    one_line,
    start_prefect,
)
from flows.cli_inference import N_MAX, STEPS_MAX, ModelOpt, SchedOpt, SegOpt, StepsOpt

STAGE_KEYS = {"concurrency": int, "batch_size": int, "num_cpus": float, "num_gpus": float}


def parse_stage_options(values: list[str], workers: int) -> dict:
    """`--stage suggest:concurrency=2 --stage insert:num_gpus=0.5` on top of the defaults for `workers`."""
    from smartmask.bulk.config import STAGE_SETTINGS, StageResources, default_stages

    stages = default_stages(workers)
    for v in values:
        name, sep, rest = v.partition(":")
        key, eq, val = rest.partition("=")
        if not sep or not eq or name not in STAGE_SETTINGS or key not in STAGE_KEYS:
            raise bad_input(f"--stage: expected STAGE:KEY=VALUE with STAGE one of {', '.join(STAGE_SETTINGS)} and KEY "
                            f"one of {', '.join(STAGE_KEYS)}, got {v!r}")
        try:
            num = STAGE_KEYS[key](val)
            stages[name] = dataclasses.replace(stages[name], **{key: num})
        except ValueError as e:
            raise bad_input(f"--stage {v}: {e}") from None
        assert isinstance(stages[name], StageResources)
    return stages


@app.command("bulk-insert")
def bulk_insert(
    catalog: Annotated[Path, typer.Argument(help="CATALOG.parquet | .csv | .jsonl, one row per item")],
    out: Annotated[str, typer.Option("--out", help="run name; rerun the same name to resume it")],
    model: ModelOpt = None,
    segmenter: SegOpt = None,
    inpainter: Annotated[str, typer.Option(
        "--inpainter", help="controlnet-sd15[:BASE[+CN]] | controlnet-sdxl[…] | sd-inpaint[:BASE] | "
                            "sdxl-inpaint[:BASE] | synthetic | a pipeline directory")] = "controlnet-sd15",
    allow_root: Annotated[list[Path] | None, typer.Option(
        "--allow-root", help="a folder images may be read from (repeatable; default: the catalog's folder)")] = None,
    allow_scheme: Annotated[list[str] | None, typer.Option(
        "--allow-scheme", help="an fsspec scheme images may be read from, e.g. s3 (repeatable)")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="join this Ray cluster (auto | HOST:PORT | ray://HOST:PORT); default: a local Ray")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=1024, help="tasks/actors per stage, 1..1024")] = 1,
    placement: Annotated[str, typer.Option(
        "--placement", help="auto (fused without GPUs, else staged) | fused (all stages in one actor per worker) | "
                            "staged (each stage its own tasks/actors)")] = "auto",
    stage: Annotated[list[str] | None, typer.Option(
        "--stage", help="STAGE:KEY=VALUE, e.g. suggest:concurrency=2 or insert:num_gpus=0.5 (repeatable; stages "
                        "decode layout suggest insert write (staged), fused; keys concurrency batch_size num_cpus "
                        "num_gpus)")] = None,
    n: Annotated[int, typer.Option("--n", min=1, max=N_MAX, help="suggestions per item unless the row says")] = 4,
    seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="seed unless the row says")] = 0,
    steps: StepsOpt = 20,
    scheduler: SchedOpt = "dpm",
    inpaint_steps: Annotated[int | None, typer.Option(
        "--inpaint-steps", min=1, max=STEPS_MAX, help=f"inpainting steps, 1..{STEPS_MAX}")] = None,
    max_image_pixels: Annotated[int, typer.Option(
        "--max-image-pixels", min=1, max=1_000_000_000, help="larger images are rejected (default 64,000,000)")
    ] = 64_000_000,
    device: Annotated[str | None, typer.Option("--device", help="cpu | cuda | ... (default: cuda when available)")
                      ] = None,
    lake: LakeOpt = None,
    wait: Annotated[float, typer.Option("--wait", min=0, help="seconds to wait for another process running the "
                                                              "same run name (default: exit 2 at once)")] = 0.0,
) -> None:
    """Insert objects into every image of a catalog (Prefect flow `bulk_insert`, Ray Data); resumable by run name.

    Writes <lake>/runs/kind=bulk_insert/run=RUN_NAME/ (PNGs, one `insert_items` row per catalog row, manifest).
    Exit 0 when every row is accounted for (inserted or rejected with its reason)."""
    offline_defaults()
    root = lake_folder(lake, writes=True)
    device = device_option(device)
    if placement not in ("auto", "fused", "staged"):
        raise bad_input(f"--placement: must be auto, fused or staged, got {placement!r}")
    if scheduler not in ("dpm", "ddim"):
        raise bad_input(f"--scheduler: must be dpm or ddim, got {scheduler!r}")
    roots = []
    for r in allow_root or []:
        if not r.is_dir():
            raise bad_input(f"--allow-root: not a directory: {r}")
        roots.append(str(r.resolve()))
    from smartmask.bulk.catalog import CatalogError
    from smartmask.bulk.config import BulkConfig
    from smartmask.bulk.store import BulkIncomplete, BulkRefused
    from smartmask.inference.errors import BadInput
    from smartmask.inference.inpaint import InpaintConfig
    from smartmask.lake.locks import LockHeld
    from smartmask.registry import NotFound, resolve_model

    try:
        version = resolve_model(root, model)
    except NotFound as e:
        raise bad_input(f"--model: {e}") from None
    icfg = InpaintConfig() if inpaint_steps is None else InpaintConfig(steps=inpaint_steps)
    cfg = BulkConfig(model_version=version, segmenter=segmenter, inpainter=inpainter, inpaint=icfg, n_suggestions=n,
                     seed=seed, steps=steps, scheduler=scheduler, allow_roots=tuple(roots), max_image_pixels=max_image_pixels,
                     allow_schemes=tuple(s.lower().removesuffix("://") for s in allow_scheme or []), device=device,
                     placement=placement, stages=parse_stage_options(stage or [], workers))
    from flows.bulk_insert import bulk_insert as flow
    from flows.bulk_insert import check_job

    flags = {"model": "--model", "inpainter": "--inpainter", "segmenter": "--segmenter"}
    try:  # before Prefect and Ray start: a bad catalog or model costs no start-up
        check_job(root, catalog.expanduser().resolve(), out, cfg)
    except CatalogError as e:
        raise bad_input(f"CATALOG: {e}") from None
    except BulkRefused as e:
        raise bad_input(f"--out: {e}") from None
    except BadInput as e:
        raise bad_input(f"{flags.get(e.field, '--' + str(e.field))}: {e}") from None
    start_prefect()
    try:
        manifest = flow(str(catalog), out, cfg, str(root), ray_address=ray_address, lock_wait_s=wait)
    except BulkRefused as e:
        raise bad_input(f"--out: {e}") from None
    except LockHeld as e:
        raise bad_input(f"{e} (or rerun with --wait SECONDS)") from None
    except BulkIncomplete as e:
        typer.echo(f"error: {one_line(e)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(manifest["summary"])
    typer.echo(manifest["folder"])
    typer.echo(out)
