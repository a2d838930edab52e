"""Live training progress on the driver: the workers' reports become one bar on a terminal, plain lines otherwise.

The loop's progress reports (between checkpoints, results unchanged) and the driver's view of a report file run
without Ray; two slow tests run real Ray Train jobs in this process (one Ray for the module; the controller polls
every 0.1 s instead of 2 s so a few-second run gets several reports): 2 workers through the `train` flow with
`SMARTMASK_PROGRESS=lines`, and 1 worker drawing the bar on a stream that says it is a terminal.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# Imported at collection, not inside a test: the first import of Prefect points its console log handler at
# sys.stderr, and inside a `capsys` test that is a capture closed when the test ends (later flows fail to log).
from flows.train import TrainJob, train
from smartmask import presets
from smartmask.lake.paths import run_dir
from smartmask.training.loop import InProcess, TrainConfig, config_dict, run_training
from smartmask.training.samples import SampleConfig
from tasks.train import _TrainProgress, fit_task

TRAIN = TrainConfig(steps=5, batch_size=4, lr=1e-3, warmup_steps=1, checkpoint_every=3, val_every=3, val_batches=1,
                    log_every=1, threads_per_worker=1)
# `train: 6/12 steps (50%), 1.2 steps/s, ETA 5s, loss=0.1 samples/s=4.8` (Progress.text)
LINE = re.compile(r"^train: (\d+)/(\d+) steps \((\d+)%\), (.*)$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def lake(synthetic_lake_copy) -> tuple[Path, str]:
    return synthetic_lake_copy["lake"], synthetic_lake_copy["version"]


def _loop(lake: Path, version: str, run: str, work: Path, every_s: float | None) -> tuple[InProcess, dict]:
    ex = InProcess()
    out = run_training(model_cfg=presets.tiny_model(), sample_cfg=SampleConfig.for_tests(), train_cfg=TRAIN, lake=lake,
                       dataset="synth", dataset_version=version, run_dir=lake / "runs" / "kind=train" / f"run={run}",
                       ex=ex, work_dir=work, progress_every_s=every_s)
    return ex, out


def test_loop_reports_progress_between_checkpoints_and_trains_the_same(lake, tmp_path):
    root, version = lake
    plain, out_plain = _loop(root, version, "plain", tmp_path / "plain", None)
    live, out_live = _loop(root, version, "live", tmp_path / "live", 0.0)
    never, _ = _loop(root, version, "never", tmp_path / "never", 1e9)
    assert [(m["step"], d is not None) for m, d in plain.reports] == [(3, True), (5, True)]
    # every_s=0: a report at every step from the second on that is not a checkpoint's (those carry step and loss).
    assert [(m["step"], d is not None) for m, d in live.reports] == [(2, False), (3, True), (4, False), (5, True)]
    progress = [m for m, d in live.reports if d is None]
    assert all(m.keys() == {"step", "loss", "samples_per_s", "train_seconds"} for m in progress)
    assert all(m["loss"] > 0 and m["samples_per_s"] > 0 for m in progress)
    assert [m["train_seconds"] for m in progress] == sorted(m["train_seconds"] for m in progress)
    # A report would land within `every_s` of a checkpoint's every time: none is sent.
    assert [d is not None for _, d in never.reports] == [True, True]
    # Reporting changes nothing that is trained: same losses, same weights to the bit.
    assert out_live["loss"] == out_plain["loss"] and out_live["val_loss"] == out_plain["val_loss"]
    a = load_file(tmp_path / "plain" / "ckpt-00000005" / "trainable.safetensors")
    b = load_file(tmp_path / "live" / "ckpt-00000005" / "trainable.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def _lines(err: str) -> list[tuple[int, int, str]]:
    return [(int(m[1]), int(m[2]), m[4]) for m in map(LINE.match, err.splitlines()) if m]


def test_driver_view_of_a_time_budget_estimates_the_last_step(tmp_path, monkeypatch, capsys):
    """With a time budget the total is the step the budget should end at (from the workers' training seconds and
    samples/s), and the end turns it into the step the run stopped at. A line half written is read once whole."""
    monkeypatch.setenv("SMARTMASK_PROGRESS", "lines")
    reports = tmp_path / "reports.jsonl"
    reports.write_text("")
    rep = {"loss": 0.5, "samples_per_s": 20.0}  # batch 4: 5 steps/s
    view = _TrainProgress(reports, {"steps": 1000, "batch_size": 4, "time_budget_s": 10.0}, every_s=0)
    with view:
        second = json.dumps(rep | {"step": 20, "train_seconds": 4.0})
        _append(reports, json.dumps(rep | {"step": 10, "train_seconds": 2.0}) + "\n" + second[:9])
        time.sleep(0.8)  # the view reads every 0.25 s: it sees the half line
        _append(reports, second[9:] + "\n" + json.dumps(rep | {"step": 30, "train_seconds": 6.0}) + "\n")
        _append(reports, json.dumps({"step": 40, "loss": 0.4, "val_loss": 0.45}) + "\n")  # a checkpoint's report
        time.sleep(0.8)
        view.final = {"step": 48, "loss": 0.3, "val_loss": 0.35}
    got = _lines(capsys.readouterr().err)
    # 10 + 8 s left x 5 steps/s = 50; 20 + 6 x 5 = 50; ... the run stopped at 48.
    assert [(s, t) for s, t, _ in got] == [(10, 50), (20, 50), (30, 50), (40, 50), (48, 48)]
    assert "budget=2/10s" in got[0][2] and "budget=6/10s" in got[2][2]
    assert "loss=0.4" in got[3][2] and "val_loss=0.45" in got[3][2]


# ---- real Ray Train jobs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    from flows.ray_runtime import ray_session

    with ray_session(num_cpus=2):
        yield


@pytest.fixture
def fast_reports(monkeypatch):
    # Ray Train's controller collects one report per worker per poll (2 s by default); fit_task never asks for
    # reports faster than 1.5 polls. 0.1 s polls let a few-second test run report a handful of times.
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")


@pytest.mark.slow
def test_train_flow_prints_live_progress_lines(lake, monkeypatch, capsys, prefect_harness, ray_local, fast_reports):
    root, version = lake
    monkeypatch.setenv("SMARTMASK_PROGRESS", "lines")
    monkeypatch.setenv("SMARTMASK_PROGRESS_EVERY_S", "0")  # what `smartmask train` reads (TrainJob: progress_every_s)
    # One checkpoint, at the end: the lines before it come from progress reports only. They are sent every 0.15 s
    # (1.5 polls) at most, and never within that time of the checkpoint: 2 or more of them while steps take 21 ms+.
    out = train(TrainJob(dataset=f"synth@{version}", lake=str(root), workers=2, steps=16, batch_size=4,
                         checkpoint_every=16, run_id="progress-lines", evaluate=False))
    assert out["metrics"]["step"] == 16
    got = _lines(capsys.readouterr().err)
    steps = [s for s, _, _ in got]
    # One view of the job (rank 0's reports), not one per worker: each step once, increasing, ending at the last.
    assert len(steps) >= 3 and steps == sorted(set(steps)) and steps[-1] == 16, got
    assert all(t == 16 for _, t, _ in got)
    assert all(re.search(r"loss=\d", rest) for _, _, rest in got)
    assert any(re.search(r"samples/s=\d", rest) for _, _, rest in got[:-1])
    assert re.search(r"steps/s|s/step", got[-1][2]) and "val_loss=" in got[-1][2]
    assert not (root / "_ray" / "train" / "progress-lines" / "smartmask-progress.jsonl").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.slow
def test_fit_draws_a_bar_on_a_terminal(lake, monkeypatch, ray_local, fast_reports):
    root, version = lake
    r = presets.recipe("tiny", min_target_area=presets.target_floor_area(root, "synth", version))
    train_cfg = dataclasses.replace(r.train, steps=8, batch_size=4, checkpoint_every=4, val_every=4,
                                    threads_per_worker=1)
    config = config_dict(r.model, r.sample, train_cfg) | {
        "lake": str(root), "dataset": "synth", "dataset_version": version,
        "run_dir": str(run_dir(root, "train", "progress-bar"))}
    monkeypatch.setenv("SMARTMASK_PROGRESS", "auto")  # the stream decides: it says it is a terminal
    monkeypatch.setenv("COLUMNS", "200")  # rich's width when it cannot ask a real terminal
    monkeypatch.setenv("TERM", "xterm-256color")
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    out = fit_task.fn(config, 1, False, root / "_ray" / "train", "progress-bar", progress_every_s=0)
    assert out["metrics"]["step"] == 8
    raw = term.getvalue()
    text = ANSI.sub("", raw)
    assert "\x1b[" in raw and not _lines(text)  # drawn with escape codes, not printed as lines
    assert "train" in text and "8/8" in text and "steps" in text and "ETA" in text
    assert re.search(r"loss=\d", text) and "val_loss=" in text
