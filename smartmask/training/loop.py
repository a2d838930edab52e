"""The SmartMask training loop, executor-agnostic: Ray Train runs it (tasks/train.py), so can a test, in-process.

The loop talks to whatever runs it only through `Executor` (rank, world size, device, model wrapping, the
checkpoint to resume from, and reporting). Everything else — sampling, CFG dropout, AdamW, EMA, gradient
accumulation, bf16 autocast (GPUs, and CPUs with native bf16), safetensors checkpoints, validation loss, the loss
curve in the lake — is here.

Progress: with `progress_every_s`, every rank also reports `{step, loss, samples_per_s, train_seconds}` (no checkpoint)
about that often between checkpoints; the driver shows rank 0's as a bar (tasks/train.py). Off by default.

Data: step s draws its global batch from `np.random.default_rng([seed, s])`, and rank r takes its slice, so the
batch a step sees is the same for 1 or N workers and after a resume (a resumed run repeats no sample and skips none).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from smartmask.lake.io import rows_to_table, write_json_atomic, write_parquet_atomic
from smartmask.lake.schemas import TRAIN_METRICS
from smartmask.model.config import ModelConfig
from smartmask.model.network import SmartMask
from smartmask.training.checkpoint import load_checkpoint, save_checkpoint, trainable_params
from smartmask.training.samples import LayerIndex, SampleConfig, TrainingSampler


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32  # global: split over workers, then over accumulation micro-batches
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 50
    ema_decay: float = 0.999
    checkpoint_every: int = 100
    val_every: int = 100
    val_batches: int = 2
    log_every: int = 10
    # Stop early (at a checkpoint) once this much wall time is used; counted over restarts (a resumed run goes on
    # with what is left, read from its checkpoint).
    time_budget_s: float | None = None
    seed: int = 0
    threads_per_worker: int | None = None  # CPU: torch threads per worker (None: leave torch's default)
    # CPU bf16 autocast: None = on where the worker's CPU computes bf16 natively (AVX512-BF16 or AMX), else off.
    cpu_bf16: bool | None = None

    @classmethod
    def for_tests(cls) -> TrainConfig:
        """Test-size settings (not the `tiny` preset: that is `smartmask.presets.tiny`)."""
        return cls(steps=40, batch_size=8, lr=1e-3, warmup_steps=5, checkpoint_every=10, val_every=10,
                   val_batches=1, log_every=5, ema_decay=0.9)


class Executor(Protocol):
    rank: int
    world_size: int

    def device(self) -> torch.device: ...
    def wrap(self, module: torch.nn.Module) -> torch.nn.Module: ...  # DDP where world_size > 1 (or see sync_grads)
    def sync_grads(self, params: list[torch.Tensor]) -> None: ...  # average gradients over ranks if wrap did not
    def resume_dir(self) -> Path | None: ...
    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None: ...
    def max_over_ranks(self, value: float) -> float: ...  # the largest value over ranks, on every rank


class InProcess:
    """Executor for a single process without Ray (tests, the Ray-overhead benchmark, debugging)."""

    rank, world_size = 0, 1

    def __init__(self, resume: Path | None = None):
        self._resume = resume
        self.reports: list[tuple[dict, Path | None]] = []

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def wrap(self, module):
        return module.to(self.device())

    def sync_grads(self, params):
        pass

    def resume_dir(self):
        return self._resume

    def report(self, metrics, checkpoint_dir):
        self.reports.append((metrics, checkpoint_dir))
        if checkpoint_dir is not None:
            self._resume = checkpoint_dir

    def max_over_ranks(self, value):
        return value


class _Loss(torch.nn.Module):
    """DDP syncs gradients only through forward(); this puts the model's training loss behind one."""

    def __init__(self, model: SmartMask):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model.training_loss(batch, generator)


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay used after optimizer step `step` (0-based): warm-up (1 + s) / (10 + s), capped at `decay`."""
    return min(decay, (1.0 + step) / (10.0 + step))


def average_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """Mean of every parameter's gradient over the process group, in ONE all-reduce of a flat buffer.

    The CPU (gloo) replacement for DDP (see tasks/train.py `RayExecutor.wrap`). A parameter without a gradient
    on this rank counts as zeros, so every rank sends the same buffer layout.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p)  # views of one buffer, freed by the next zero_grad
        offset += n


def native_cpu_bf16() -> bool:
    """True where this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX): oneDNN's bf16 kernels beat fp32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _autocast(device: torch.device, cpu_bf16: bool | None):
    """bf16 autocast on GPUs; on CPUs only with native bf16 (`cpu_bf16` None: detected on the worker itself).

    Without those instructions CPU bf16 is emulated and slower than fp32. With them (this machine's AMD EPYC has
    AVX512-BF16), one tiny-preset step (batch 16, 1 thread) takes 0.36 s instead of 0.44 s. Autocast keeps the
    normalisations, the softmax and the loss in fp32, and AdamW updates fp32 weights.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    use_bf16 = native_cpu_bf16() if cpu_bf16 is None else cpu_bf16
    if use_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: torch.as_tensor(v, device=device) if isinstance(v, np.ndarray) else v for k, v in batch.items()}


