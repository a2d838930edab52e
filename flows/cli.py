"""The `smartmask` console entry point. Exit codes: 0 done, 2 bad input (one line on stderr), other = failure.

Heavy imports (Prefect, torch) happen inside the commands that need them, so `smartmask query` stays fast.
Every command that writes prints the id of what it wrote as the last line of its output; the read-only ones
(`query`, `datasets`, `models`) print only their table, in `--format table|csv|json`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows import (  # noqa: F401  (register their commands)
    cli_bulk,
    cli_dashboard,
    cli_design,
    cli_eval,
    cli_inference,
    cli_layout,
    cli_plan_check,
    cli_planner,
)
from flows.cli_app import (
    SEED_MAX,
    ExplicitLakeOpt,
    Format,
    FormatOpt,
    LakeOpt,
    app,
    bad_input,
    lake_folder,
    offline_defaults,
    one_line,
    output_folder,
    start_prefect,
)

# Local worker processes: more than a few per core only adds start-up cost and memory (each imports the library).
MAX_WORKERS = 256
WORKERS_HELP = f"local worker processes, 1..{MAX_WORKERS}"


@app.command()
def synth(out: Annotated[Path, typer.Option("--out", help="Output directory")],
          scenes: Annotated[int, typer.Option("--scenes", min=1, max=1_000_000, help="1..1,000,000")] = 200,
          seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="0..2**32-1")] = 0,
          workers: Annotated[int, typer.Option("--workers", min=1, max=MAX_WORKERS, help=WORKERS_HELP)] = max(1, os.cpu_count() or 1),
          small: Annotated[bool, typer.Option("--small", "--tiny", help="160x120 scenes with few objects")] = False,
          world: Annotated[str, typer.Option("--world", help="classic (shape templates) | context (shapes follow "
                                                             "their surroundings: datasets/README.md)")] = "classic",
          ) -> None:
    """Generate the synthetic amodal world: OUT/annotations.json (COCOA format) + OUT/images/."""
    import dataclasses

    from smartmask.config import WORLDS, SynthConfig
    from smartmask.synth import generate

    if world not in WORLDS:
        raise typer.BadParameter(f"expected one of {', '.join(WORLDS)}, got {world!r}", param_hint="--world")
    out = output_folder(out)  # never inside a lake's published data, and writable: before any scene is drawn
    cfg = dataclasses.replace(SynthConfig.small() if small else SynthConfig(), world=world)
    path = generate(out, scenes, seed, cfg, workers=workers)
    typer.echo(str(path))


@app.command()
def rebuild(source: Annotated[str, typer.Option("--source", help="auto:FILE | cocoa:FILE | kins:FILE | amodal-coco:FILE | jsonl:FILE (see datasets/README.md)")],
            images: Annotated[Path, typer.Option("--images", help="Directory the file names are relative to")],
            name: Annotated[str, typer.Option("--name", help="Dataset name")],
            lake: LakeOpt = None,
            workers: Annotated[int, typer.Option("--workers", min=1, max=MAX_WORKERS, help=WORKERS_HELP)] = max(1, os.cpu_count() or 1),
            shard_size: Annotated[int, typer.Option("--shard-size", min=1, max=100_000, help="images per shard, 1..100,000")] = 500,
            captioner: Annotated[str, typer.Option(
                "--captioner", help="template | instructblip:DIR_OR_HUB_ID")] = "template",
            caption_prompt: Annotated[str | None, typer.Option("--caption-prompt")] = None,
            caption_batch_size: Annotated[int, typer.Option("--caption-batch-size", min=1, max=1024, help="1..1024")] = 32,
            caption_actors: Annotated[int, typer.Option("--caption-actors", min=1, max=1024, help="1..1024")] = 1,
            wait: Annotated[float, typer.Option(
                "--wait", min=0, help="seconds to wait for another run rebuilding the same version (default: "
                                      "exit 2 at once)")] = 0.0) -> None:
    """Ingest → validate → order → publish a dataset version (Prefect flow `rebuild_dataset`).

    Exit 2 with one line when the source is unusable, when every record is rejected (the rejects stay queryable),
    or when another run holds the same version's lock (`--wait` to wait for it)."""
    lake_folder(lake, writes=True)  # a lake nested in another lake's published data is refused before any work
    offline_defaults()
    from smartmask.config import RebuildConfig
    from smartmask.sources import SourceError

    if not name.replace("-", "").replace("_", "").isalnum():
        raise bad_input(f"dataset name must be letters, digits, '-' or '_', got {name!r}")
    if not images.is_dir():
        raise bad_input(f"images directory not found: {images}")
    from smartmask.sources import load_source

    try:  # fail fast with exit 2 before starting Prefect when the source itself is unusable
        parsed = load_source(source)
    except SourceError as e:
        raise bad_input(str(e)) from None
    if getattr(parsed, "detected", None):
        typer.echo(f"source: detected {parsed.detected} ({parsed.source})", err=True)
    from flows.rebuild_dataset import rebuild_dataset
    from smartmask.lake.locks import LockHeld
    from smartmask.publish import NoAcceptedRecords, PublishRefused

    if captioner != "template" and not captioner.startswith("instructblip:"):
        raise bad_input(f"captioner must be 'template' or 'instructblip:DIR_OR_HUB_ID', got {captioner!r}")
    from smartmask.captioning import captioner_id
    from smartmask.pretrained import ModelNotFound

    try:  # resolves the model's revision: a model that cannot be found offline is bad input, found before any work
        captioner_id(captioner)
    except (ModelNotFound, ValueError) as e:
        raise bad_input(f"--captioner: {e}") from None
    cfg = RebuildConfig(workers=workers, shard_size=shard_size, captioner=captioner,
                        caption_batch_size=caption_batch_size, caption_actors=caption_actors,
                        **({"caption_prompt": caption_prompt} if caption_prompt else {}))
    start_prefect()
    try:
        m = rebuild_dataset(source, str(images), name, lake, cfg, lock_wait_s=wait)
    except LockHeld as e:
        raise bad_input(f"{e} (or rerun with --wait SECONDS)") from None
    except NoAcceptedRecords as e:
        raise bad_input(str(e)) from None
    except PublishRefused as e:  # an incomplete staging, not bad input: the rerun repairs it
        typer.echo(f"error: {one_line(e)}", err=True)
        raise typer.Exit(1) from None
    c = m["counts"]
    typer.echo(" ".join(f"{k}: {v['accepted']}/{v['in']} accepted" for k, v in c.items()))
    typer.echo(m["version"])


