"""Benchmark: `TrainingSampler.sample` throughput (Eq. 1 + Eq. 5 samples) on ONE core.

    ./dev sh python bench/bench_sampler.py [--scenes 300] [--resolution 256] [--samples 2000]

A default-config synthetic world (640×480, ~22 layers per image) is generated once and cached under bench/.cache
(keyed on the synth code, so a changed generator is never benchmarked stale), rebuilt in-process into a temporary
lake, indexed (train split), and then `sample(i)` is timed over `--samples` consecutive indices, three times; the
median samples/s is the result. Target: >= 250 samples/s at resolution 256 with the default guidance mix. The
process is pinned to one CPU and BLAS/OpenMP pools to one thread; torch is not involved. A per-guidance-kind
breakdown follows. A JSON row goes to bench/results/ (and to <lake>/runs/kind=bench/ with --lake).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _results import record  # noqa: E402  (bench/ is on sys.path: the script's own folder)

sys.path.insert(0, str(HERE))

TARGET = 250.0


def world_dir(scenes: int, seed: int) -> Path:
    code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((HERE.parent / "smartmask" / "synth").glob("*.py"))))
    return HERE / ".cache" / f"synth-{scenes}-seed{seed}-{code.hexdigest()[:8]}"


def rate(sampler, start: int, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(start, start + n):
        sampler.sample(i)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--samples", type=int, default=2000, help="samples per timed run (3 runs)")
    ap.add_argument("--workers", type=int, default=2, help="processes for generating the world (not timed)")
    ap.add_argument("--lake", default=None, help="lake to record the bench row in (default: only bench/results)")
    a = ap.parse_args()

    import numpy as np

    from smartmask.config import RebuildConfig, SynthConfig
    from smartmask.rebuild import rebuild
    from smartmask.synth import generate
    from smartmask.training.samples import LayerIndex, SampleConfig, TrainingSampler

    world = world_dir(a.scenes, a.seed)
    if not (world / "annotations.json").exists():
        t = time.perf_counter()
        generate(world, a.scenes, a.seed, SynthConfig(), workers=a.workers)
        print(f"generated {a.scenes} scenes in {time.perf_counter() - t:.1f} s (not timed)")

    cpu = None
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})

    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp) / "lake"
        t = time.perf_counter()
        m = rebuild(f"cocoa:{world / 'annotations.json'}", world / "images", "bench", lake,
                    RebuildConfig(workers=1))
        print(f"rebuilt into a temp lake in {time.perf_counter() - t:.1f} s (not timed)")
        cfg = SampleConfig(resolution=a.resolution)
        t = time.perf_counter()
        index = LayerIndex.from_lake(lake, "bench", m["version"], cfg.split)
        t_index = time.perf_counter() - t
    sampler = TrainingSampler(index, cfg, seed=0)
    h, w = int(np.median(index.heights)), int(np.median(index.widths))
    layers_per_image = index.n_layers / max(index.n_images, 1)
    print(f"index ({cfg.split}): {index.n_images} images {w}x{h}, {index.n_layers} layers "
          f"({layers_per_image:.1f}/image), {len(index)} valid targets, built in {t_index:.2f} s")

    rate(sampler, 10**9, 200)  # warm-up: caches of the resize grid, page-in
    runs = [rate(sampler, r * a.samples, a.samples) for r in range(3)]
    med = statistics.median(runs)
    ks = [sampler.sample(i)["k"] for i in range(500)]
    per_kind = {}
    for j, kind in enumerate(("none", "box", "blob", "scribble")):
        mix = tuple(1.0 if q == j else 0.0 for q in range(4))
        s = TrainingSampler(index, SampleConfig(resolution=a.resolution, guidance_mix=mix), seed=0)
        per_kind[kind] = round(rate(s, 0, max(a.samples // 4, 100)), 1)
    print(f"runs: {', '.join(f'{r:.1f}' for r in runs)} samples/s (resolution {a.resolution}, {a.samples} each, "
          f"one core{f' (cpu {cpu})' if cpu is not None else ''})")
    print(f"samples/s: {med:.1f}   (target >= {TARGET:.0f})   mean painted layers k = {np.mean(ks):.1f}")
    print("per guidance kind: " + ", ".join(f"{k} {v}" for k, v in per_kind.items()))

    row = {"bench": "sampler", "scenes": a.scenes, "images": index.n_images, "layers": index.n_layers,
           "layers_per_image": round(layers_per_image, 2), "targets": len(index), "source_w": w, "source_h": h,
           "resolution": a.resolution, "samples_per_run": a.samples, "runs_per_s": [round(r, 1) for r in runs],
           "samples_per_s": round(med, 1), "target_per_s": TARGET, "met": med >= TARGET,
           "per_kind_per_s": per_kind, "mean_k": round(float(np.mean(ks)), 2), "index_build_s": round(t_index, 3),
           "cores": 1, "host": platform.node(), "cpus": os.cpu_count(), "processor": platform.processor(),
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    record("bench_sampler", row, a.lake)

if __name__ == "__main__":
    main()