class _ProgressClock:
    """Which steps send a progress report between checkpoints: about every `every_s` seconds.

    Ray Train pairs the i-th `report` of all ranks (each one a barrier) and takes one per worker per controller
    poll (2 s), a second one blocking training until then. So the steps are agreed over ranks (the largest step
    count covering `every_s`, via `max_over_ranks` at candidate steps only) instead of read off each rank's clock,
    and none is sent when a checkpoint's report (same step and loss) follows within that count.
    """

    def __init__(self, every_s: float, start: int):
        self.every_s, self.n = every_s, 1
        self.last_step, self.last_t = start, time.perf_counter()
        self.next = start + 2  # step 1's time (lazy initialisation) says little about the rate

    def reported(self, step: int) -> None:
        self.last_step, self.last_t, self.next = step, time.perf_counter(), step + self.n

    def due(self, step: int, step_s: float, cfg: TrainConfig, ex: Executor) -> bool:
        if step < self.next:
            return False
        self.n = max(1, int(ex.max_over_ranks(float(math.ceil(self.every_s / max(step_s, 1e-9))))))
        next_checkpoint = min(cfg.steps, (step // cfg.checkpoint_every + 1) * cfg.checkpoint_every)
        if next_checkpoint - step < self.n:
            self.next = next_checkpoint  # its report re-arms the clock (`reported`)
            return False
        return True

    def metrics(self, step: int, loss: float, batch_size: int, seconds: float) -> dict:
        """samples/s over the wall time since the previous report, checkpoints included: what the ETA needs."""
        rate = (step - self.last_step) * batch_size / max(time.perf_counter() - self.last_t, 1e-9)
        self.reported(step)
        return {"step": step, "loss": loss, "samples_per_s": rate, "train_seconds": seconds}


def run_training(*, model_cfg: ModelConfig, sample_cfg: SampleConfig, train_cfg: TrainConfig, lake: Path,
                 dataset: str, dataset_version: str, run_dir: Path, ex: Executor, work_dir: Path,
                 progress_every_s: float | None = None) -> dict:
    """Train until `train_cfg.steps` (or the time budget); returns the last metrics. Rank 0 writes the lake.

    `progress_every_s`: also report progress (no checkpoint) about that often; None: only at checkpoints."""
    if model_cfg.focus_view != sample_cfg.focus_view:
        raise ValueError(f"the model's focus_view ({model_cfg.focus_view}) and the samples' "
                         f"({sample_cfg.focus_view}) differ: the model would read layouts of the wrong width")
    t_start = time.perf_counter()
    if train_cfg.threads_per_worker:
        torch.set_num_threads(train_cfg.threads_per_worker)
    torch.manual_seed(train_cfg.seed)  # identical initial weights on every rank
    device = ex.device()
    model = SmartMask.build(model_cfg).to(device)
    params = [p for _, p in trainable_params(model)]
    # CPU: the fused AdamW (one kernel over all tensors) takes 2.7 ms per step for the tiny model where the default
    # per-tensor loop takes 11 ms, and every worker pays it in full, so it counts against 2-worker scaling. GPU
    # runs keep torch's default (foreach).
    opt = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay,
                            fused=True if device.type == "cpu" else None)
    ema = [p.detach().clone() for p in params]
    start, seconds_before = 0, 0.0
    resume = ex.resume_dir()
    if resume is not None:
        start, seconds_before = load_checkpoint(resume, model, ema, opt)
    loss_module = ex.wrap(_Loss(model))
    train = TrainingSampler(LayerIndex.from_lake(lake, dataset, dataset_version, split="train"), sample_cfg,
                            seed=train_cfg.seed)
    val_index = LayerIndex.from_lake(lake, dataset, dataset_version, split="val")
    # A small dataset can have no held-out target at all: train anyway, with a NaN validation loss.
    val = (TrainingSampler(val_index, sample_cfg, seed=train_cfg.seed + 1)
           if val_index.valid_targets(sample_cfg.insert_stuff, sample_cfg.min_target_area).size else None)
    if ex.rank == 0:
        starts_file = run_dir / "starts.json"
        starts = json.loads(starts_file.read_text()) if starts_file.exists() else []
        write_json_atomic(starts + [start], starts_file)
    per_rank = train_cfg.batch_size // ex.world_size
    micro = per_rank // train_cfg.grad_accum
    if micro < 1 or per_rank * ex.world_size != train_cfg.batch_size or micro * train_cfg.grad_accum != per_rank:
        raise ValueError(f"batch_size {train_cfg.batch_size} must split evenly over {ex.world_size} workers and "
                         f"{train_cfg.grad_accum} accumulation steps")
    autocast = _autocast(device, train_cfg.cpu_bf16)
    pending: list[dict] = []
    metrics: dict = {}
    step = start
    clock = _ProgressClock(progress_every_s, start) if progress_every_s is not None else None
    while step < train_cfg.steps:
        lr = train_cfg.lr * min(1.0, (step + 1) / max(1, train_cfg.warmup_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        global_idx = np.random.default_rng([train_cfg.seed, step]).integers(0, len(train), size=train_cfg.batch_size)
        mine = global_idx[ex.rank * per_rank : (ex.rank + 1) * per_rank]
        opt.zero_grad(set_to_none=True)
        total = 0.0
        t0 = time.perf_counter()
        for m in range(train_cfg.grad_accum):
            batch = _to_device(train.batch(mine[m * micro : (m + 1) * micro].tolist()), device)
            # Timesteps, noise and CFG dropout from (seed, step, rank, micro-batch): a resumed run redoes
            # exactly what the lost one would have done.
            gen = torch.Generator().manual_seed(hash((train_cfg.seed, step, ex.rank, m)) % 2**63)
            with autocast:
                loss = loss_module(batch, gen) / train_cfg.grad_accum
            loss.backward()
            total += float(loss.detach())
        ex.sync_grads(params)  # once per optimizer step, after all micro-batches
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        # EMA warm-up (diffusers' EMAModel formula): a constant decay from step 0 keeps 0.99^300 = 5% of the
        # random initial weights after 300 steps, and the demo's EMA model sampled worse than its raw weights
        # (held-out IoU 0.49 vs 0.54); (1 + s) / (10 + s) averages over roughly the last tenth of the run early on.
        decay = ema_decay_at(step, train_cfg.ema_decay)
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - decay)  # one call over all tensors (half the loop's time)
        step += 1
        step_s = time.perf_counter() - t0
        if step % train_cfg.log_every == 0 or step == train_cfg.steps:
            pending.append({"step": step, "loss": total, "val_loss": None, "lr": lr, "step_seconds": step_s,
                            "samples_per_s": train_cfg.batch_size / step_s, "world_size": ex.world_size})
        # Training time so far, over restarts; with a time budget, the slowest rank's.
        seconds = seconds_before + time.perf_counter() - t_start
        stop = False
        if train_cfg.time_budget_s is not None:
            seconds = ex.max_over_ranks(seconds)
            stop = seconds > train_cfg.time_budget_s
        if step % train_cfg.checkpoint_every == 0 or step == train_cfg.steps or stop:
            metrics = {"step": step, "loss": total}
            ckpt = None
            if ex.rank == 0:
                metrics["val_loss"] = validation_loss(model, val, train_cfg, device)
                if pending:
                    pending[-1]["val_loss"] = metrics["val_loss"]
                ckpt = save_checkpoint(work_dir / f"ckpt-{step:08d}", model, ema, opt, step,
                                       {"dataset_version": dataset_version, "train_seconds": seconds})
                rows = [r | {"run_id": run_dir.name.removeprefix("run="), "dataset": dataset,
                             "dataset_version": dataset_version} for r in pending]
                write_parquet_atomic(rows_to_table(rows, TRAIN_METRICS), run_dir / "metrics" / f"part-{step:08d}.parquet")
            pending = []
            ex.report(metrics, ckpt)
            if clock is not None:
                clock.reported(step)
            if stop:
                break
        elif clock is not None and clock.due(step, step_s, train_cfg, ex):
            ex.report(clock.metrics(step, total, train_cfg.batch_size, seconds), None)
    return metrics | {"steps_done": step, "started_at_step": start}


def validation_loss(model: SmartMask, val: TrainingSampler | None, cfg: TrainConfig, device: torch.device) -> float:
    """Mean loss over fixed validation batches at fixed timesteps and noise: comparable across steps and runs."""
    if val is None or len(val) == 0:
        return math.nan
    gen = torch.Generator().manual_seed(1234)
    losses = []
    model.eval()
    with torch.no_grad():
        for b in range(cfg.val_batches):
            n = min(cfg.batch_size, len(val))
            batch = _to_device(val.batch([(b * n + i) % len(val) for i in range(n)]), device)
            t = int(torch.randint(0, model.config.num_train_timesteps, (1,), generator=gen))
            losses.append(float(model.loss_at(batch, t, None, generator=gen)))
    model.train()
    return float(np.mean(losses))


def config_dict(model_cfg: ModelConfig, sample_cfg: SampleConfig, train_cfg: TrainConfig) -> dict:
    return {"model": model_cfg.to_dict(), "sample": asdict(sample_cfg), "train": asdict(train_cfg)}