@app.command()
def train(dataset: Annotated[str, typer.Option("--dataset", help="NAME or NAME@VERSION (default: newest version)")],
          preset: Annotated[str, typer.Option("--preset", help="tiny | sd15")] = "tiny",
          base_model: Annotated[str | None, typer.Option("--base-model", help="sd15: SD 1.5 directory or hub id")] = None,
          workers: Annotated[int, typer.Option("--workers", min=1, max=1024, help="Ray Train workers, 1..1024")] = 1,
          gpu: Annotated[bool, typer.Option("--gpu", help="one GPU per worker, NCCL, bf16 autocast")] = False,
          lake: LakeOpt = None,
          run_id: Annotated[str | None, typer.Option("--run-id", help="rerun an id to resume it")] = None,
          steps: Annotated[int | None, typer.Option("--steps", min=1, max=10_000_000, help="1..10,000,000")] = None,
          time_budget: Annotated[float | None, typer.Option("--time-budget", help="seconds; stop at a checkpoint")] = None,
          batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, max=65_536, help="global batch, 1..65,536")] = None,
          checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every", min=1, max=10_000_000)] = None,
          ray_address: Annotated[str | None, typer.Option("--ray-address")] = None,
          no_eval: Annotated[bool, typer.Option(
              "--no-eval", help="do not score the new model on its dataset's default eval set")] = False) -> None:
    """Train SmartMask on a dataset version with Ray Train, register the model version (flow `train`), and score it
    on the dataset version's default eval set (flow `evaluate`; the report is printed)."""
    root = lake_folder(lake, writes=True)
    offline_defaults()
    from smartmask.lake.locks import LockHeld
    from smartmask.pretrained import ModelNotFound
    from smartmask.registry import NotFound, resolve_dataset

    if preset not in ("tiny", "sd15"):
        raise bad_input(f"preset must be tiny or sd15, got {preset!r}")
    if preset == "sd15" and not base_model:
        raise bad_input("--preset sd15 needs --base-model (a Stable Diffusion 1.5 directory or hub id)")
    if run_id is not None and not run_id.replace("-", "").replace("_", "").isalnum():
        raise bad_input(f"run id must be letters, digits, '-' or '_', got {run_id!r}")
    try:
        resolve_dataset(root, dataset)
    except NotFound as e:
        raise bad_input(str(e)) from None
    from flows.train import TrainJob
    from flows.train import train as train_flow

    start_prefect()
    try:
        out = train_flow(TrainJob(dataset=dataset, preset=preset, base_model=base_model, workers=workers, gpu=gpu,
                                  lake=lake, run_id=run_id, steps=steps, time_budget_s=time_budget,
                                  batch_size=batch_size, checkpoint_every=checkpoint_every,
                                  ray_address=ray_address, evaluate=not no_eval))
    except ModelNotFound as e:
        raise bad_input(str(e)) from None
    except LockHeld as e:
        raise bad_input(f"--run-id: {e}") from None
    typer.echo(f"trained {out['dataset']}@{out['dataset_version']} (run {out['run_id']}): {out['metrics']}")
    if out.get("eval_report"):
        typer.echo(out["eval_report"])
        typer.echo(f"evaluation run {out['eval_run']}: {out['eval_folder']}")
    elif out.get("eval_error"):
        typer.echo(f"evaluation skipped: {out['eval_error']}")
    typer.echo(out["model_version"])


