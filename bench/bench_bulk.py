"""Benchmark: bulk insertion on Ray Data (tiny random-init SmartMask, synthetic inpainter, CPU).

    ./dev sh python bench/bench_bulk.py [--items 240] [--rounds 2] [--part speed|memory|all]

Three figures, each measured in this invocation, each run in a fresh child process pinned to its cores
(`os.sched_setaffinity` before Ray starts, so Ray's own processes share those cores too):

1. scaling: items/s of `--workers 2` on 2 cores vs `--workers 1` on 1 core (target >= 1.6x);
2. overhead: Ray Data with 1 worker on 1 core vs a plain in-process loop over the same stage objects on the same
   core (target: Ray's time per item at most 1.15x the loop's);
3. driver memory: peak RSS of the driver process (`ru_maxrss`: Ray's workers are other processes) for a
   10,000-row catalog vs a 1,000-row one, 2 workers (target <= 1.2x).

Items/s are marginal: each configuration runs a catalog of `--items` and one of a quarter of that, and the rate is
(items difference) / (wall-time difference), so model loading and Ray's start-up (paid once per job, tens of
seconds here, and not per item) cancel out; both wall times are recorded. Rounds interleave the three speed
configurations (this VM drifts). Each item: 1 suggestion, 1 DPM step,
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
    os.sched_setaffinity(0, set(range(a.cores)))
    import torch

    torch.set_num_threads(1)
    env = json.loads(a.env)
    from smartmask.bulk.config import BulkConfig, default_stages
    from smartmask.bulk.stages import read_catalog, run_inline
    from smartmask.bulk.store import Committer

    lake, cat = Path(env["lake"]), Path(a.catalog)
    out = Path(a.out)
    cfg = BulkConfig.for_tests(env["model"], n_suggestions=1, steps=1, allow_roots=(env["world"],),
                               stages=default_stages(a.workers), commit_every=512)
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
    wall = time.perf_counter() - t0
    print(json.dumps({"mode": a.child, "workers": a.workers, "cores": a.cores, "items": len(stamps),
                      "inserted": inserted, "wall_s": round(wall, 2),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def run_child(mode: str, workers: int, cores: int, cat: Path, env: dict, out: Path) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", mode, "--workers", str(workers), "--cores", str(cores),
           "--catalog", str(cat), "--env", json.dumps(env), "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if p.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{p.stderr[-4000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    print(f"  {mode:4s} workers={workers} cores={cores}: {res['items']} items in {res['wall_s']:.1f} s wall, "
          f"driver peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
    return res


def marginal(mode: str, workers: int, cores: int, small: Path, large: Path, env: dict, out: Path) -> dict:
    """Items/s between a small and a large run of the same configuration (start-up cancels)."""
    s = run_child(mode, workers, cores, small, env, out)
    big = run_child(mode, workers, cores, large, env, out)
    rate = (big["items"] - s["items"]) / (big["wall_s"] - s["wall_s"])
    return {"small": s, "large": big, "items_per_s": rate}


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
    ap.add_argument("--catalog")
    ap.add_argument("--env")
    ap.add_argument("--out")
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
        small, large = catalog(cache, env, a.items // 4), catalog(cache, env, a.items)
        loop, one, two = [], [], []
        for r in range(a.rounds):
            print(f"round {r + 1}/{a.rounds}", flush=True)
            loop.append(marginal("loop", 1, 1, small, large, env, scratch / "loop"))
            one.append(marginal("ray", 1, 1, small, large, env, scratch / "ray1"))
            two.append(marginal("ray", 2, 2, small, large, env, scratch / "ray2"))
        rate = {k: sum(x["items_per_s"] for x in v) / len(v) for k, v in (("loop", loop), ("ray1", one),
                                                                        ("ray2", two))}
        scaling = rate["ray2"] / rate["ray1"]
        overhead = rate["loop"] / rate["ray1"]  # time per item, Ray over loop
        print(f"items/s: loop {rate['loop']:.2f}, Ray 1 worker {rate['ray1']:.2f}, Ray 2 workers {rate['ray2']:.2f}")
        print(f"scaling 2 workers / 1 worker: {scaling:.2f}x   (target >= 1.6)")
        print(f"Ray 1 worker time per item / plain loop: {overhead:.3f}   (target <= 1.15)")
        row |= {"loop_items_per_s": round(rate["loop"], 3), "ray1_items_per_s": round(rate["ray1"], 3),
                "ray2_items_per_s": round(rate["ray2"], 3), "scaling_2v1": round(scaling, 3),
                "ray_over_loop": round(overhead, 3), "runs": {"loop": loop, "ray1": one, "ray2": two}}
    if a.part in ("memory", "all"):
        small = run_child("ray", 2, 2, catalog(cache, env, a.small), env, scratch / "mem-small")
        large = run_child("ray", 2, 2, catalog(cache, env, a.large), env, scratch / "mem-large")
        mem = large["peak_rss_mib"] / small["peak_rss_mib"]
        print(f"driver peak RSS: {a.large} rows {large['peak_rss_mib']:.0f} MiB vs {a.small} rows "
              f"{small['peak_rss_mib']:.0f} MiB: {mem:.3f}x   (target <= 1.2)")
        row |= {"small_rows": a.small, "large_rows": a.large, "driver_rss_small_mib": small["peak_rss_mib"],
                "driver_rss_large_mib": large["peak_rss_mib"], "driver_rss_ratio": round(mem, 3),
                "memory_runs": {"small": small, "large": large}}
    from _results import record

    record("bench_bulk", row, a.lake)


if __name__ == "__main__":
    main()
