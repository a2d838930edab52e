"""Prefect tasks for training: `fit_task` runs the library loop under Ray Train, `register_task` releases it.

`train_loop_per_worker` is what Ray Train runs on every worker: it adapts Ray's context (rank, device, DDP,
checkpoints, reporting) to the library's `Executor` and calls `smartmask.training.loop.run_training`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from smartmask.model.config import ModelConfig
from smartmask.registry import register
from smartmask.training.loop import TrainConfig, average_gradients, run_training
from smartmask.training.samples import SampleConfig


class RayExecutor:
    def __init__(self, work_dir: Path):
        import ray.train

        self.work_dir = work_dir
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self._manual_sync = False

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        if self.world_size == 1 or self.device().type == "cuda":
            return ray.train.torch.prepare_model(module)  # to the device; DDP (NCCL, overlapped) when world_size > 1
        # CPU/gloo: no DDP. Its all-reduce thread competes with the compute when workers = cores (a 2-worker step
        # took twice as long); one flat all-reduce after backward (`sync_grads`) is cheap. Start from rank 0's
        # weights, as DDP would. Figures: docs/experiments.md, "Training speed".
        module = module.to(self.device())
        for t in list(module.parameters()) + list(module.buffers()):
            torch.distributed.broadcast(t.data, src=0)
        self._manual_sync = True
        return module

    def sync_grads(self, params: list[torch.Tensor]) -> None:
        if self._manual_sync:  # else: one worker, or DDP averaged them during backward
            average_gradients(params, self.world_size)

    def resume_dir(self) -> Path | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()  # the last reported one: after a worker failure or a rerun of the run id
        if ckpt is None:
            return None
        # A copy inside this worker's work dir (removed with it), not Ray's default `checkpoint_tmp_*` in /tmp.
        return Path(ckpt.to_directory(str(self.work_dir / "resumed")))

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        import ray.train

        # SYNC upload copies the checkpoint into the run's storage before returning; the local copy is then
        # redundant, and keeping every one filled the CI machine's disk (~150 MB per training run).
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_dir))
                         if checkpoint_dir else None,
                         checkpoint_upload_mode=ray.train.CheckpointUploadMode.SYNC,
                         delete_local_checkpoint_after_upload=checkpoint_dir is not None)

    def max_over_ranks(self, value: float) -> float:
        if self.world_size == 1 or not torch.distributed.is_initialized():
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    # Scratch for checkpoints before Ray copies them into the run's storage: local disk, one dir per run and
    # rank, so a replacement for a SIGKILLed worker (same run, same rank) clears what the dead one left behind.
    run_id = Path(config["run_dir"]).name.removeprefix("run=")
    work = Path(tempfile.gettempdir()) / f"smartmask-ckpt-{run_id}-rank{ray.train.get_context().get_world_rank()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        run_training(model_cfg=ModelConfig.from_dict(config["model"]), sample_cfg=SampleConfig(**config["sample"]),
                     train_cfg=TrainConfig(**config["train"]), lake=Path(config["lake"]), dataset=config["dataset"],
                     dataset_version=config["dataset_version"], run_dir=Path(config["run_dir"]),
                     ex=RayExecutor(work), work_dir=work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@task(name="fit", cache_policy=NO_CACHE)
def fit_task(config: dict, workers: int, gpu: bool, storage: Path, run_id: str, max_failures: int = 3) -> dict:
    """Ray Train's TorchTrainer over `workers` workers (gloo on CPU, NCCL on GPU). The same `run_id` resumes."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(name=run_id, storage_path=str(storage),
                              failure_config=FailureConfig(max_failures=max_failures),
                              checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_id} finished without a checkpoint")
    try:  # also called as a plain function (`fit_task.fn`) by the benchmark, outside any Prefect run
        log = get_run_logger()
    except MissingContextError:
        log = logging.getLogger("smartmask.train")
    log.info("run %s finished: %s", run_id, result.metrics)
    return {"checkpoint": result.checkpoint.path, "metrics": dict(result.metrics or {})}


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(lake: Path, checkpoint: str, config: dict, dataset: str, dataset_version: str, run_id: str,
                  metrics: dict) -> str:
    return register(lake, Path(checkpoint), ModelConfig.from_dict(config["model"]), config, dataset,
                    dataset_version, run_id, metrics)
