"""Benchmark: `smartmask rebuild` on the synthetic world vs merely decoding every mask once.

    ./dev sh python bench/bench_rebuild.py [--scenes 5000] [--workers 2]

Prints images/s of the full rebuild (the Prefect flow, start-up included) and the ratio of its wall time to the
time of decoding every amodal mask once with pycocotools (polygon → RLE → mask, one process), both measured in
this run. Targets on the 2-core CPU machine: >= 100 images/s and ratio <= 3. The synthetic world is cached under
bench/.cache (its generation is not timed), as is the Prefect home. A row goes to <lake>/runs/kind=bench/ and a JSON file to
bench/results/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# A persistent PREFECT_HOME, as a user has: its first use pays Prefect's database migrations (~10 s), later
# runs only the ephemeral server's start (~5 s). Both are inside the timed rebuild.
os.environ.setdefault("PREFECT_HOME", str(Path(__file__).resolve().parent / ".cache" / "prefect-home"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import record  # noqa: E402  (bench/ is on sys.path: the script's own folder)
from pycocotools import mask as mask_utils  # noqa: E402

from smartmask.config import RebuildConfig, SynthConfig  # noqa: E402

HERE = Path(__file__).resolve().parent


def decode_all(ann: dict) -> tuple[int, float]:
    sizes = {im["id"]: (im["height"], im["width"]) for im in ann["images"]}
    t0 = time.perf_counter()
    n = 0
    for a in ann["annotations"]:
        h, w = sizes[a["image_id"]]
        for r in a["regions"]:
            mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([r["segmentation"]], h, w)))
            n += 1
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lake", default=None, help="lake to record the bench row in (default: a temp dir)")
    a = ap.parse_args()

    from smartmask.synth import generate

    # The cache is keyed on the generator's code too, so a changed world is regenerated, never benchmarked stale.
    code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((HERE.parent / "smartmask" / "synth").glob("*.py"))))
    world = HERE / ".cache" / f"synth-{a.scenes}-seed{a.seed}-{code.hexdigest()[:8]}"
    if not (world / "annotations.json").exists():
        t = time.perf_counter()
        generate(world, a.scenes, a.seed, SynthConfig(), workers=a.workers)
        print(f"generated {a.scenes} scenes in {time.perf_counter() - t:.1f} s (not timed)")
    ann = json.loads((world / "annotations.json").read_text())
    n_images = len(ann["images"])
    n_masks, t_decode = decode_all(ann)
    del ann
    print(f"decode baseline: {n_masks} masks ({n_masks / n_images:.1f}/image) in {t_decode:.2f} s")

    from flows.rebuild_dataset import rebuild_dataset

    with tempfile.TemporaryDirectory() as tmp:
        lake = Path(tmp) / "lake"
        t0 = time.perf_counter()
        m = rebuild_dataset(f"cocoa:{world / 'annotations.json'}", str(world / "images"), "bench", str(lake),
                            RebuildConfig(workers=a.workers))
        t_rebuild = time.perf_counter() - t0
        t1 = time.perf_counter()
        rebuild_dataset(f"cocoa:{world / 'annotations.json'}", str(world / "images"), "bench", str(lake),
                        RebuildConfig(workers=a.workers))
        t_noop = time.perf_counter() - t1
    assert m["counts"]["image"]["accepted"] == n_images, m["counts"]
    ips = n_images / t_rebuild
    ratio = t_rebuild / t_decode
    print(f"rebuild: {n_images} images, {m['counts']['region']['accepted']} layers in {t_rebuild:.2f} s "
          f"(workers={a.workers}, flow start-up included); unchanged-input rerun {t_noop:.2f} s")
    print(f"images/s: {ips:.1f}   (target >= 100)")
    print(f"ratio rebuild / decode-once: {ratio:.2f}   (target <= 3)")
    row = {"bench": "rebuild", "scenes": n_images, "masks": n_masks, "workers": a.workers,
           "rebuild_s": round(t_rebuild, 3), "decode_s": round(t_decode, 3), "noop_rerun_s": round(t_noop, 3),
           "images_per_s": round(ips, 1), "ratio_vs_decode": round(ratio, 3), "host": platform.node(),
           "cpus": os.cpu_count(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    record("bench_rebuild", row, a.lake)

if __name__ == "__main__":
    main()
