"""Benchmark: tiny-preset training on CPU under Ray Train — worker scaling and Ray's per-step overhead.

    ./dev sh python bench/bench_train_cpu.py [--steps 30] [--batch 32]

Three runs of the same loop (`smartmask.training.loop.run_training`) on the same data, same global batch:
  A. in-process, no Ray, 1 thread                      (baseline for Ray's overhead)
  B. Ray Train, 1 worker with 1 CPU / 1 thread
  C. Ray Train, 2 workers with 1 CPU / 1 thread each   (DDP over gloo)
Per-step time is the median of the logged step times after a warm-up (start-up is excluded: it is paid once
per run, not per step). Prints samples/s, the C/B throughput ratio (target >= 1.6) and B/A - 1, Ray Train's
per-step overhead (target <= 10%). One CPU per worker makes the ratio measure scaling across workers rather than
torch's intra-op threading. Results go to bench/results/.
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
    a = ap.parse_args()

    import torch

    from flows.ray_runtime import ray_session
    from smartmask.config import RebuildConfig, SynthConfig
    from smartmask.model.config import ModelConfig
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
    model_cfg, sample_cfg = ModelConfig.tiny(), SampleConfig.tiny()
    train_cfg = TrainConfig(steps=a.steps, batch_size=a.batch, lr=1e-3, checkpoint_every=a.steps, val_every=a.steps,
                            log_every=1, threads_per_worker=1)

    def run_dir(rid: str) -> Path:
        return lake / "runs" / "kind=train" / f"run={rid}"

    torch.set_num_threads(1)
    run_training(model_cfg=model_cfg, sample_cfg=sample_cfg, train_cfg=train_cfg, lake=lake, dataset="b",
                 dataset_version=version, run_dir=run_dir("inproc"), ex=InProcess(), work_dir=tmp / "ck")
    inproc = _median_step(lake, "inproc", a.warmup)
    ray_steps = {}
    with ray_session(num_cpus=2):
        for workers in (1, 2):
            rid = f"ray{workers}"
            config = config_dict(model_cfg, sample_cfg, train_cfg) | {
                "lake": str(lake), "dataset": "b", "dataset_version": version, "run_dir": str(run_dir(rid))}
            t0 = time.perf_counter()
            fit_task.fn(config, workers, False, lake / "_ray" / "train", rid)
            print(f"ray {workers} worker(s): fit() {time.perf_counter() - t0:.1f} s including start-up")
            ray_steps[workers] = _median_step(lake, rid, a.warmup)
    sps = {k: a.batch / v for k, v in {"inproc": inproc, "ray1": ray_steps[1], "ray2": ray_steps[2]}.items()}
    ratio = sps["ray2"] / sps["ray1"]
    overhead = ray_steps[1] / inproc - 1
    print(f"samples/s  in-process {sps['inproc']:.1f} | Ray 1 worker {sps['ray1']:.1f} | Ray 2 workers {sps['ray2']:.1f}"
          f"  (global batch {a.batch}, median step after {a.warmup} warm-up steps)")
    print(f"2 workers vs 1 worker throughput: {ratio:.2f}x   (target >= 1.6)")
    print(f"Ray Train per-step overhead vs in-process: {overhead * 100:+.1f}%   (target <= 10%)")
    row = {"bench": "train_cpu", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": a.steps,
           "batch": a.batch, "step_s_inproc": inproc, "step_s_ray1": ray_steps[1], "step_s_ray2": ray_steps[2],
           "ratio_2v1": round(ratio, 3), "ray_overhead": round(overhead, 4), "cpus": os.cpu_count()}
    record("bench_train_cpu", row)

if __name__ == "__main__":
    main()
