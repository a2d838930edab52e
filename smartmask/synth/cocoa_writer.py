"""Write the synthetic world as a COCOA dataset: `out_dir/annotations.json` + `out_dir/images/*.png`.

COCOA (Zhu et al., "Semantic Amodal Segmentation") has one annotation per image holding all its regions:
    {"id", "image_id", "size": n_regions, "author", "url", "depth_constraint": "1-2,1-3", "regions": [
        {"segmentation": [x1, y1, ...], "name", "area", "isStuff", "occlude_rate", "order",
         "visible_mask": RLE, "invisible_mask": RLE}   # the two masks only where occlude_rate > 0
    ]}
`order` 1 is the front-most region and regions are listed front to back; "a-b" in `depth_constraint` means
region a (1-based) occludes region b. Every scene is a pure function of (seed, scene index), so the output is
byte-identical whatever the number of workers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from smartmask.config import SynthConfig
from smartmask.synth import render, world

AUTHOR = "smartmask-synth"
FORMAT_VERSION = 1  # bump when the same seed would produce different scenes


def file_name(image_id: int) -> str:
    return f"{image_id:012d}.png"


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def scene_records(index: int, seed: int, config: SynthConfig, images_dir: str | None) -> tuple[str, str]:
    """Build scene `index`, write its PNG (atomically), return its COCOA image and annotation as JSON text."""
    rng = np.random.default_rng([seed, index])
    scene = world.sample_scene(rng, config)
    layers = render.settle(scene, rng, config)
    image_id = index + 1
    name = file_name(image_id)
    if images_dir is not None:
        tmp = os.path.join(images_dir, f".{name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(render.png_bytes(render.rgb(layers)))
        os.replace(tmp, os.path.join(images_dir, name))

    n = len(layers.order)
    occ = render.occlusions(layers)
    hidden = render.split_rles(layers)
    regions = []
    for idx in range(n - 1, -1, -1):  # front-most first: paint index idx -> COCOA order n - idx
        inst = layers.order[idx]
        amodal, vis = int(layers.amodal[idx]), int(layers.visible[idx])
        region = {
            "segmentation": [float(v) for v in inst.poly.ravel()],
            "name": inst.name,
            "area": float(amodal),
            "isStuff": int(inst.stuff),
            "occlude_rate": round(1.0 - vis / amodal, 6) if amodal else 0.0,
            "order": n - idx,
        }
        if idx in hidden:
            region["visible_mask"], region["invisible_mask"] = hidden[idx]
        regions.append(region)
    pairs = sorted({(n - a, n - b) for a, b, _ in occ})
    caption = world.caption(scene, [(layers.order[a], layers.order[b], px) for a, b, px in occ])
    image = {"id": image_id, "file_name": name, "width": config.width, "height": config.height,
             "caption": caption, "scene": scene.kind}  # fmt: skip
    ann = {"id": image_id, "image_id": image_id, "size": n, "author": AUTHOR, "url": "", "regions": regions,
           "depth_constraint": ",".join(f"{a}-{b}" for a, b in pairs)}  # fmt: skip
    return _dumps(image), _dumps(ann)


def _info(n_scenes: int, seed: int, config: SynthConfig) -> dict:
    return {
        "description": "SmartMask synthetic amodal world (procedural scenes, COCOA format)",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "n_scenes": n_scenes,
        "config": dataclasses.asdict(config),
        "things": list(world.THINGS),
        "stuff": list(world.STUFF),
        "support": {k: list(v) for k, v in world.SUPPORT.items()},
        "context_rules": list(world.CONTEXT_RULES) if config.world == "context" else [],
    }


def generate(out_dir: str | os.PathLike, n_scenes: int, seed: int, config: SynthConfig = SynthConfig(),
             workers: int | None = None) -> Path:  # fmt: skip
    """Write `n_scenes` scenes; returns the path of annotations.json. `workers=None` uses every core.

    Image entries stream straight into the output and annotation entries into a side file appended at the end,
    so memory stays flat at the paper's size (32,785 images). Both go to temp names and annotations.json
    appears only once complete; an interrupted run leaves no half-written annotations file behind.
    """
    if n_scenes < 0:
        raise ValueError(f"n_scenes must be >= 0, got {n_scenes}")
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    final = out / "annotations.json"
    tmp_main = out / f".annotations.json.{os.getpid()}.tmp"
    tmp_anns = out / f".annotations.regions.{os.getpid()}.tmp"
    workers = max(1, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    work = functools.partial(scene_records, seed=seed, config=config, images_dir=str(images))
    pool = None
    try:
        if workers > 1 and n_scenes > 1:
            # spawn, not fork: callers (Prefect, Ray workers, torch) hold threads, and forking them is unsafe.
            # The executor (unlike multiprocessing.Pool) raises BrokenProcessPool if a worker cannot start,
            # instead of respawning it forever.
            pool = ProcessPoolExecutor(
                min(workers, n_scenes), mp_context=multiprocessing.get_context("spawn")
            )
            chunk = max(1, min(32, n_scenes // (workers * 8)))
            results = pool.map(work, range(n_scenes), chunksize=chunk)
        else:
            results = map(work, range(n_scenes))
        with open(tmp_main, "w", encoding="ascii") as fm, open(tmp_anns, "w+", encoding="ascii") as fa:
            fm.write('{"info":' + _dumps(_info(n_scenes, seed, config)) + ',\n"images":[\n')
            for i, (img_json, ann_json) in enumerate(results):
                sep = ",\n" if i else ""
                fm.write(sep + img_json)
                fa.write(sep + ann_json)
            fm.write('\n],\n"annotations":[\n')
            fa.seek(0)
            shutil.copyfileobj(fa, fm)
            fm.write("\n]}\n")
            fm.flush()
            os.fsync(fm.fileno())
        os.replace(tmp_main, final)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for p in (tmp_main, tmp_anns):
            if p.exists():
                p.unlink()
    return final
