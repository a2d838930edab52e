"""Flow `train`: resolve the dataset version, train SmartMask with Ray Train, register the model version.

`python -m flows.train --dataset synth --preset tiny --workers 2`. Ray starts here (local by default, or joins
`--ray-address`). Ray Train's files live under `<lake>/_ray/train/<run id>/`; the loss curve goes to
`<lake>/runs/kind=train/run=<run id>/metrics/`. Rerunning with the same `--run-id` resumes from its last checkpoint.

While it trains, the driver shows the workers' progress on stderr (tasks/train.py `fit_task`): a bar on a
terminal, a line every `progress_every_s` seconds otherwise (`SMARTMASK_PROGRESS=auto|bar|lines|off`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from prefect import flow
from prefect.states import Failed

from flows.ray_runtime import ray_session
from smartmask import presets
from smartmask.lake.locks import LockHeld, lake_lock
from smartmask.lake.paths import lake_root
from smartmask.lake.paths import run_dir as runs_dir
from smartmask.registry import resolve_dataset
from smartmask.training.loop import config_dict
from tasks.train import fit_task, register_task


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainJob:
    """One `smartmask train` run: which data, which preset, on what (the CLI builds this; so does the demo)."""

    dataset: str  # NAME or NAME@VERSION
    preset: str = "tiny"
    base_model: str | None = None  # sd15: a Stable Diffusion 1.5 directory or hub id
    workers: int = 1
    gpu: bool = False
    lake: str | None = None
    run_id: str | None = None  # rerun an id to resume it
    # Overrides of the preset's TrainConfig (None keeps the preset's value).
    steps: int | None = None
    time_budget_s: float | None = None
    batch_size: int | None = None
    checkpoint_every: int | None = None
    guidance_mix: tuple[float, float, float, float] | None = None  # none / box / blob / scribble
    ray_address: str | None = None
    max_failures: int = 3
    progress_every_s: float | None = None  # live progress updates (None: $SMARTMASK_PROGRESS_EVERY_S, else 5 s)
    evaluate: bool = True  # score the new model on its dataset version's default eval set (flow `evaluate`)
    eval_n_suggestions: int | None = None  # overrides of EvalConfig's n_suggestions / steps (None: its defaults)
    eval_steps: int | None = None


@flow(name="train", log_prints=True)
def train(job: TrainJob) -> dict:
    lake, preset, workers, gpu = job.lake, job.preset, job.workers, job.gpu
    root = lake_root(lake)
    name, version = resolve_dataset(root, job.dataset)
    areas = presets.tiny_target_areas(root, name, version) if preset == "tiny" else {}
    r = presets.recipe(preset, base_model=job.base_model, **areas)
    model_cfg, sample_cfg, train_cfg = r.model, r.sample, r.train
    if job.guidance_mix is not None:
        sample_cfg = dataclasses.replace(sample_cfg, guidance_mix=tuple(job.guidance_mix))
    overrides = {k: v for k, v in {"steps": job.steps, "time_budget_s": job.time_budget_s,
                                   "batch_size": job.batch_size, "checkpoint_every": job.checkpoint_every,
                                   "val_every": job.checkpoint_every}.items() if v is not None}
    if not gpu:  # share this machine's cores between the workers instead of oversubscribing them
        overrides["threads_per_worker"] = max(1, (os.cpu_count() or 1) // workers)
    train_cfg = dataclasses.replace(train_cfg, **overrides)
    run_id = job.run_id or f"{name}-{version[:8]}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = runs_dir(root, "train", run_id)
    config = config_dict(model_cfg, sample_cfg, train_cfg) | {
        "lake": str(root), "dataset": name, "dataset_version": version, "run_dir": str(run_dir)}
    # One process per run id: two resuming the same run would write the same checkpoints and metrics.
    try:
        with lake_lock(root, "train", run_id, what=f"training run {run_id}"), ray_session(address=job.ray_address):
            out = fit_task(config, workers, gpu, root / "_ray" / "train", run_id, job.max_failures,
                           job.progress_every_s)
            model_version = register_task(root, out["checkpoint"], config, name, version, run_id, out["metrics"])
    except LockHeld as e:
        return Failed(message=str(e), data=e)  # an expected outcome: one line, not a logged traceback
    print(f"model {model_version} from dataset {name}@{version} (run {run_id}): {out['metrics']}")
    result = {"model_version": model_version, "run_id": run_id, "dataset": name, "dataset_version": version,
              "metrics": out["metrics"]}
    if job.evaluate:
        overrides = {k: v for k, v in {"n_suggestions": job.eval_n_suggestions, "steps": job.eval_steps}.items()
                     if v is not None}
        result |= evaluate_new_model(root, model_version, workers, gpu, job.ray_address, overrides)
    return result


def evaluate_new_model(root, model_version: str, workers: int, gpu: bool, ray_address: str | None,
                       overrides: dict) -> dict:
    """The default eval set on a newly registered model (the `evaluate` flow as a subflow). A model is registered
    whatever its evaluation does: a failure (e.g. a dataset without a held-out split) is reported, not raised."""
    from flows.evaluate import evaluate
    from smartmask.evaluation.config import EvalConfig

    cfg = EvalConfig(model_version=model_version, device="cuda" if gpu else None, **overrides)
    state = evaluate(cfg, None, str(root),
                     workers=workers, ray_address=ray_address, return_state=True)
    if state.is_failed():
        print(f"evaluation of {model_version} skipped: {state.message}")
        return {"eval_error": state.message}
    manifest = state.result()
    return {"eval_run": manifest["run"], "eval_report": manifest["report"], "eval_folder": manifest["folder"]}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--base-model")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--lake")
    ap.add_argument("--run-id")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--no-eval", action="store_true", help="do not evaluate the new model")
    a = ap.parse_args()
    print(train(TrainJob(dataset=a.dataset, preset=a.preset, base_model=a.base_model, workers=a.workers, gpu=a.gpu,
                         lake=a.lake, run_id=a.run_id, steps=a.steps, evaluate=not a.no_eval))["model_version"])