MaxRowsOpt = Annotated[int, typer.Option("--max-rows", min=1, help="rows shown by --format table")]


def _print_table(table, fmt: Format, max_rows: int) -> None:
    from smartmask.lake.render import render

    typer.echo(render(table, fmt.value, max_rows))


@app.command()
def query(sql: Annotated[str, typer.Argument(help="A read-only SELECT over the lake's views")],
          lake: LakeOpt = None, max_rows: MaxRowsOpt = 50, fmt: FormatOpt = Format.table) -> None:
    """Run a read-only DuckDB SELECT over the lake (views: images, layers, rejects, vocabulary, …)."""
    from smartmask.lake.query import QueryRefused, run_query

    root = lake_folder(lake, must_exist=True)  # a mistyped --lake is an error, not an empty answer
    try:
        table = run_query(root, sql)
    except QueryRefused as e:
        raise bad_input(str(e)) from None
    _print_table(table, fmt, max_rows)


def _catalog(kind: str, lake: str | None, fmt: Format, max_rows: int) -> None:
    from smartmask.lake import catalog

    root = lake_folder(lake, must_exist=True)
    try:
        table = catalog.list_datasets(root) if kind == "datasets" else catalog.list_models(root)
    except catalog.CatalogError as e:  # a damaged lake: a failure, not bad input
        typer.echo(f"error: {one_line(e)}", err=True)
        raise typer.Exit(1) from None
    _print_table(table, fmt, max_rows)


@app.command()
def datasets(lake: LakeOpt = None, max_rows: MaxRowsOpt = 50, fmt: FormatOpt = Format.table) -> None:
    """List the published dataset versions: accepted/rejected images, instances and classes, source, newest."""
    _catalog("datasets", lake, fmt, max_rows)


@app.command()
def models(lake: LakeOpt = None, max_rows: MaxRowsOpt = 50, fmt: FormatOpt = Format.table) -> None:
    """List the registered model versions: preset, dataset@version, run id, steps and losses, newest first."""
    _catalog("models", lake, fmt, max_rows)


@app.command()
def demo(lake: LakeOpt = None,
         scenes: Annotated[int, typer.Option("--scenes", min=1, max=100_000, help="1..100,000")] = 200,
         seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="0..2**32-1")] = 0,
         train_budget: Annotated[float, typer.Option("--train-budget", help="seconds of training; 0 skips")] = 180.0,
         train_steps: Annotated[int | None, typer.Option(
             "--train-steps", min=0, max=10_000_000, help="train exactly this many steps instead of a time budget (0 skips)")] = None,
         bulk_items: Annotated[int, typer.Option(
             "--bulk-items", min=0, max=100_000, help="items in the bulk insertion run, 0..100,000 (0 skips)")] = 100,
         ) -> None:
    """Run every stage on the embedded synthetic world: synth → rebuild → train → held-out checks → insert → bulk
    insertion."""
    lake_folder(lake, writes=True)
    offline_defaults()
    from flows.demo import demo as demo_flow

    start_prefect()
    out = demo_flow(lake=lake, scenes=scenes, seed=seed, train_budget_s=train_budget, train_steps=train_steps,
                    bulk_items=bulk_items)
    typer.echo(out["report"])
    typer.echo(out["last_id"])


@app.command()
def serve(config: Annotated[Path, typer.Option("--config", help="Serve config (TOML; see README)")] = Path("smartmask.toml"),
          lake: ExplicitLakeOpt = None) -> None:
    """Serve Prefect deployments with their schedules (starts a local Prefect server unless PREFECT_API_URL is set)."""
    if lake is not None:
        lake_folder(lake, writes=True)
    offline_defaults()
    from flows.serve import ServerError
    from flows.serve import serve as serve_deployments
    from flows.serve_config import load_serve_config

    try:
        cfg = load_serve_config(config)
    except ValueError as e:
        raise bad_input(str(e)) from None
    try:
        serve_deployments(cfg, lake, echo=typer.echo)
    except ServerError as e:
        typer.echo(f"error: {' '.join(str(e).split())}", err=True)
        raise typer.Exit(1) from None


def main() -> None:  # pragma: no cover - console entry point
    """`smartmask` as a function: usage errors are one line (see `flows.cli_app.OneLineGroup`), exit code as above."""
    sys.exit(app(prog_name="smartmask", standalone_mode=False))
