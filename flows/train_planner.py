"""Flow `train-planner`: resolve the dataset version, train the LLaVA planner's stages on Ray Train, register.

`python -m flows.train_planner --dataset synth --base DIR --stage both --workers 2`. Stage `align` (projector
only) then `instruct` (projector + language model, or LoRA adapters) each run as one Ray Train job named
`<run id>-<stage>` under `<lake>/_ray/train_planner/`; stage 2 starts from stage 1's checkpoint. The result is
registered under `<lake>/planners/version=<id>/` (smartmask/planner/store.py). Ray starts here (local by
default, or joins `--ray-address`). Rerunning a `--run-id` resumes each stage from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from prefect import flow
from prefect.states import Failed

from flows.ray_runtime import ray_session
from smartmask.lake.locks import LockHeld, lake_lock
from smartmask.lake.paths import lake_root
from smartmask.planner.llava_data import STAGES, check_stage
from smartmask.planner.llava_train import PlannerTrainConfig
from smartmask.registry import resolve_dataset
from tasks.train_planner import fit_planner_task, register_planner_task

STAGE_CHOICES = (*STAGES, "both")


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannerJob:
    """One `smartmask train-planner` run (the CLI builds it)."""

    dataset: str  # NAME or NAME@VERSION
    base: str  # a LLaVA directory or hub id (llava-hf/llava-1.5-7b-hf)
    stage: str = "both"  # align | instruct | both
    workers: int = 1
    gpu: bool = False
    lora: bool = False  # instruct: LoRA adapters (merged at registration) instead of the whole language model
    lake: str | None = None
    run_id: str | None = None  # rerun an id to resume it
    # Overrides of PlannerTrainConfig (None keeps its value).
    steps: int | None = None
    batch_size: int | None = None
    checkpoint_every: int | None = None
    ray_address: str | None = None
    max_failures: int = 3

    def stages(self) -> tuple[str, ...]:
        return STAGES if self.stage == "both" else (check_stage(self.stage),)


def planner_config(job: PlannerJob) -> PlannerTrainConfig:
    overrides = {k: v for k, v in {"steps": job.steps, "batch_size": job.batch_size,
                                   "checkpoint_every": job.checkpoint_every}.items() if v is not None}
    if not job.gpu:  # share this machine's cores between the workers instead of oversubscribing them
        overrides["threads_per_worker"] = max(1, (os.cpu_count() or 1) // job.workers)
    return dataclasses.replace(PlannerTrainConfig(), lora=job.lora, **overrides)


@flow(name="train-planner", log_prints=True)
def train_planner(job: PlannerJob) -> dict:
    root = lake_root(job.lake)
    name, version = resolve_dataset(root, job.dataset)
    stages = job.stages()
    cfg = planner_config(job)
    run_id = job.run_id or f"{name}-{version[:8]}-llava-{job.stage}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = {"train": dataclasses.asdict(cfg), "base": job.base, "lake": str(root), "dataset": name,
              "dataset_version": version, "run_id": run_id}
    storage = root / "_ray" / "train_planner"
    checkpoints: list[str] = []
    done: list[dict] = []
    try:
        with lake_lock(root, "train-planner", run_id, what=f"planner training run {run_id}"), \
                ray_session(address=job.ray_address):
            for stage in stages:
                out = fit_planner_task(config | {"stage": stage, "init": list(checkpoints)}, job.workers,
                                       job.gpu, storage, f"{run_id}-{stage}", job.max_failures)
                checkpoints.append(str(out["checkpoint"]))
                m = out["metrics"]
                done.append({"stage": stage, "steps": int(m.get("step") or 0), "losses": m.get("losses", []),
                             "run": f"{run_id}-{stage}"})
                print(f"planner stage {stage}: {m.get('step')} steps, loss {m.get('loss')}")
            planner_version = register_planner_task(root, job.base, checkpoints, done, name, version, run_id,
                                                    job.lora)
    except LockHeld as e:
        return Failed(message=str(e), data=e)  # an expected outcome: one line, not a logged traceback
    print(f"planner {planner_version} from dataset {name}@{version} (run {run_id}, "
          f"stages {', '.join(stages)})")
    return {"planner_version": planner_version, "run_id": run_id, "dataset": name, "dataset_version": version,
            "stages": done}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--stage", default="both", choices=STAGE_CHOICES)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--lake")
    ap.add_argument("--run-id")
    ap.add_argument("--steps", type=int)
    a = ap.parse_args()
    job = PlannerJob(dataset=a.dataset, base=a.base, stage=a.stage, workers=a.workers, gpu=a.gpu, lora=a.lora,
                     lake=a.lake, run_id=a.run_id, steps=a.steps)
    print(train_planner(job)["planner_version"])
