"""Prefect tasks for the LLaVA planner: `fit_planner_task` runs one training stage under Ray Train,
`register_planner_task` releases the stages' result as a planner version.

`planner_loop_per_worker` is what Ray Train runs on every worker: SmartMask's `RayExecutor` (rank, device, DDP
or the flat gloo all-reduce, checkpoints, reports) around
`smartmask.planner.llava_train.run_planner_training`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from smartmask.planner.llava import processor_resolution
from smartmask.planner.llava_train import (
    PlannerTrainConfig,
    load_processor,
    materialize,
    run_planner_training,
)
from smartmask.planner.store import register_planner
from tasks.train import RayExecutor, task_logger, torch_trainer


def planner_loop_per_worker(config: dict) -> None:
    import ray.train

    # Checkpoint scratch before Ray copies it into the run's storage: one dir per run, stage and rank, so a
    # replacement for a lost worker clears what the dead one left.
    rank = ray.train.get_context().get_world_rank()
    work = Path(tempfile.gettempdir()) / f"smartmask-planner-{config['run_id']}-{config['stage']}-rank{rank}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        run_planner_training(cfg=PlannerTrainConfig(**config["train"]), stage=config["stage"],
                             base=config["base"], init=list(config["init"]), lake=Path(config["lake"]),
                             dataset=config["dataset"], dataset_version=config["dataset_version"],
                             ex=RayExecutor(work), work_dir=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@task(name="fit-planner-stage", cache_policy=NO_CACHE)
def fit_planner_task(config: dict, workers: int, gpu: bool, storage: Path, name: str,
                     max_failures: int = 3) -> dict:
    """One stage (`config["stage"]`) on `workers` Ray Train workers; rerunning the same `name` resumes it.
    Returns the stage's last checkpoint (a folder in `storage`) and metrics."""
    trainer = torch_trainer(planner_loop_per_worker, config, name=name, storage=storage, workers=workers, gpu=gpu,
                            max_failures=max_failures)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"planner stage {config['stage']} of run {config['run_id']} finished without a "
                           f"checkpoint")
    metrics = dict(result.metrics or {})
    task_logger("smartmask.train_planner").info("planner stage %s (%s) finished at step %s, loss %s", config["stage"], name,
                   metrics.get("step"), metrics.get("loss"))
    return {"checkpoint": result.checkpoint.path, "metrics": metrics}


@task(name="register-planner", cache_policy=NO_CACHE)
def register_planner_task(lake: Path, base: str, checkpoints: list[str], stages: list[dict], dataset: str,
                          dataset_version: str, run_id: str, lora: bool) -> str:
    """The base with every stage replayed (LoRA merged), saved with its processor as a planner version."""
    processor = load_processor(base)
    model = materialize(base, checkpoints)
    return register_planner(lake, model=model, processor=processor, base=base, dataset=dataset,
                            dataset_version=dataset_version, run_id=run_id, stages=stages,
                            resolution=processor_resolution(processor), lora=lora)
