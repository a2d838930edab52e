"""The executor-agnostic training loop (smartmask.training.loop) without Ray: in-process training, checkpoints and
resume, and gradient averaging over a real 2-process gloo group (the CPU path Ray Train's workers use)."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from smartmask import presets
from smartmask.model.network import SmartMask
from smartmask.training.loop import (
    InProcess,
    TrainConfig,
    _autocast,
    average_gradients,
    ema_decay_at,
    native_cpu_bf16,
    run_training,
)
from smartmask.training.samples import SampleConfig

TRAIN = TrainConfig(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, checkpoint_every=2, val_every=2, val_batches=1,
                    log_every=1, threads_per_worker=1)


@pytest.fixture(scope="module")
def lake(synthetic_lake_copy) -> tuple[Path, str]:
    return synthetic_lake_copy["lake"], synthetic_lake_copy["version"]


def _train(lake: Path, version: str, run: str, ex, work: Path, train: TrainConfig = TRAIN) -> dict:
    return run_training(model_cfg=presets.tiny_model(), sample_cfg=SampleConfig.for_tests(), train_cfg=train, lake=lake,
                        dataset="synth", dataset_version=version, run_dir=lake / "runs" / "kind=train" / f"run={run}",
                        ex=ex, work_dir=work)


def test_in_process_training_checkpoints_and_resumes(lake, tmp_path):
    root, version = lake
    ex = InProcess()
    out = _train(root, version, "a", ex, tmp_path / "a")
    assert out["steps_done"] == 4 and out["started_at_step"] == 0
    ckpts = [d for _, d in ex.reports if d is not None]
    assert [json.loads((d / "state.json").read_text())["step"] for d in ckpts] == [2, 4]
    # Resume from the step-2 checkpoint: the run continues at step 2 and ends at the same weights as the
    # uninterrupted run (timesteps, noise and batches depend on (seed, step, rank), not on history).
    resumed = _train(root, version, "b", InProcess(resume=ckpts[0]), tmp_path / "b")
    assert resumed["started_at_step"] == 2
    straight = load_file(ckpts[1] / "trainable.safetensors")
    again = load_file(tmp_path / "b" / "ckpt-00000004" / "trainable.safetensors")
    assert straight.keys() == again.keys()
    for k in straight:
        torch.testing.assert_close(again[k], straight[k], rtol=1e-5, atol=1e-6)
    starts = json.loads((root / "runs" / "kind=train" / "run=b" / "starts.json").read_text())
    assert starts == [2]
    # The training time goes on from the checkpoint's: a time budget counts over restarts. A checkpoint that has
    # already used 1000 s of a 999 s budget trains one more step (the budget is checked after each) and stops.
    before = json.loads((ckpts[0] / "state.json").read_text())["train_seconds"]
    after = json.loads((tmp_path / "b" / "ckpt-00000004" / "state.json").read_text())["train_seconds"]
    assert 0 < before < after
    spent = tmp_path / "spent"
    shutil.copytree(ckpts[0], spent)
    state = json.loads((spent / "state.json").read_text())
    (spent / "state.json").write_text(json.dumps(state | {"train_seconds": 1000.0}))
    out = _train(root, version, "c", InProcess(resume=spent), tmp_path / "c", replace(TRAIN, time_budget_s=999.0))
    assert (out["started_at_step"], out["steps_done"]) == (2, 3)


class _Gloo:
    """A plain torch.distributed executor (what torchrun would give): the same averaging Ray's CPU workers use."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self.module: torch.nn.Module | None = None

    def device(self):
        return torch.device("cpu")

    def wrap(self, module):
        for t in module.parameters():
            torch.distributed.broadcast(t.data, src=0)
        self.module = module
        return module

    def sync_grads(self, params):
        average_gradients(params, self.world_size)

    def resume_dir(self):
        return None

    def report(self, metrics, checkpoint_dir):
        pass

    def max_over_ranks(self, value):
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())


