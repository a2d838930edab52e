"""Benchmark: bulk insertion on Ray Data (tiny random-init SmartMask, synthetic inpainter, CPU).

    ./dev sh python bench/bench_bulk.py [--items 240] [--rounds 2] [--part speed|memory|all]

Three figures, each measured in this invocation, each run in a fresh child process on the whole machine (2 cores
here; Ray's logical CPUs = the cores), with the default placement on CPUs (`auto` = fused: every stage in one actor
per worker):

1. scaling: items/s of `--workers 2` vs `--workers 1` (target >= 1.6x);
2. overhead: Ray Data with 1 worker vs a plain in-process loop over the same stage objects (target: Ray's time
   per item at most 1.15x the loop's);
3. driver memory: peak RSS of the driver process (`ru_maxrss`: Ray's workers are other processes) for a
   10,000-row catalog vs a 1,000-row one, 2 workers (target <= 1.2x).

`--pin` instead pins each run to as many cores as it has workers (`os.sched_setaffinity` before Ray starts, so Ray's
own processes — raylet, GCS, dashboard agent, stats actors: about 0.3 of a core here — share the workers' cores).

`--staged` also runs the staged placement (each stage its own tasks/actors) at 1 and 2 workers, for comparison.
Items/s are steady-state: (items after the first quarter) / (time from the quarter-th item to the last), so model
loading and Ray's start-up (paid once per job, tens of seconds here) do not count; the wall time with them is
recorded too. Rounds interleave the configurations (this VM drifts). Each item: 1 suggestion, 1 DPM step,
the synthetic world's renderer as inpainter, 160x120 images. The world, lake and model are cached in bench/.cache.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def setup(cache: Path) -> dict:
    """A synthetic lake with a registered random-init tiny model (cached)."""
    info = cache / "info.json"
    if info.exists():
        return json.loads(info.read_text())
    from safetensors.torch import save_file

    from smartmask import presets
    from smartmask.config import RebuildConfig, SynthConfig
    from smartmask.model.network import SmartMask
    from smartmask.rebuild import rebuild
    from smartmask.registry import register
    from smartmask.synth import generate

    world, lake, work = cache / "world", cache / "lake", cache / "work"
    generate(world, 60, seed=0, config=SynthConfig(width=160, height=120, min_things=4, max_things=8), workers=2)
    m = rebuild(f"cocoa:{world / 'annotations.json'}", world / "images", "synth", lake, RebuildConfig.for_tests())
    cfg = presets.tiny_model()
    model = SmartMask.build(cfg)
    work.mkdir(parents=True, exist_ok=True)
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad},
              str(work / "ema.safetensors"))
    mv = register(lake, work, cfg, {"model": cfg.to_dict(), "sample": {"alpha": 0.7}}, "synth", m["version"],
                  "bench-bulk", {"step": 0})
    d = {"lake": str(lake), "world": str(world), "version": m["version"], "model": mv}
    info.write_text(json.dumps(d))
    return d


def catalog(cache: Path, env: dict, n: int) -> Path:
    from smartmask.bulk.synthetic import heldout_rows, write_jsonl

    path = cache / f"catalog-{n}.jsonl"
    if not path.exists():
        write_jsonl(heldout_rows(Path(env["lake"]), "synth", env["version"], n, n_suggestions=1), path)
    return path


# ------------------------------------------------------------------------------------------------- child


def child(a: argparse.Namespace) -> None:
    """One measured run, in this (fresh) process: prints one JSON line."""
    if a.pin:
        os.sched_setaffinity(0, set(range(a.first_core, a.first_core + a.cores)))
    import torch

    torch.set_num_threads(1)
    env = json.loads(a.env)
    from smartmask.bulk.config import BulkConfig, default_stages
    from smartmask.bulk.stages import read_catalog, run_inline
    from smartmask.bulk.store import Committer

    lake, cat = Path(env["lake"]), Path(a.catalog)
    out = Path(a.out)
    stages = default_stages(a.workers)
    if os.environ.get("BENCH_BULK_BATCH"):  # experiments with the batch size of the fused actor
        import dataclasses

        stages["fused"] = dataclasses.replace(stages["fused"], batch_size=int(os.environ["BENCH_BULK_BATCH"]))
    cfg = BulkConfig.for_tests(env["model"], n_suggestions=1, steps=1, allow_roots=(env["world"],),
                               stages=stages, commit_every=512, placement=a.placement)
    stamps: list[float] = []
    t0 = time.perf_counter()  # includes Ray's start-up and the model loads: the marginal rate cancels them
    if a.child == "loop":
        c = Committer(out)
        for rows in run_inline(read_catalog(cat, cfg, set(), batch_rows=4), lake, cfg, str(cat.parent), out, "bench"):
            c.add(rows)
            stamps.extend([time.perf_counter()] * len(rows))
        c.close()
        inserted = c.inserted
    else:
        import ray

        from flows.ray_runtime import ray_session
        from smartmask.bulk.store import committed_keys
        from tasks.bulk import build_dataset

        with ray_session(num_cpus=a.cores):
            c = Committer(out, cfg.commit_every)
            for b in build_dataset(cat, lake, out, "bench", cfg).iter_batches(batch_size=None,
                                                                              batch_format="pyarrow"):
                c.add(b.to_pylist())
                stamps.extend([time.perf_counter()] * b.num_rows)
            c.close()
            inserted = c.inserted
            assert ray.is_initialized() and len(committed_keys(out)) == len(stamps)
            if os.environ.get("BENCH_BULK_CPU"):  # where the CPU time went, per process (diagnostics)
                import psutil

                for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
                    t = p.cpu_times()
                    print(f"{t.user + t.system:8.1f} s  {' '.join(p.cmdline())[:100]}", file=sys.stderr)
    wall = time.perf_counter() - t0
    q = len(stamps) // 4  # steady state: from the moment a quarter of the items are out to the last one
    steady = (len(stamps) - q) / (stamps[-1] - stamps[q]) if stamps and stamps[-1] > stamps[q] else None
    print(json.dumps({"mode": a.child, "workers": a.workers, "cores": a.cores, "items": len(stamps),
                      "inserted": inserted, "wall_s": round(wall, 2), "steady_items_per_s": steady,
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def run_child(mode: str, workers: int, cores: int, cat: Path, env: dict, out: Path,
              placement: str = "auto", pin: bool = False) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    cores = cores if pin else len(os.sched_getaffinity(0))
    cmd = [sys.executable, __file__, "--child", mode, "--workers", str(workers), "--cores", str(cores),
           "--catalog", str(cat), "--env", json.dumps(env), "--out", str(out), "--placement", placement,
           *(["--pin"] if pin else [])]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if p.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{p.stderr[-4000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    res["placement"] = placement if mode == "ray" else "in-process loop"
    print(f"  {mode:4s} {res['placement']:15s} workers={workers} cores={cores}: {res['items']} items, "
          f"{res['steady_items_per_s']:.2f} items/s steady, {res['wall_s']:.1f} s wall with start-up, "
          f"driver peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=240)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--part", choices=("speed", "memory", "all"), default="all")
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=10000)
    ap.add_argument("--lake", default=None, help="lake to record the bench row in")
    ap.add_argument("--child", choices=("loop", "ray"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cores", type=int, default=1)
    ap.add_argument("--first-core", type=int, default=0)
    ap.add_argument("--catalog")
    ap.add_argument("--env")
    ap.add_argument("--out")
    ap.add_argument("--placement", default="auto", choices=("auto", "fused", "staged"))
    ap.add_argument("--staged", action="store_true", help="also measure the staged placement")
    ap.add_argument("--pin", action="store_true", help="pin each run to as many cores as it has workers")
    a = ap.parse_args()
    if a.child:
        return child(a)
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs at least 2 cores")
    cache = HERE / ".cache" / "bulk"
    cache.mkdir(parents=True, exist_ok=True)
    env = setup(cache)
    scratch = cache / "runs"
    row: dict = {"items": a.items, "rounds": a.rounds, "per_item": "1 suggestion, 1 DPM step, synthetic inpainter, "
                 "160x120", "tiny_model": "random-init tiny preset"}
    if a.part in ("speed", "all"):
        cat = catalog(cache, env, a.items)
        runs: dict[str, list[dict]] = {"loop": [], "ray1": [], "ray2": []}
        if a.staged:
            runs |= {"staged1": [], "staged2": []}
        for r in range(a.rounds):
            print(f"round {r + 1}/{a.rounds}", flush=True)
            runs["loop"].append(run_child("loop", 1, 1, cat, env, scratch / "loop", pin=a.pin))
            runs["ray1"].append(run_child("ray", 1, 1, cat, env, scratch / "ray1", pin=a.pin))
            runs["ray2"].append(run_child("ray", 2, 2, cat, env, scratch / "ray2", pin=a.pin))
            if a.staged:
                runs["staged1"].append(run_child("ray", 1, 1, cat, env, scratch / "staged1", "staged", a.pin))
                runs["staged2"].append(run_child("ray", 2, 2, cat, env, scratch / "staged2", "staged", a.pin))
        rate = {k: sum(x["steady_items_per_s"] for x in v) / len(v) for k, v in runs.items()}
        loop, one, two = runs["loop"], runs["ray1"], runs["ray2"]
        scaling = rate["ray2"] / rate["ray1"]
        overhead = rate["loop"] / rate["ray1"]  # time per item, Ray over loop
        print(f"items/s: loop {rate['loop']:.2f}, Ray 1 worker {rate['ray1']:.2f}, Ray 2 workers {rate['ray2']:.2f}")
        print(f"scaling 2 workers / 1 worker: {scaling:.2f}x   (target >= 1.6)")
        print(f"Ray 1 worker time per item / plain loop: {overhead:.3f}   (target <= 1.15)")
        if a.staged:
            print(f"staged placement: 1 worker {rate['staged1']:.2f} items/s, 2 workers {rate['staged2']:.2f} "
                  f"({rate['staged2'] / rate['staged1']:.2f}x; {rate['loop'] / rate['staged1']:.2f}x the loop's time "
                  "per item at 1 worker)")
            row |= {"staged1_items_per_s": round(rate["staged1"], 3), "staged2_items_per_s": round(rate["staged2"], 3)}
        row |= {"placement": "auto (fused on CPU)", "pinned": a.pin, "loop_items_per_s": round(rate["loop"], 3),
                "ray1_items_per_s": round(rate["ray1"], 3), "ray2_items_per_s": round(rate["ray2"], 3),
                "scaling_2v1": round(scaling, 3), "ray_over_loop": round(overhead, 3),
                "scaling_target": 1.6, "overhead_target": 1.15, "runs": {"loop": loop, "ray1": one, "ray2": two}}
    if a.part in ("memory", "all"):
        small = run_child("ray", 2, 2, catalog(cache, env, a.small), env, scratch / "mem-small")
        large = run_child("ray", 2, 2, catalog(cache, env, a.large), env, scratch / "mem-large")
        mem = large["peak_rss_mib"] / small["peak_rss_mib"]
        print(f"driver peak RSS: {a.large} rows {large['peak_rss_mib']:.0f} MiB vs {a.small} rows "
              f"{small['peak_rss_mib']:.0f} MiB: {mem:.3f}x   (target <= 1.2)")
        row |= {"small_rows": a.small, "large_rows": a.large, "driver_rss_small_mib": small["peak_rss_mib"],
                "driver_rss_large_mib": large["peak_rss_mib"], "driver_rss_ratio": round(mem, 3),
                "memory_target": 1.2,
                "memory_runs": {"small": small, "large": large}}
    from _results import record

    record("bench_bulk", row, a.lake)


if __name__ == "__main__":
    main()
