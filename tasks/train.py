"""Prefect tasks for training: `fit_task` runs the library loop under Ray Train, `register_task` releases it.

`train_loop_per_worker` is what Ray Train runs on every worker: it adapts Ray's context (rank, device, DDP,
checkpoints, reporting) to the library's `Executor` and calls `smartmask.training.loop.run_training`.

Live progress on the driver (`smartmask.progress.Progress`: a bar on a terminal, lines otherwise; see
`_TrainProgress` for what it shows): the workers `ray.train.report` their step, loss and samples/s every
`$SMARTMASK_PROGRESS_EVERY_S` seconds (default 5; at least 1.5 Ray Train controller polls, see the loop's
`_ProgressClock`), and a `ray.train.UserCallback` passes rank 0's numbers on. `SMARTMASK_PROGRESS=off` turns
both off. Measured on 2 CPU workers (Ray 2.60, Train V2): a report costs 6-10 ms (a barrier over the workers) when
spaced beyond the controller's 2 s poll, and blocks for the rest of the poll (2 s) when not.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from smartmask.model.config import ModelConfig
from smartmask.progress import Progress
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
        t = torch.tensor([value], dtype=torch.float64, device=self.device())  # NCCL reduces CUDA tensors only
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
                     ex=RayExecutor(work), work_dir=work, progress_every_s=config.get("progress_every_s"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report_file(path: str):
    """A `ray.train.UserCallback` appending rank 0's metrics of every report to `path`, one JSON line each.

    It runs in Ray Train's controller actor, not in the driver; Ray places that actor on the driver's node, and the
    file sits in the run's storage dir, which both must reach anyway (checkpoints).
    """
    from ray.train import UserCallback

    class ReportFile(UserCallback):
        def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
            if metrics:
                with open(path, "a") as f:
                    f.write(json.dumps(metrics[0], default=str) + "\n")

    return ReportFile()


class _StepProgress(Progress):
    """`Progress` whose rate (so the ETA) counts from the first report, not from the bar's start: Ray's start-up
    (a minute on a busy machine) and a resumed run's earlier steps would make it wrong (`initial` cannot help: the
    step a run resumes at is known only from its first report). Until a second report, the workers' samples/s stand
    in."""

    first: tuple[int, float] | None = None
    seed_rate = 0.0

    def update(self, completed: int, total: int | None = None, **fields) -> None:
        if self.first is None:
            self.first = (completed, time.monotonic())
        super().update(completed, total, **fields)

    def rate(self) -> float:
        if self.first is None or self.completed == self.first[0]:
            return self.seed_rate
        return (self.completed - self.first[0]) / max(time.monotonic() - self.first[1], 1e-9)


class _TrainProgress:
    """The driver's view of a run: a thread tails the report file into a `Progress` (one per job, not per worker).

    Shows step / total steps, rate and ETA, then loss, samples/s (since the previous report) and the last val_loss.
    With a time budget the total is the step the budget should end at, re-estimated at each report from the
    workers' training seconds and samples/s (never above `steps`; unknown until the first estimate), and a field
    `budget=USED/BUDGETs` shows the training time used; at the end the total becomes the step it stopped at.
    """

    def __init__(self, path: Path, train: dict, every_s: float):
        self.path, self.every_s = path, every_s
        self.steps, self.batch, self.budget = train["steps"], train["batch_size"], train.get("time_budget_s")
        self.final: dict | None = None  # the run's last metrics, set by the caller once fit() returned
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="smartmask-train-progress", daemon=True)

    def __enter__(self) -> _TrainProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # Everything happens in this thread, outside Prefect's run context: `log_prints` leaves its lines alone.
        bar = _StepProgress("train", total=None if self.budget else self.steps, unit="steps", every_s=self.every_s)
        offset = 0
        try:
            while True:
                stopping = self._stop.wait(0.25)
                offset = self._read(bar, offset)
                if stopping:
                    break
            # The last report is normally the final checkpoint's; the run's result stands in if it went missing,
            # and a budgeted run's total becomes the step it ended at.
            step = int(self.final["step"]) if self.final and "step" in self.final else None
            if step is not None and (step != bar.completed or (self.budget and bar.total != step)):
                self.show(bar, self.final, end=True)
        finally:
            bar.close()

    def _read(self, bar: _StepProgress, offset: int) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return offset
        done = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        for line in data[:done].splitlines():
            try:
                self.show(bar, json.loads(line))
            except (ValueError, KeyError, TypeError):  # not one of our reports: skip it, keep the bar going
                continue
        return offset + done

    def show(self, bar: _StepProgress, m: dict, end: bool = False) -> None:
        step = int(m["step"])
        fields = {name: float(m[k]) for k, name in (("loss", "loss"), ("samples_per_s", "samples/s"),
                                                    ("val_loss", "val_loss")) if isinstance(m.get(k), (int, float))}
        if fields.get("samples/s"):
            bar.seed_rate = fields["samples/s"] / self.batch
        total = None
        if self.budget and isinstance(m.get("train_seconds"), (int, float)):
            fields["budget"] = f"{m['train_seconds']:.0f}/{self.budget:.0f}s"
            if m.get("samples_per_s"):
                left = max(0.0, self.budget - m["train_seconds"]) * m["samples_per_s"] / self.batch
                total = min(self.steps, max(step, math.ceil(step + left)))
        bar.update(step, total=step if end and self.budget else total, **fields)


def progress_interval(every_s: float | None = None) -> float:
    """`every_s`, else `$SMARTMASK_PROGRESS_EVERY_S`, else 5 s."""
    return float(every_s if every_s is not None else os.environ.get("SMARTMASK_PROGRESS_EVERY_S") or 5.0)


def task_logger(fallback: str) -> logging.Logger:
    """The Prefect run's logger, or the plain `fallback` logger when called as a function (`task.fn`) outside a
    Prefect run (the benchmark does)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(fallback)