def _worker(rank: int, port: int, root: str, version: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ex = _Gloo(rank, 2)
    # Ends on a time budget: the ranks started at different moments, so only the agreed (slowest) time makes them
    # stop after the same step (else one waits forever in the next all-reduce).
    train = replace(TRAIN, steps=100_000, checkpoint_every=100_000, time_budget_s=4.0)
    _train(Path(root), version, "ddp", ex, Path(out) / f"work{rank}", train)
    trainable = {n: p.detach().contiguous() for n, p in ex.module.model.named_parameters() if p.requires_grad}
    save_file(trainable, str(Path(out) / f"rank{rank}.safetensors"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_average_gradients_and_stay_identical(lake, tmp_path):
    """Without averaging, the ranks' different micro-batches would make their weights drift apart after step 1;
    without agreeing on the time used, they would stop after different steps."""
    root, version = lake
    port = _free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, port, str(root), version, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    w0, w1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    initial = _initial_trainable()
    assert any(not torch.equal(w0[k], initial[k]) for k in w0)  # it did train


def _initial_trainable() -> dict[str, torch.Tensor]:
    from smartmask.model.network import SmartMask

    torch.manual_seed(TRAIN.seed)
    m = SmartMask.build(presets.tiny_model())
    return {n: p.detach() for n, p in m.named_parameters() if p.requires_grad}


def test_average_gradients_is_the_mean_and_fills_missing_grads(tmp_path):
    port = _free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_avg_worker, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    for r in range(2):
        got = load_file(tmp_path / f"avg{r}.safetensors")
        torch.testing.assert_close(got["a"], torch.full((3, 2), 1.5))
        torch.testing.assert_close(got["b"], torch.full((4,), 0.5))  # rank 0 had no grad for b: counts as 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _avg_worker(rank: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    a, b = torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4))
    a.grad = torch.full((3, 2), float(rank + 1))
    b.grad = None if rank == 0 else torch.ones(4)
    average_gradients([a, b], 2)
    save_file({"a": a.grad.contiguous(), "b": b.grad.contiguous()}, str(Path(out) / f"avg{rank}.safetensors"))
    torch.distributed.destroy_process_group()


def test_ema_warms_up_so_the_initial_weights_fade():
    """A constant 0.99 from step 0 would keep 0.99^300 ≈ 5% of the random init after 300 steps; the warm-up
    keeps far less, and the configured decay is reached later and never exceeded."""
    kept = 1.0
    for s in range(300):
        kept *= ema_decay_at(s, 0.99)
    assert kept < 1e-3 < 0.99**300
    assert ema_decay_at(0, 0.99) == 0.1 and ema_decay_at(10_000, 0.99) == 0.99
    assert all(ema_decay_at(s, 0.99) <= ema_decay_at(s + 1, 0.99) for s in range(2000))


def test_cpu_bf16_autocast_is_explicit_or_detected_and_reaches_the_loop(lake, tmp_path):
    root, version = lake
    torch.manual_seed(0)
    model = SmartMask.build(presets.tiny_model())
    x = torch.randn(2, 1, 32, 32)
    feats = model.encode_layout(torch.rand(2, model.config.layout_in_channels, 32, 32))
    text = model.encode_text(["dog", "car"], ["a park", "a street"])
    t = torch.tensor([10, 900])
    cpu = torch.device("cpu")
    dtypes = {}
    for flag in (True, False, None):
        with _autocast(cpu, flag):
            dtypes[flag] = model.predict(x, t, feats, text).dtype
    assert dtypes[True] == torch.bfloat16 and dtypes[False] == torch.float32
    assert dtypes[None] == (torch.bfloat16 if native_cpu_bf16() else torch.float32)
    # The loop uses the flag: the same 4 steps end at different (fp32, finite) weights with and without bf16.
    weights = {}
    for flag in (True, False):
        _train(root, version, f"bf16-{flag}", InProcess(), tmp_path / str(flag), replace(TRAIN, cpu_bf16=flag))
        weights[flag] = load_file(tmp_path / str(flag) / "ckpt-00000004" / "trainable.safetensors")
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights[True].values())
    assert any(not torch.equal(weights[True][k], weights[False][k]) for k in weights[True])
