"""`smartmask train-planner`: train the LLaVA planner's two stages with Ray Train and register it (flow
`train-planner`, docs/planner_llava.md).

Everything wrong with the job is exit 2 with one line naming the flag, before Prefect or Ray start: the
dataset, the stage, LoRA with the align stage, the run id, and the base model (missing: offline there is no
LLaVA to download; not loadable; not a LLaVA). The last line of stdout is the planner version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli_app import LakeOpt, app, bad_input, lake_folder, offline_defaults, one_line, start_prefect

STAGES_HELP = "align (projector only) | instruct (projector + language model) | both (align, then instruct)"


def check_base(base: str | None) -> str:
    """`--base` as a loadable LLaVA (its config, read through the project's loader: offline-aware, nothing
    downloaded); exit 2 naming the flag otherwise."""
    if not base:
        raise bad_input("--base: no LLaVA base model given, and offline there is none to download: pass a "
                        "local LLaVA directory (or a cached hub id such as llava-hf/llava-1.5-7b-hf)")
    from transformers import AutoConfig, LlavaConfig

    from smartmask.pretrained import ModelNotFound, load_pretrained

    try:
        config = load_pretrained(AutoConfig, base)
    except (ModelNotFound, ValueError) as e:
        raise bad_input(f"--base: {one_line(e)}") from None
    if not isinstance(config, LlavaConfig):
        kind = type(config).__name__.removesuffix("Config")
        raise bad_input(f"--base: {base!r} is a {kind} model, not a LLaVA (LlavaForConditionalGeneration)")
    local = Path(base).expanduser()
    # Checked here: the workers would otherwise each fail on it later, after Ray started.
    if local.is_dir() and not any(local.glob("*.safetensors")):
        raise bad_input(f"--base: {base!r} has no *.safetensors weights (pickled weights are never loaded)")
    return base


@app.command("train-planner")
def train_planner(
    dataset: Annotated[str, typer.Option("--dataset", help="NAME or NAME@VERSION (default: newest version)")],
    stage: Annotated[str, typer.Option("--stage", help=STAGES_HELP)] = "both",
    base: Annotated[str | None, typer.Option(
        "--base", help="the LLaVA to start from: a local directory or a cached hub id (required offline)")
    ] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", min=1, max=10_000_000, help="steps per stage")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, max=1024, help="Ray Train workers, 1..1024")] = 1,
    lora: Annotated[bool, typer.Option(
        "--lora", help="instruct: train LoRA adapters on the language model (merged when registered)")
    ] = False,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", min=1, max=65_536, help="global batch, 1..65,536")] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="one GPU per worker, NCCL, bf16 autocast")] = False,
    run_id: Annotated[str | None, typer.Option("--run-id", help="rerun an id to resume it")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address")] = None,
    lake: LakeOpt = None,
) -> None:
    """Train the LLaVA box planner (paper §3.3: align, then instruct) on a dataset version with Ray Train and
    register it under <lake>/planners/ (use it as `llava:<version>`)."""
    offline_defaults()
    root = lake_folder(lake, writes=True)
    from flows.train_planner import STAGE_CHOICES

    if stage not in STAGE_CHOICES:
        raise bad_input(f"--stage: must be one of {', '.join(STAGE_CHOICES)}, got {stage!r}")
    if lora and stage == "align":
        raise bad_input("--lora: LoRA adapters train in the instruct stage; --stage align trains only the "
                        "projector")
    if run_id is not None and not run_id.replace("-", "").replace("_", "").isalnum():
        raise bad_input(f"--run-id: must be letters, digits, '-' or '_', got {run_id!r}")
    from smartmask.planner.llava_train import PlannerTrainConfig

    batch = batch_size or PlannerTrainConfig().batch_size  # split evenly over the workers, as each one asserts
    if batch % workers:
        flag = "--batch-size" if batch_size else "--workers"
        raise bad_input(f"{flag}: the batch of {batch} does not split evenly over {workers} workers")
    from smartmask.registry import NotFound, resolve_dataset

    try:
        resolve_dataset(root, dataset)
    except NotFound as e:
        raise bad_input(f"--dataset: {e}") from None
    base = check_base(base)
    from flows.train_planner import PlannerJob
    from flows.train_planner import train_planner as flow
    from smartmask.lake.locks import LockHeld
    from smartmask.pretrained import ModelNotFound

    start_prefect()
    try:
        out = flow(PlannerJob(dataset=dataset, base=base, stage=stage, workers=workers, gpu=gpu, lora=lora,
                              lake=str(root), run_id=run_id, steps=steps, batch_size=batch_size,
                              ray_address=ray_address))
    except ModelNotFound as e:
        raise bad_input(f"--base: {e}") from None
    except LockHeld as e:
        raise bad_input(f"--run-id: {e}") from None
    for s in out["stages"]:
        last = s["losses"][-1][1] if s["losses"] else None
        typer.echo(f"stage {s['stage']}: {s['steps']} steps, final loss {last}")
    typer.echo(f"trained on {out['dataset']}@{out['dataset_version']} (run {out['run_id']}); "
               f"use it as --planner llava:{out['planner_version']}")
    typer.echo(out["planner_version"])