def torch_trainer(loop, config: dict, *, name: str, storage: Path, workers: int, gpu: bool, max_failures: int,
                  callbacks: list | None = None):
    """A TorchTrainer as every training here runs it: gloo on CPU, NCCL on GPU; the run `name` under `storage`, so
    rerunning the name resumes it; `max_failures` worker losses survived; the last two checkpoints kept."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        loop, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks or []),
    )


@task(name="fit", cache_policy=NO_CACHE)
def fit_task(config: dict, workers: int, gpu: bool, storage: Path, run_id: str, max_failures: int = 3,
             progress_every_s: float | None = None) -> dict:
    """Ray Train's TorchTrainer over `workers` workers (gloo on CPU, NCCL on GPU). The same `run_id` resumes.

    Shows live progress on this process's stderr (module docstring); `progress_every_s` (None: see
    `progress_interval()`) sets both how often the workers report and how often plain lines are printed.
    """
    import ray.train

    log = task_logger("smartmask.train")
    every = progress_interval(progress_every_s)
    # `UserCallback` exists in Ray Train V2 only (the default; RAY_TRAIN_V2_ENABLED=0 brings back V1).
    v2 = hasattr(ray.train, "UserCallback")
    live = v2 and os.environ.get("SMARTMASK_PROGRESS", "").strip().lower() != "off"
    if not v2:
        log.info("no live progress: it needs Ray Train V2 (RAY_TRAIN_V2_ENABLED=1, the default)")
    reports = Path(storage) / run_id / "smartmask-progress.jsonl"
    if live:
        reports.parent.mkdir(parents=True, exist_ok=True)
        reports.write_bytes(b"")  # a rerun of the id starts a fresh view
        # Never faster than 1.5 controller polls: a report the controller has not collected yet blocks the next.
        poll_s = float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S") or 2.0)
        config = config | {"progress_every_s": max(every, 1.5 * poll_s)}
    trainer = torch_trainer(train_loop_per_worker, config, name=run_id, storage=storage, workers=workers, gpu=gpu,
                            max_failures=max_failures, callbacks=[_report_file(str(reports))] if live else None)
    try:
        with _TrainProgress(reports, config["train"], every) if live else nullcontext() as view:
            result = trainer.fit()
            if view is not None:
                view.final = dict(result.metrics or {})
    finally:
        reports.unlink(missing_ok=True)
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_id} finished without a checkpoint")
    log.info("run %s finished: %s", run_id, result.metrics)
    return {"checkpoint": result.checkpoint.path, "metrics": dict(result.metrics or {})}


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(lake: Path, checkpoint: str, config: dict, dataset: str, dataset_version: str, run_id: str,
                  metrics: dict) -> str:
    return register(lake, Path(checkpoint), ModelConfig.from_dict(config["model"]), config, dataset,
                    dataset_version, run_id, metrics)
