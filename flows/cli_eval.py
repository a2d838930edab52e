"""`smartmask evaluate` (the `evaluate` flow) and `smartmask eval-set` (freeze a named eval set).

Everything wrong with the job as a whole is exit 2 with one line naming the flag, before Prefect or Ray start: the
model version, the eval set (missing, or edited by hand), a baseline, a guidance type, the inpainter, the run name
taken by other settings, the run locked. The report is printed; the last line of stdout is the run name.
"""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli_app import (
    LakeOpt,
    app,
    bad_input,
    device_option,
    lake_folder,
    offline_defaults,
    one_line,
    start_prefect,
)
from flows.cli_inference import N_MAX, ModelOpt, SchedOpt, StepsOpt


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@app.command("evaluate")
def evaluate(
    model: ModelOpt = None,
    eval_set: Annotated[str | None, typer.Option(
        "--eval-set", help="a frozen eval set's name (default: the model's dataset version's default set, built on "
                           "first use)")] = None,
    baselines: Annotated[str, typer.Option(
        "--baselines", help="comma-separated: box, oracle, sd-inpaint[:SPEC], sdxl-inpaint[:SPEC], "
                            "inpaint-segment:SEGMENTER; '' for none")] = "box,oracle",
    compare: Annotated[list[str] | None, typer.Option(
        "--compare", help="a model version to pair with on the same items (repeatable; default: the previous "
                          "version evaluated on this set)")] = None,
    guidance: Annotated[str, typer.Option("--guidance", help="comma-separated: none, box, point, scribble")
                        ] = "none,box,point,scribble",
    n: Annotated[int, typer.Option("--n", min=1, max=N_MAX, help="suggestions per item")] = 4,
    steps: StepsOpt = 20,
    scheduler: SchedOpt = "dpm",
    inpainter: Annotated[str, typer.Option(
        "--inpainter", help="auto (synthetic on the synthetic world, else none) | none (mask metrics only) | "
                            "synthetic | controlnet-sd15[…] | sd-inpaint[…] | a pipeline directory")] = "auto",
    inpaint_steps: Annotated[int | None, typer.Option(
        "--inpaint-steps", min=1, max=1000, help="steps of the generative inpainters (default: their own)")] = None,
    fid_extractor: Annotated[str, typer.Option(
        "--fid-extractor", help="inception (clean-fid's: its weights file in /tmp) | random-conv:SEED (offline) | "
                                "auto")] = "auto",
    clip: Annotated[str, typer.Option(
        "--clip", help="a CLIP directory or hub id | tiny-random:SEED (offline stand-in) | auto")] = "auto",
    workers: Annotated[int, typer.Option("--workers", min=1, max=1024, help="evaluator actors (default 2)")] = 2,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="join this Ray cluster (auto | HOST:PORT | ray://HOST:PORT); default: a local Ray")
    ] = None,
    run: Annotated[str | None, typer.Option(
        "--run", help="run name (default: EVAL_SET--MODEL--CONFIGHASH; rerun a name to resume it)")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu | cuda | ... (default: cuda when available)")
                      ] = None,
    lake: LakeOpt = None,
    wait: Annotated[float, typer.Option("--wait", min=0, help="seconds to wait for another process running the "
                                                              "same run")] = 0.0,
) -> None:
    """Score a model version and baselines on a frozen eval set (Prefect flow `evaluate`, Ray Data).

    Writes <lake>/runs/kind=eval/run=RUN/ (item rows `eval_items`, aggregates `eval_summary`, report.md)."""
    offline_defaults()
    root = lake_folder(lake, writes=True)
    device = device_option(device)
    from smartmask.evaluation.config import EvalConfig, EvalConfigError
    from smartmask.evaluation.eval_set import EvalSetError
    from smartmask.evaluation.store import EvalIncomplete, EvalRefused
    from smartmask.inference.errors import BadInput
    from smartmask.inference.inpaint import parse_spec
    from smartmask.lake.locks import LockHeld
    from smartmask.registry import NotFound, resolve_model

    try:
        version = resolve_model(root, model)
    except NotFound as e:
        raise bad_input(f"--model: {e}") from None
    try:
        if inpainter not in ("auto", "none"):
            parse_spec(inpainter)
    except ValueError as e:
        raise bad_input(f"--inpainter: {e}") from None
    try:
        cfg = EvalConfig(model_version=version, baselines=_csv(baselines), guidance=_csv(guidance), n_suggestions=n,
                         steps=steps, scheduler=scheduler, inpainter=inpainter, inpaint_steps=inpaint_steps,
                         fid_extractor=fid_extractor,
                         clip=clip, device=device)
    except EvalConfigError as e:
        raise bad_input(f"--{e.field}: {e}") from None
    for v in compare or []:
        try:
            resolve_model(root, v)
        except NotFound as e:
            raise bad_input(f"--compare: {e}") from None
    from flows.evaluate import evaluate as flow
    from flows.evaluate import resolve_job

    try:  # before Prefect and Ray start
        cfg, eval_set, _ = resolve_job(root, cfg, eval_set)
    except EvalSetError as e:
        raise bad_input(f"--eval-set: {e}") from None
    except EvalConfigError as e:
        raise bad_input(f"--{e.field}: {e}") from None
    except BadInput as e:
        raise bad_input(f"--{e.field}: {e}") from None
    start_prefect()
    try:
        manifest = flow(cfg, eval_set, str(root), run=run, compare=list(compare) if compare else None,
                        workers=workers, ray_address=ray_address, lock_wait_s=wait)
    except EvalRefused as e:
        raise bad_input(f"--run: {e}") from None
    except LockHeld as e:
        raise bad_input(f"{e} (or rerun with --wait SECONDS)") from None
    except EvalIncomplete as e:
        typer.echo(f"error: {one_line(e)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(manifest["report"])
    typer.echo(manifest["folder"])
    typer.echo(manifest["run"])


@app.command("eval-set")
def eval_set_cmd(
    name: Annotated[str, typer.Argument(help="the eval set's name (letters, digits, '-', '_', '.')")],
    dataset: Annotated[str, typer.Option("--dataset", help="NAME[@VERSION] whose held-out split it draws from")],
    items: Annotated[int, typer.Option("--items", min=1, max=1_000_000, help="items at most")] = 200,
    per_image: Annotated[int, typer.Option("--per-image", min=1, max=1000, help="objects per image at most")] = 2,
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**31 - 1, help="selection and item seeds")] = 0,
    lake: LakeOpt = None,
) -> None:
    """Freeze an eval set: held-out items of a dataset version with their guidance and seeds. Immutable: the same
    name with other content is refused (exit 2); the same content again is a no-op."""
    root = lake_folder(lake, writes=True)
    from smartmask.evaluation.eval_set import EvalSetConfig, EvalSetError, build_eval_set
    from smartmask.registry import NotFound, resolve_dataset

    try:
        ds, version = resolve_dataset(root, dataset)
    except NotFound as e:
        raise bad_input(f"--dataset: {e}") from None
    try:
        es = build_eval_set(root, name, ds, version, EvalSetConfig(n_items=items, per_image=per_image, seed=seed))
    except EvalSetError as e:
        raise bad_input(f"NAME: {e}") from None
    typer.echo(f"eval set {es.name}: {es.meta['items']} items of {ds}@{version}, content hash "
               f"{es.meta['content_hash'][:12]}")
    typer.echo(es.name)
