"""Benchmark: tiny-preset training on CPU under Ray Train — worker scaling and Ray's per-step overhead.

    ./dev sh python bench/bench_train_cpu.py [--steps 30] [--batch 32] [--rounds 3]

Three runs of the same loop (`smartmask.training.loop.run_training`) on the same data, same global batch:
  A. in-process, no Ray, 1 thread                      (baseline for Ray's overhead)
  B. Ray Train, 1 worker with 1 CPU / 1 thread
  C. Ray Train, 2 workers with 1 CPU / 1 thread each   (gradients averaged over gloo)
Per-step time is the median of the logged step times after a warm-up (start-up is excluded: it is paid once
per run, not per step). One CPU per worker makes the ratio measure scaling across workers rather than torch's
intra-op threading.

The three run in rounds, interleaved (A B C, then C B A, ...), each round's ratios from its own three runs, and the
figures are the medians over the rounds: this VM's speed drifts by up to ~30% within minutes, so three runs one
after the other measured the drift as much as the configurations (single-order runs gave 1.29x to 1.74x). Prints
every round, the median C/B throughput ratio (target >= 1.6) and the median B/A - 1, Ray Train's per-step overhead
(target <= 10%). Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _results import record  # noqa: E402  (bench/ is on sys.path: the script's own folder)


def _median_step(lake: Path, run_id: str, warmup: int) -> float:
    import pyarrow.parquet as pq

    rows = pq.read_table(lake / "runs" / "kind=train" / f"run={run_id}" / "metrics").to_pylist()
    return statistics.median(r["step_seconds"] for r in rows if r["step"] > warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()

    import torch

    from flows.ray_runtime import ray_session
    from smartmask import presets
    from smartmask.config import RebuildConfig, SynthConfig
    from smartmask.rebuild import rebuild
    from smartmask.synth import generate
    from smartmask.training.loop import InProcess, TrainConfig, config_dict, run_training
    from smartmask.training.samples import SampleConfig
    from tasks.train import fit_task

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    atexit.register(shutil.rmtree, tmp, True)  # several GB of weights/checkpoints otherwise left in /tmp
    generate(tmp / "w", 60, 0, SynthConfig(width=320, height=240, min_things=6, max_things=12), workers=2)
    m = rebuild(f"cocoa:{tmp / 'w' / 'annotations.json'}", tmp / "w" / "images", "b", tmp / "lake", RebuildConfig())
    lake, version = tmp / "lake", m["version"]
    model_cfg, sample_cfg = presets.tiny_model(), SampleConfig.for_tests()
    train_cfg = TrainConfig(steps=a.steps, batch_size=a.batch, lr=1e-3, checkpoint_every=a.steps, val_every=a.steps,
                            log_every=1, threads_per_worker=1)
    torch.set_num_threads(1)

    def run_dir(rid: str) -> Path:
        return lake / "runs" / "kind=train" / f"run={rid}"

    def in_process(r: int) -> float:
        rid = f"inproc-r{r}"
        run_training(model_cfg=model_cfg, sample_cfg=sample_cfg, train_cfg=train_cfg, lake=lake, dataset="b",
                     dataset_version=version, run_dir=run_dir(rid), ex=InProcess(), work_dir=tmp / "ck" / rid)
        return _median_step(lake, rid, a.warmup)

    def on_ray(r: int, workers: int) -> float:
        rid = f"ray{workers}-r{r}"
        config = config_dict(model_cfg, sample_cfg, train_cfg) | {
            "lake": str(lake), "dataset": "b", "dataset_version": version, "run_dir": str(run_dir(rid))}
        t0 = time.perf_counter()
        fit_task.fn(config, workers, False, lake / "_ray" / "train", rid)
        print(f"round {r}: ray {workers} worker(s): fit() {time.perf_counter() - t0:.1f} s including start-up")
        return _median_step(lake, rid, a.warmup)

    rounds = []
    for r in range(a.rounds):
        step: dict[str, float] = {}
        forward = r % 2 == 0  # A B C, then C B A: drift over a round hits both ends of the comparison alike
        if forward:
            step["inproc"] = in_process(r)
        with ray_session(num_cpus=2):  # a fresh Ray per round; A runs without Ray's processes beside it
            for workers in ((1, 2) if forward else (2, 1)):
                step[f"ray{workers}"] = on_ray(r, workers)
        if not forward:
            step["inproc"] = in_process(r)
        ratio, overhead = step["ray1"] / step["ray2"], step["ray1"] / step["inproc"] - 1
        rounds.append(step | {"ratio_2v1": ratio, "ray_overhead": overhead})
        sps = {k: a.batch / v for k, v in step.items()}
        print(f"round {r}: samples/s in-process {sps['inproc']:.1f} | Ray 1 worker {sps['ray1']:.1f} | "
              f"Ray 2 workers {sps['ray2']:.1f}; 2v1 {ratio:.2f}x, Ray overhead {overhead * 100:+.1f}%", flush=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"median over {a.rounds} rounds (global batch {a.batch}, median step after {a.warmup} warm-up steps):")
    print(f"samples/s  in-process {a.batch / med['inproc']:.1f} | Ray 1 worker {a.batch / med['ray1']:.1f} | "
          f"Ray 2 workers {a.batch / med['ray2']:.1f}")
    print(f"2 workers vs 1 worker throughput: {med['ratio_2v1']:.2f}x   (target >= 1.6)")
    print(f"Ray Train per-step overhead vs in-process: {med['ray_overhead'] * 100:+.1f}%   (target <= 10%)")
    row = {"steps": a.steps, "batch": a.batch, "rounds": a.rounds, "step_s_inproc": med["inproc"],
           "step_s_ray1": med["ray1"], "step_s_ray2": med["ray2"], "ratio_2v1": round(med["ratio_2v1"], 3),
           "ray_overhead": round(med["ray_overhead"], 4), "cpus": os.cpu_count(),
           "per_round": [{k: round(v, 4) for k, v in r.items()} for r in rounds]}
    record("bench_train_cpu", row)


if __name__ == "__main__":
    main()
