"""Benchmark: the dashboard build over a lake of 1,000,000 eval rows (10 model versions) vs DuckDB's queries alone.

    ./dev sh python bench/bench_dashboard.py [--rows 1000000] [--rounds 3] [--work DIR] [--no-record] [--smoke]

The issue's acceptance point: `dashboards.build.build_dashboard(lake, out)` over a lake with `--rows` eval rows
(default 1,000,000) across 10 model versions, timed against DuckDB's raw aggregate queries alone. Targets on this
machine: build <= 10 s, build / queries <= 2x, and the page under 20 MB (it carries aggregates, never raw rows).

The lake is synthetic, generated with numpy + pyarrow in memory-bounded parts (~0.4 GB peak at 1M rows),
deterministic from `--seed`, under `--work` (default: a temporary folder removed at exit; a given folder is kept
and reused, so a second run skips generation: about a minute at 1M rows on 2 cores). It holds:
- dataset `synth` in two versions (the older with 80% of the images), as rebuild publishes them: images (640x480
  JPEG files on disk beside the lake, hard links to 24 distinct pictures), 8 layers per image (COCO RLE), vocabulary,
  captions, rejects, stats and CARD.md (smartmask.lake.cards), _manifest.json;
- 10 model versions (`models/version=V/model.parquet`, MODELS), one a day, each with a training run
  (`runs/kind=train/run=R/metrics/`, TRAIN_METRICS: a loss curve of 200-650 logged steps);
- one evaluation run per version on the same eval set (`runs/kind=eval/run=R/items/part-*.parquet`, EVAL_ITEMS):
  rows / 100 items (4 per image, item id `<image>-k<layer>`) x 10 rows as the evaluator writes them (smartmask under
  none/box/point/scribble, the box and oracle baselines under box/point/scribble). Per-item metrics share an item
  difficulty, depend on the method, guidance, size bin and class, and the model improves a little with each
  version; ~1% failed rows; IoU 0 and no insertion metrics where the rank-1 mask is empty; `mask_rle` a 640x480
  RLE (one of 160 shapes, near the ground truth's size); the Local-FID features (`real_feat`, `fake_feat`) are NULL
  to keep the rows light;
- each run's `summary.parquet` (EVAL_SUMMARY), computed with DuckDB from its items: aggregate rows per method,
  guidance and (all | class | size bin) with a normal-approximation 95% interval instead of the bootstrap, paired
  rows (smartmask minus each baseline, and minus the previous version), gap rows;
- 3 bulk-insertion runs (INSERT_ITEMS, 2,000 rows each, 4% rejected) over the eval set's images, their output PNGs
  on disk; and the records of bench/results/*.json as `bench` rows.
Generation time is printed and recorded, never part of a timed figure.

Timing: one untimed warm-up of each (imports, the page cache), then `--rounds` interleaved rounds (default 3) of
A then B; each figure is the median of its rounds (the ratio: the median of each round's A / B):
  A  `build_dashboard(lake, out)`: every panel's query, the gallery's and bulk samples' thumbnails, the JSON, the
     HTML, the atomic write;
  B  DuckDB alone: `smartmask.lake.query.connect(lake)` (the views the build reads) and every `dashboards/sql/*.sql`
     query, with the parameters the build binds, executed and its result fetched as an Arrow table; nothing else.
Both use DuckDB's threads as `connect` leaves them (the default: one per core, 2 here). Printed and recorded:
build seconds, the ratio A / B, the HTML size in MB (10^6 bytes), each with its target and pass/fail, B's seconds
per query, the load average before and after (this 2-core machine is often shared), and one more build taken apart
(`collect`'s queries with their conversion to JSON-able columns, the pictures, `render_page`, the write; what the
page's megabytes are made of).

`--smoke`: a tiny lake (5,000 rows), one round, writes no record. `--no-record`: print, write no record.
A JSON record goes to bench/results/ (and to <lake>/runs/kind=bench/ with --lake).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

BUILD_TARGET_S = 10.0  # build <= 10 s
RATIO_TARGET = 2.0  # build / DuckDB queries <= 2x
HTML_TARGET_MB = 20.0  # page < 20 MB
GEN_VERSION = "g2"  # bump when the generated lake changes (the cache key)

N_VERSIONS = 10
GUIDANCE = ("none", "box", "point", "scribble")
# (method, guidance) of each item's rows, as the evaluator writes them with the default baselines
ROW_KINDS = [("smartmask", g) for g in GUIDANCE] + [(b, g) for b in ("box", "oracle") for g in GUIDANCE[1:]]
ROWS_PER_ITEM = len(ROW_KINDS)  # 10
ITEMS_PER_PART = 2_500
CLASSES = ("person", "car", "dog", "cat", "chair", "bottle", "cup", "bird", "horse", "bicycle", "bench", "boat",
           "sheep", "cow", "bus", "truck", "umbrella", "vase", "clock", "plant")
METRICS = {"iou": True, "boundary_f": True, "best_of_n_iou": True, "diversity": True, "plausibility": True,
           "l2_bg": False, "bg_mse": False, "clip_score": True}  # summary.METRICS
EVAL_SET = "bench-dash"
SIZE_BINS = ("<1%", "1-5%", ">5%")
DATASET = "synth"
DATASET_VERSIONS = (("a3f09c12e4b87d65", 0.8), ("d5e7a1c0b2f4a6e8", 1.0))  # (version, share of the images)
DATASET_VERSION = DATASET_VERSIONS[-1][0]  # the one evaluated
W, H = 640, 480  # every image (the synthetic world's default size)
LAYERS_PER_IMAGE = 8
ITEM_LAYERS = (3, 4, 5, 6)  # the layers that are eval items: 4 items per image
STUFF = (("sky", "wall"), ("grass", "floor"))  # layers 0 and 1
OTHER_THINGS = ("tree", "house", "cloud", "table", "window", "painting")  # layers 2 and 7
N_SHAPES = 160  # distinct thing masks
N_PICTURES = 24  # distinct image files (each image's file is a hard link to one of them)
BULK_RUNS, BULK_ROWS = 3, 2_000
CLIP_BACKBONE, FID_EXTRACTOR = "tiny-random:0", "random-conv:0"
T0 = 1_793_491_200  # 2026-11-01T00:00:00Z: the first version's creation time


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _hex(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ------------------------------------------------------------------------------------------------- the lake


def _sigmoid(x):
    import numpy as np

    return 1.0 / (1.0 + np.exp(-x))


def _ellipse(cy: float, cx: float, ry: float, rx: float):
    """A bool (H, W) ellipse mask, computed inside its box only."""
    import numpy as np

    m = np.zeros((H, W), bool)
    y0, y1 = max(0, int(cy - ry)), min(H, int(cy + ry) + 1)
    x0, x1 = max(0, int(cx - rx)), min(W, int(cx + rx) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    m[y0:y1, x0:x1] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return m


def _shapes(seed: int) -> dict:
    """Mask pools, W x H, as COCO RLE: `things` ellipses sorted by area (log-uniform share 0.05%..45% of the image),
    `stuff` bands (sky / wall at the top, ground / floor at the bottom); their areas and boxes; the empty mask."""
    import numpy as np

    from smartmask import masks

    rng = np.random.default_rng([seed, 1])
    things, t_area, t_box = [], [], []
    for a in np.sort(np.exp(rng.uniform(np.log(0.0005), np.log(0.45), N_SHAPES))):
        aspect = rng.uniform(0.5, 2.0)
        ry = min(H / 2 - 1, (a * H * W / (np.pi * aspect)) ** 0.5)
        rx = min(W / 2 - 1, a * H * W / (np.pi * ry))
        m = _ellipse(rng.uniform(ry, H - ry), rng.uniform(rx, W - rx), ry, rx)
        ys, xs = np.nonzero(m)
        things.append(masks.encode(m)["counts"])
        t_area.append(int(m.sum()))
        t_box.append([float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)])
    stuff, s_area, s_box = [], [], []
    for i in range(8):
        m = np.zeros((H, W), bool)
        cut = int(H * rng.uniform(0.3, 0.55))
        if i % 2:
            m[H - cut:] = True
        else:
            m[:cut] = True
        ys, xs = np.nonzero(m)
        stuff.append(masks.encode(m)["counts"])
        s_area.append(int(m.sum()))
        s_box.append([0.0, float(ys.min()), float(W), float(ys.max() - ys.min() + 1)])
    return {"things": things, "thing_area": np.array(t_area), "thing_box": t_box, "stuff": stuff,
            "stuff_area": np.array(s_area), "stuff_box": s_box, "empty": masks.encode(np.zeros((H, W), bool))["counts"]}


def _items(n_items: int, seed: int, shapes: dict) -> dict:
    """The eval set: item i is layer ITEM_LAYERS[i % 4] of image i // 4 (item id `<image>-k<layer>`, as
    eval_set.py names them); its class, ground-truth shape (hence area share and size bin) and a latent difficulty."""
    import numpy as np

    rng = np.random.default_rng([seed, 0])
    p = 1.0 / np.arange(1, len(CLASSES) + 1) ** 0.8
    obj = rng.choice(len(CLASSES), size=n_items, p=p / p.sum())
    want = np.clip(np.exp(rng.normal(np.log(0.025), 1.1, n_items)), 0.0005, 0.45) * H * W
    gt = np.clip(np.searchsorted(shapes["thing_area"], want), 0, N_SHAPES - 1)
    area = shapes["thing_area"][gt] / (H * W)
    size_bin = np.where(area < 0.01, 0, np.where(area <= 0.05, 1, 2))
    image = np.arange(n_items) // len(ITEM_LAYERS)
    k = np.array(ITEM_LAYERS)[np.arange(n_items) % len(ITEM_LAYERS)]
    return {"item_id": np.array([f"{i + 1}-k{kk}" for i, kk in zip(image, k, strict=True)], dtype=object),
            "image_id": np.array([str(i + 1) for i in image], dtype=object), "image": image, "k": k,
            "object": obj, "gt": gt, "area": area, "size_bin": size_bin,
            "difficulty": rng.normal(0, 1, n_items), "class_effect": rng.normal(0, 0.25, len(CLASSES))}


def _sha(i: int) -> str:
    return hashlib.sha256(f"bench-dashboard-image-{i}".encode()).hexdigest()


def _picture(rng, size: tuple[int, int] = (W, H)):
    """A 640x480 RGB picture: a vertical gradient and a few soft blobs (compresses like a photo, not like noise)."""
    import numpy as np
    from PIL import Image, ImageFilter

    w, h = size
    top, bottom = rng.integers(40, 220, 3), rng.integers(20, 200, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    img = (top * (1 - t) + bottom * t).repeat(w, axis=1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 120)
        y0, y1, x0, x1 = max(0, int(cy - r)), min(h, int(cy + r) + 1), max(0, int(cx - r)), min(w, int(cx + r) + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        img[y0:y1, x0:x1][((yy - cy) ** 2 + (xx - cx) ** 2) < r * r] = rng.integers(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))


def _link_pool(pool: list[Path], names: list[Path]) -> None:
    """Each name a hard link to one of the pool's files (a copy where links are not possible)."""
    for i, name in enumerate(names):
        name.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(pool[i % len(pool)], name)
        except OSError:
            shutil.copyfile(pool[i % len(pool)], name)


def _write_dataset(lake: Path, files: Path, items: dict, shapes: dict, seed: int) -> None:
    """Two versions of dataset `synth` (the older one with the first 80% of the images), as rebuild publishes them:
    images (JPEG files on disk under `files`), layers, vocabulary, captions, rejects, stats, _manifest.json, CARD.md.
    Every image has LAYERS_PER_IMAGE layers: stuff at 0 and 1, a thing at 2 and 7, the eval items at 3..6."""
    import numpy as np
    import pyarrow as pa

    from smartmask.lake.cards import compute_stats, render_card
    from smartmask.lake.io import write_json_atomic, write_parquet_atomic
    from smartmask.lake.schemas import CAPTIONS, IMAGES, LAYERS, REJECTS, STATS, VOCABULARY

    rng = np.random.default_rng([seed, 4])
    n_img = int(items["image"].max()) + 1
    pool = []
    for i in range(N_PICTURES):
        path = files / "pool" / f"picture-{i:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        _picture(rng).save(path, "JPEG", quality=88)
        pool.append(path)
    names = [files / "images" / f"{i + 1:012d}.jpg" for i in range(n_img)]
    _link_pool(pool, names)

    labels = [(s, True) for pair in STUFF for s in pair] + [(c, False) for c in CLASSES] + \
             [(c, False) for c in OTHER_THINGS]
    label_id = {lab: i + 1 for i, (lab, _) in enumerate(sorted(labels))}
    stuff_set = {lab for lab, st in labels if st}
    # per image and layer: label, shape (stuff pool / thing pool index)
    lab = np.empty((n_img, LAYERS_PER_IMAGE), dtype=object)
    shape = np.zeros((n_img, LAYERS_PER_IMAGE), dtype=np.int64)
    for layer, pair in enumerate(STUFF):
        lab[:, layer] = np.array(pair, dtype=object)[np.arange(n_img) % 2]
        shape[:, layer] = 2 * rng.integers(0, 4, n_img) + layer  # even: top bands, odd: bottom bands
    for layer in (2, LAYERS_PER_IMAGE - 1):
        lab[:, layer] = np.array(OTHER_THINGS, dtype=object)[rng.integers(0, len(OTHER_THINGS), n_img)]
        shape[:, layer] = rng.integers(N_SHAPES // 3, N_SHAPES, n_img)
    for layer in ITEM_LAYERS:  # (the last image may hold fewer than 4 items)
        lab[:, layer] = np.array(CLASSES, dtype=object)[rng.integers(0, len(CLASSES), n_img)]
        shape[:, layer] = rng.integers(0, N_SHAPES, n_img)
    lab[items["image"], items["k"]] = np.array(CLASSES, dtype=object)[items["object"]]
    shape[items["image"], items["k"]] = items["gt"]
    for v, (version, frac) in enumerate(DATASET_VERSIONS):
        folder = lake / "datasets" / f"name={DATASET}" / f"version={version}"
        n = max(1, int(round(n_img * frac)))
        img_ix = np.arange(n)
        write_parquet_atomic(pa.table({
            "image_id": [str(i + 1) for i in img_ix], "file_name": [names[i].name for i in img_ix],
            "uri": [str(names[i]) for i in img_ix], "width": pa.array(np.full(n, W), pa.int32()),
            "height": pa.array(np.full(n, H), pa.int32()), "sha256": [_sha(i) for i in img_ix],
            "source": ["cocoa"] * n, "split": np.where(img_ix % 10 < 8, "train", "val").astype(object),
            "n_layers": pa.array(np.full(n, LAYERS_PER_IMAGE), pa.int32()),
            "n_rejected_regions": pa.array(np.zeros(n), pa.int32()), "order_source": ["source:order"] * n,
            "order_pairs": pa.array(np.full(n, 12), pa.int32()), "cycles_broken": pa.array(np.zeros(n), pa.int32()),
            "source_caption": [None] * n}).cast(IMAGES), folder / "images" / "part-00000.parquet")
        ii = np.repeat(img_ix, LAYERS_PER_IMAGE)
        ll = np.tile(np.arange(LAYERS_PER_IMAGE), n)
        labs, shp = lab[ii, ll], shape[ii, ll]
        is_stuff = np.isin(labs, list(stuff_set))
        rle = np.where(is_stuff, np.array(shapes["stuff"], dtype=object)[np.where(is_stuff, shp, 0) % 8],
                       np.array(shapes["things"], dtype=object)[np.where(is_stuff, 0, shp)])
        area = np.where(is_stuff, shapes["stuff_area"][np.where(is_stuff, shp, 0) % 8],
                        shapes["thing_area"][np.where(is_stuff, 0, shp)])
        boxes = [shapes["stuff_box"][s % 8] if st else shapes["thing_box"][s] for s, st in zip(shp, is_stuff,
                                                                                                strict=True)]
        occ = np.where(ll < LAYERS_PER_IMAGE - 1, np.clip(rng.beta(0.6, 4, len(ll)), 0, 1), 0.0)
        write_parquet_atomic(pa.table({
            "image_id": [str(i + 1) for i in ii], "layer": pa.array(ll, pa.int32()),
            "region_id": [f"{i + 1}:{LAYERS_PER_IMAGE - layer}" for i, layer in zip(ii, ll, strict=True)],
            "label": labs, "label_raw": labs, "label_id": pa.array([label_id[x] for x in labs], pa.int32()),
            "is_stuff": is_stuff, "height": pa.array(np.full(len(ll), H), pa.int32()),
            "width": pa.array(np.full(len(ll), W), pa.int32()), "rle": rle,
            "bbox": pa.array(boxes, pa.list_(pa.float64(), 4)), "area": area,
            "visible_rle": pa.nulls(len(ll), pa.string()), "visible_area": (area * (1 - occ)).astype(np.int64),
            "visible_clipped_pixels": np.zeros(len(ll), np.int64), "occlusion_rate": occ.astype(np.float32),
            "order_source": ["source:order"] * len(ll)}).cast(LAYERS), folder / "layers" / "part-00000.parquet")
        counts = {x: int((labs == x).sum()) for x, _ in labels}
        write_parquet_atomic(pa.Table.from_pylist([
            {"label_id": label_id[x], "label": x, "is_stuff": x in stuff_set,
             **dict(zip("rgb", hashlib.sha256(x.encode()).digest()[:3], strict=True)), "instances": counts[x]}
            for x in sorted(label_id)], schema=VOCABULARY), folder / "vocabulary" / "part-00000.parquet")
        write_parquet_atomic(pa.Table.from_pylist([
            {"image_id": str(i + 1), "captioner": "template@1", "prompt": None,
             "caption": f"a {lab[i, 3]} and a {lab[i, 4]}, in a scene with {lab[i, 0]}", "relations": "[]"}
            for i in img_ix], schema=CAPTIONS), folder / "captions" / "part-00000.parquet")
        n_rej = 5 + 7 * v
        write_parquet_atomic(pa.Table.from_pylist([
            {"source": "cocoa", "record_kind": "region" if j % 3 else "image", "record_key": f"r{j}",
             "image_id": str(n + j + 1), "stage": "validate" if j % 2 else "parse",
             "reason": ("empty_mask", "bad_polygon", "image_unreadable")[j % 3], "detail": "synthetic",
             "record": "{}"} for j in range(n_rej)], schema=REJECTS), folder / "rejects" / "part-00000.parquet")
        previous = None if v == 0 else (DATASET_VERSIONS[v - 1][0], lake / "datasets" / f"name={DATASET}" /
                                        f"version={DATASET_VERSIONS[v - 1][0]}")
        stats = compute_stats(folder, previous)
        write_parquet_atomic(pa.Table.from_pylist(stats, schema=STATS), folder / "stats" / "part-00000.parquet")
        n_reg = int(len(ll))
        manifest = {"name": DATASET, "version": version, "status": "published",
                    "created_at": _iso(T0 - (len(DATASET_VERSIONS) - v) * 86_400),
                    "source": f"cocoa:{files / 'annotations.json'}", "code_version": "rebuild-2",
                    "captioner": "template@1", "images_root": str(files / "images"),
                    "counts": {"annotation": {"in": n, "accepted": n, "rejected": 0},
                               "image": {"in": n + n_rej // 3, "accepted": n, "rejected": n_rej // 3},
                               "region": {"in": n_reg + n_rej - n_rej // 3, "accepted": n_reg,
                                          "rejected": n_rej - n_rej // 3}}}
        write_json_atomic(manifest, folder / "_manifest.json")
        (folder / "CARD.md").write_text(render_card(manifest, stats), encoding="utf-8")


def _part_table(items: dict, shapes: dict, lo: int, hi: int, k: int, version: str, run_seed: int):
    """EVAL_ITEMS rows of items [lo, hi) of version index `k`'s run: item-major, ROW_KINDS within an item."""
    import numpy as np
    import pyarrow as pa

    from smartmask.lake.schemas import EVAL_ITEMS

    rng = np.random.default_rng([run_seed, lo])
    n_it = hi - lo
    n = n_it * ROWS_PER_ITEM
    it = np.repeat(np.arange(lo, hi), ROWS_PER_ITEM)
    kind = np.tile(np.arange(ROWS_PER_ITEM), n_it)
    method = np.array([m for m, _ in ROW_KINDS], dtype=object)[kind]
    guidance = np.array([g for _, g in ROW_KINDS], dtype=object)[kind]
    is_sm = kind < len(GUIDANCE)
    mu = np.array([_IOU_MU[mg] for mg in ROW_KINDS])[kind] + np.where(is_sm, SM_GAIN * k, 0.0)
    mu = mu + np.array(_SIZE_MU)[items["size_bin"][it]] + items["class_effect"][items["object"][it]]
    logit = mu + 0.7 * items["difficulty"][it] + rng.normal(0, 0.45, n)
    iou = _sigmoid(logit)
    failed = rng.random(n) < 0.01
    empty = ~failed & (rng.random(n) < np.where(is_sm & (guidance == "none"), 0.03, 0.004))
    iou = np.where(empty, 0.0, iou)
    boundary_f = np.where(empty, 0.0, _sigmoid(logit - 0.35 + rng.normal(0, 0.3, n)))
    n_masks = np.where(is_sm, 4, 1).astype(np.int32)
    best = np.where(is_sm, np.clip(iou + np.abs(rng.normal(0.06, 0.05, n)) * (1 - iou), 0, 1), iou)
    diversity = np.where(is_sm, np.clip(rng.beta(2, 7, n), 0, 1), np.nan)
    plaus = np.where(is_sm & (guidance == "none"), rng.choice([0, .25, .5, .75, 1.0], n, p=[.02, .05, .13, .3, .5]),
                     np.nan)
    l2 = np.where(empty, np.nan, np.abs(rng.normal(0.002, 0.0015, n)) + np.where(method == "box", 0.002, 0.0))
    mse = l2 * np.abs(rng.normal(0.4, 0.05, n))
    psnr = np.where(empty, np.nan, 10 * np.log10(1.0 / np.maximum(mse, 1e-9)))
    clip = np.where(empty, np.nan, rng.normal(0.24 + 0.02 * (logit > 0) + np.where(is_sm, 0.002 * k, 0), 0.03, n))
    # the rank-1 mask: a pool shape near the ground truth's (in area), the nearer the better the IoU
    near = items["gt"][it] + np.round(rng.normal(0, 1, n) * 10 * (1 - iou)).astype(np.int64)
    rle = np.where(empty, shapes["empty"], np.array(shapes["things"], dtype=object)[np.clip(near, 0, N_SHAPES - 1)])
    sec_inf = np.where(is_sm, rng.gamma(4, 0.35, n), rng.gamma(3, 0.12, n))
    sec_met = rng.gamma(4, 0.02, n)

    def nul(a, mask):  # float column with NULLs where mask (or NaN)
        return pa.array(a, pa.float64(), mask=mask | np.isnan(a))

    sb_names = np.array(SIZE_BINS, dtype=object)
    cols = {
        "eval_set": pa.array([EVAL_SET] * n), "dataset_version": pa.array([DATASET_VERSION] * n),
        "config_hash": pa.array([_hex("cfg", version)] * n), "code_version": pa.array(["eval-1"] * n),
        "item_id": pa.array(items["item_id"][it]), "image_id": pa.array(items["image_id"][it]),
        "object": pa.array(np.array(CLASSES, dtype=object)[items["object"][it]]),
        "size_bin": pa.array(sb_names[items["size_bin"][it]]), "area_frac": pa.array(items["area"][it]),
        "guidance": pa.array(guidance), "method": pa.array(method),
        "model_version": pa.array(np.where(is_sm, version, "baseline:" + method.astype(str)).astype(object)),
        "status": pa.array(np.where(failed, "failed", "ok").astype(object)),
        "error": pa.array(np.where(failed, "RuntimeError: synthetic failure", "").astype(object)),
        "n_masks": pa.array(n_masks, pa.int32(), mask=failed), "empty": pa.array(empty, mask=failed),
        "mask_rle": pa.array(rle, pa.string(), mask=failed),
        "iou": nul(iou, failed), "boundary_f": nul(boundary_f, failed), "best_of_n_iou": nul(best, failed),
        "diversity": nul(diversity, failed), "plausibility": nul(plaus, failed), "l2_bg": nul(l2, failed),
        "bg_psnr": nul(psnr, failed), "bg_mse": nul(mse, failed), "clip_score": nul(clip, failed),
        "clip_backbone": pa.array([CLIP_BACKBONE] * n), "fid_extractor": pa.array([FID_EXTRACTOR] * n),
        "real_feat": pa.nulls(n, pa.list_(pa.float32())), "fake_feat": pa.nulls(n, pa.list_(pa.float32())),
        "seconds_inference": pa.array(sec_inf), "seconds_metrics": pa.array(sec_met),
    }
    return pa.table(cols).cast(EVAL_ITEMS)


# mean logit of the rank-1 IoU per (method, guidance); the model gains SM_GAIN per version
_IOU_MU = {("smartmask", "none"): -0.7, ("smartmask", "box"): 0.55, ("smartmask", "point"): -0.05,
           ("smartmask", "scribble"): 0.25, ("box", "box"): -0.3, ("box", "point"): -1.6, ("box", "scribble"): -1.0,
           ("oracle", "box"): 0.5, ("oracle", "point"): -0.2, ("oracle", "scribble"): 0.2}
_SIZE_MU = (-0.5, 0.0, 0.25)
SM_GAIN = 0.05


def _summary_sql(items_glob: str, prev_glob: str | None) -> str:
    """EVAL_SUMMARY rows of one run from its item files, in one DuckDB query: normal-approximation 95% intervals
    (mean ± 1.96·sd/√n) instead of the bootstrap, the gap's interval a fixed ±0.05, no Local-FID."""
    metrics = ", ".join(METRICS)
    hib = " ".join(f"WHEN '{m}' THEN {str(h).lower()}" for m, h in METRICS.items())
    ci = ("avg(v) AS value, avg(v) - 1.96 * coalesce(stddev_samp(v), 0) / sqrt(count(v)) AS low, "
          "avg(v) + 1.96 * coalesce(stddev_samp(v), 0) / sqrt(count(v)) AS high, count(v) AS n")
    sig = "(low > 0 OR high < 0)"
    prev = ""
    if prev_glob:
        prev = f""",
    q AS (SELECT * FROM read_parquet('{prev_glob}') WHERE status = 'ok' AND method = 'smartmask'),
    pv AS (UNPIVOT (SELECT item_id, guidance, model_version, {metrics} FROM q) ON {metrics}
           INTO NAME metric VALUE v),
    vs AS (SELECT 'paired' AS stat, a.method, a.model_version, b.model_version AS against, a.metric, a.guidance,
                  '*' AS class, '*' AS size_bin, a.v - b.v AS v
           FROM u a JOIN pv b USING (item_id, guidance, metric) WHERE a.method = 'smartmask')"""
    sel_prev = f"""
    UNION ALL SELECT stat, method, model_version, against, metric, guidance, class, size_bin, {ci}
      FROM vs GROUP BY ALL""" if prev_glob else ""
    return f"""
    WITH x AS (SELECT * FROM read_parquet('{items_glob}') WHERE status = 'ok'),
    u AS (UNPIVOT (SELECT item_id, object, size_bin, guidance, method, model_version, {metrics} FROM x)
          ON {metrics} INTO NAME metric VALUE v),
    pr AS (SELECT 'paired' AS stat, a.method, a.model_version, b.model_version AS against, a.metric, a.guidance,
                  '*' AS class, '*' AS size_bin, a.v - b.v AS v
           FROM u a JOIN u b USING (item_id, guidance, metric)
           WHERE a.method = 'smartmask' AND b.method <> 'smartmask'),
    g AS (SELECT m.guidance, m.model_version, avg(m.iou) AS mi, avg(b.iou) AS bi, avg(o.iou) AS oi, count(*) AS n
          FROM x m JOIN x b USING (item_id, guidance) JOIN x o USING (item_id, guidance)
          WHERE m.method = 'smartmask' AND b.method = 'box' AND o.method = 'oracle' GROUP BY ALL){prev},
    rows AS (
      SELECT 'aggregate' AS stat, method, model_version, NULL AS against, metric, guidance,
             coalesce(object, '*') AS class, coalesce(size_bin, '*') AS size_bin, {ci}
      FROM u GROUP BY GROUPING SETS ((method, model_version, guidance, metric),
                                     (method, model_version, guidance, metric, object),
                                     (method, model_version, guidance, metric, size_bin))
      UNION ALL SELECT stat, method, model_version, against, metric, guidance, class, size_bin, {ci}
      FROM pr GROUP BY ALL{sel_prev}
      UNION ALL SELECT 'gap', 'smartmask', model_version, 'baseline:box..baseline:oracle', 'iou_gap_closed',
             guidance, '*', '*', (mi - bi) / (oi - bi), (mi - bi) / (oi - bi) - 0.05, (mi - bi) / (oi - bi) + 0.05, n
      FROM g)
    SELECT stat, '{EVAL_SET}' AS eval_set, '{DATASET_VERSION}' AS dataset_version, model_version, method, against,
           CASE WHEN stat = 'gap' THEN 'iou_gap_closed' ELSE metric END AS metric, guidance, class, size_bin,
           value, low, high, n, CASE WHEN stat = 'paired' THEN {sig} END AS significant,
           CASE WHEN metric = 'clip_score' AND stat = 'aggregate' THEN '{CLIP_BACKBONE}' END AS extractor,
           CASE WHEN stat = 'gap' THEN true ELSE CASE metric {hib} END END AS higher_is_better
    FROM rows ORDER BY ALL"""


def _write_eval_runs(lake: Path, versions: list[str], items: dict, shapes: dict, seed: int) -> dict:
    import duckdb
    import pyarrow as pa

    from smartmask.lake.io import write_json_atomic, write_parquet_atomic
    from smartmask.lake.schemas import EVAL_SUMMARY

    n_items = len(items["item_id"])
    con = duckdb.connect(":memory:")
    con.execute("SET threads = 2")
    runs, rows = [], 0
    t_summary = 0.0
    prev_glob = None
    for k, version in enumerate(versions):
        cfg_hash = _hex("cfg", version)
        run = f"{EVAL_SET}--{version}--{cfg_hash[:8]}"
        folder = lake / "runs" / "kind=eval" / f"run={run}"
        t_start = T0 + k * 86_400 + 3_600
        write_json_atomic({"run": run, "eval_set": EVAL_SET, "eval_set_hash": _hex("set", n_items, seed),
                           "model_version": version, "config_hash": cfg_hash, "dataset": DATASET,
                           "dataset_version": DATASET_VERSION, "started_at": _iso(t_start)}, folder / "run.json")
        for p, lo in enumerate(range(0, n_items, ITEMS_PER_PART)):
            table = _part_table(items, shapes, lo, min(n_items, lo + ITEMS_PER_PART), k, version,
                                seed * 1000 + k + 1)
            write_parquet_atomic(table, folder / "items" / f"part-{p:04d}.parquet")
            rows += table.num_rows
        t = time.perf_counter()
        glob = str(folder / "items" / "*.parquet")
        summary = con.sql(_summary_sql(glob, prev_glob)).to_arrow_table()
        write_parquet_atomic(pa.Table.from_pylist(summary.to_pylist(), schema=EVAL_SUMMARY),
                             folder / "summary.parquet")
        t_summary += time.perf_counter() - t
        write_json_atomic({"status": "complete", "items": n_items, "rows": n_items * ROWS_PER_ITEM,
                           "summary_rows": summary.num_rows, "finished_at": _iso(t_start + 5_400)},
                          folder / "manifest.json")
        runs.append(run)
        prev_glob = glob
    con.close()
    return {"runs": runs, "rows": rows, "summary_s": round(t_summary, 1)}


def _write_models_and_training(lake: Path, versions: list[str], seed: int) -> None:
    import numpy as np
    import pyarrow as pa

    from smartmask.lake.io import write_parquet_atomic
    from smartmask.lake.schemas import MODELS, TRAIN_METRICS

    rng = np.random.default_rng([seed, 2])
    for k, version in enumerate(versions):
        run_id = f"train-{_hex('train', seed, k)[:8]}"
        steps = 2_000 + 500 * k
        step = np.arange(10, steps + 1, 10, dtype=np.int64)
        loss = 0.08 + 0.9 * np.exp(-step / (300 + 40 * k)) - 0.002 * k + np.abs(rng.normal(0, 0.01, len(step)))
        val = np.where(step % 500 == 0, loss + 0.01 + rng.normal(0, 0.003, len(step)), np.nan)
        n = len(step)
        metrics = pa.table({
            "run_id": pa.array([run_id] * n), "dataset": pa.array([DATASET] * n),
            "dataset_version": pa.array([DATASET_VERSION] * n), "step": step, "loss": loss,
            "val_loss": pa.array(val, mask=np.isnan(val)), "lr": 1e-4 * np.minimum(1, step / 200),
            "step_seconds": rng.gamma(20, 0.01, n), "samples_per_s": rng.normal(180, 6, n),
            "world_size": pa.array(np.full(n, 2), pa.int32())}).cast(TRAIN_METRICS)
        write_parquet_atomic(metrics, lake / "runs" / "kind=train" / f"run={run_id}" / "metrics" / "part-0.parquet")
        write_parquet_atomic(pa.Table.from_pylist([{
            "preset": "tiny", "dataset": DATASET, "dataset_version": DATASET_VERSION, "run_id": run_id,
            "steps": steps, "final_loss": float(loss[-1]), "val_loss": float(val[~np.isnan(val)][-1]),
            "created_at": _iso(T0 + k * 86_400), "code_version": "bench-dashboard",
            "path": str(lake / "models" / f"version={version}")}], schema=MODELS),
            lake / "models" / f"version={version}" / "model.parquet")


def _write_bulk_runs(lake: Path, files: Path, versions: list[str], items: dict, seed: int) -> None:
    """BULK_RUNS runs of the newest versions, BULK_ROWS rows each, over (image, object) pairs of the eval set (so
    the gallery finds bulk outputs of its images); each inserted row's output PNG is on disk (hard links to a pool)."""
    import numpy as np
    import pyarrow as pa

    from smartmask.lake.io import write_parquet_atomic
    from smartmask.lake.schemas import INSERT_ITEMS

    rng = np.random.default_rng([seed, 3])
    outputs = []
    for i in range(N_PICTURES // 2):
        path = files / "pool" / f"output-{i:02d}.png"
        _picture(rng).save(path, "PNG")
        outputs.append(path)
    stages = ["decode", "layout", "suggest", "insert", "write"]
    reasons = {"decode": "image_unreadable", "layout": "no_layout", "suggest": "empty_mask", "insert": "insert_failed",
               "write": "write_failed"}
    n_items = len(items["item_id"])
    for r, version in enumerate(versions[-BULK_RUNS:]):
        run = f"bulk-{_hex('bulk', seed, r)[:8]}"
        folder = lake / "runs" / "kind=bulk_insert" / f"run={run}"
        n = min(BULK_ROWS, n_items)
        sel = (np.arange(n) + r * n) % n_items
        rejected = rng.random(n) < 0.04
        stage = np.array(stages, dtype=object)[rng.integers(0, len(stages), n)]
        t0 = T0 + (len(versions) - BULK_RUNS + r) * 86_400 + 7_200
        created = t0 + np.cumsum(rng.gamma(2, 0.6, n))
        rows, links = [], []
        for j, i in enumerate(sel):
            rej = bool(rejected[j])
            obj = CLASSES[items["object"][i]]
            x, y, w, h = 40, 30, 200, 150
            rows.append({
                "item_key": _hex("bulk", r, j) * 4, "line": j, "item_id": f"b{j:05d}",
                "image_uri": str(files / "images" / f"{items['image'][i] + 1:012d}.jpg"), "object": obj,
                "context": "a photo", "guidance": json.dumps({"kind": "box", "bbox": [x, y, x + w, y + h]}),
                "layout_from": None, "n_suggestions": 4, "seed": j, "model_version": version,
                "config_hash": _hex("bulkcfg", r), "inpainter": "synthetic", "segmenter": "synthetic",
                "image_sha256": _sha(int(items["image"][i])), "width": W, "height": H,
                "chosen_rank": None if rej else 0,
                "scores": None if rej else sorted(rng.uniform(0.2, 0.95, 4).round(4).tolist(), reverse=True),
                "mask_rle": None, "mask_bbox": None if rej else [x, y, x + w, y + h],
                "mask_area": None if rej else int(rng.integers(500, 30_000)), "dilated_area": None,
                "dilated_rle": None, "changed_pixels": None if rej else int(rng.integers(500, 30_000)),
                "changed_outside": None if rej else 0,
                "inserted_path": None if rej else f"outputs/b{j:05d}.png",
                "mask_path": None if rej else f"outputs/b{j:05d}.mask.png", "suggestion_paths": None,
                "t_decode_s": float(rng.gamma(4, 0.005)), "t_layout_s": float(rng.gamma(4, 0.02)),
                "t_suggest_s": float(rng.gamma(4, 0.3)), "t_insert_s": float(rng.gamma(4, 0.05)),
                "t_write_s": float(rng.gamma(4, 0.004)), "status": "rejected" if rej else "inserted",
                "reject_stage": stage[j] if rej else None, "reject_reason": reasons[stage[j]] if rej else None,
                "reject_detail": "synthetic" if rej else None, "created_at": _iso(created[j]),
                "code_version": "bench-dashboard"})
            if not rej:
                links.append(folder / "outputs" / f"b{j:05d}.png")
        _link_pool(outputs, links)
        write_parquet_atomic(pa.Table.from_pylist(rows, schema=INSERT_ITEMS), folder / "items" / "part-0.parquet")


def _write_bench_rows(lake: Path) -> int:
    """The records of bench/results/*.json as `bench` rows (what `record(..., lake=)` writes)."""
    from _results import _lake_table

    from smartmask.lake.io import write_parquet_atomic

    n = 0
    for p in sorted((HERE / "results").glob("*.json")):
        write_parquet_atomic(_lake_table(json.loads(p.read_text())),
                             lake / "runs" / "kind=bench" / f"run={p.stem}" / "items.parquet")
        n += 1
    return n


def generate(work: Path, rows: int, seed: int) -> dict:
    """The synthetic lake for `rows` eval rows (cached in `work` by rows, seed and GEN_VERSION); the dataset's
    image files beside it (`<key>-files/`), as a source folder sits outside the lake."""
    n_items = max(len(ITEM_LAYERS), rows // (N_VERSIONS * ROWS_PER_ITEM))
    key = f"lake-{rows}-seed{seed}-{GEN_VERSION}"
    lake, files, info = work / key, work / f"{key}-files", work / f"{key}.json"
    if info.exists() and lake.exists():
        return json.loads(info.read_text()) | {"cached": True}
    shutil.rmtree(lake, ignore_errors=True)
    shutil.rmtree(files, ignore_errors=True)
    t = time.perf_counter()
    shapes = _shapes(seed)
    items = _items(n_items, seed, shapes)
    versions = [_hex("model", seed, k) for k in range(N_VERSIONS)]
    _write_dataset(lake, files, items, shapes, seed)
    _write_models_and_training(lake, versions, seed)
    ev = _write_eval_runs(lake, versions, items, shapes, seed)
    _write_bulk_runs(lake, files, versions, items, seed)
    n_bench = _write_bench_rows(lake)
    stats = {(st.st_dev, st.st_ino): st.st_size for p in (*lake.rglob("*"), *files.rglob("*")) if p.is_file()
             for st in [p.stat()]}  # hard links once
    size = sum(stats.values())
    d = {"lake": str(lake), "versions": versions, "eval_rows": ev["rows"], "eval_items": n_items,
         "eval_runs": len(ev["runs"]), "images": int(items["image"].max()) + 1, "bench_rows": n_bench,
         "disk_mb": round(size / 1e6, 1), "generate_s": round(time.perf_counter() - t, 1),
         "summary_s": ev["summary_s"]}
    info.write_text(json.dumps(d, indent=2))
    return d | {"cached": False}


# ------------------------------------------------------------------------------------------------- timing


def _queries(gallery: int = 24) -> list[tuple[str, str, dict]]:
    """(file name, SQL, bound parameters) of every panel query the build runs: every dashboards/sql/*.sql file, with
    the `$name` parameters bound as `dashboards.build.collect` binds them (training curves at TRAIN_POINTS points,
    bulk throughput at THROUGHPUT_POINTS, SAMPLES_PER_RUN bulk samples per run, `gallery` gallery entries)."""
    import re

    import dashboards.build as b

    base = {"points": getattr(b, "TRAIN_POINTS", 400), "per_run": getattr(b, "SAMPLES_PER_RUN", 6),
            "gallery": gallery}
    out = []
    for p in sorted((REPO / "dashboards" / "sql").glob("*.sql")):
        text = p.read_text(encoding="utf-8")
        params = dict(base, points=getattr(b, "THROUGHPUT_POINTS", 120)) if p.stem == "bulk_throughput" else base
        used = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))
        out.append((p.name, text, {k: v for k, v in params.items() if k in used}))
    return out


def time_queries(lake: Path, queries: list[tuple[str, str, dict]]) -> tuple[float, dict[str, float], float, int]:
    """B: connect + every query with its result fetched (an Arrow table). (total s, per-query s, connect s,
    DuckDB threads)."""
    from smartmask.lake.query import connect

    t0 = time.perf_counter()
    con = connect(lake)
    t_connect = time.perf_counter() - t0
    per = {}
    try:
        threads = int(con.sql("SELECT current_setting('threads')").fetchall()[0][0])
        for name, sql, params in queries:
            t = time.perf_counter()
            con.sql(sql, params=params or None).to_arrow_table()
            per[name] = time.perf_counter() - t
    finally:
        con.close()
    return time.perf_counter() - t0, per, t_connect, threads


def time_build(lake: Path, out: Path) -> tuple[float, object]:
    from dashboards.build import build_dashboard

    t0 = time.perf_counter()
    result = build_dashboard(lake, out)
    return time.perf_counter() - t0, result


def breakdown(lake: Path, out: Path) -> dict | None:
    """One more build, step by step (not part of the figures): `collect` (its per-query seconds and the pictures:
    gallery thumbnails, bulk samples, catalog and cards), `render_page`, the write; and what the page's bytes are
    made of. None when dashboards.build lacks those functions."""
    import dashboards.build as b

    if not all(hasattr(b, f) for f in ("collect", "render_page", "write_atomic")):
        return None
    t0 = time.perf_counter()
    data, timings = b.collect(lake)
    t1 = time.perf_counter()
    html = b.render_page(data)
    t2 = time.perf_counter()
    b.write_atomic(out, html)
    t3 = time.perf_counter()

    def mb(x) -> float:
        return round(len(json.dumps(x, separators=(",", ":"), default=str).encode()) / 1e6, 3)

    import plotly.offline

    parts = {"total": round(len(html.encode()) / 1e6, 3),
             "plotly_js": round(len(plotly.offline.get_plotlyjs().encode()) / 1e6, 3),
             "data_json": mb(data)} | {f"data.{k}": mb(v) for k, v in data.items() if k != "tables"}
    parts |= {f"data.tables.{k}": mb(v) for k, v in sorted((data.get("tables") or {}).items(),
                                                            key=lambda kv: -len(json.dumps(kv[1], default=str)))[:6]}
    sql_s = sum(v for k, v in timings.items() if k != "pictures")
    return {"collect_s": round(t1 - t0, 3), "sql_in_build_s": round(sql_s, 3),
            "pictures_s": round(timings.get("pictures", 0.0), 3),
            "collect_other_s": round(t1 - t0 - sql_s - timings.get("pictures", 0.0), 3),
            "render_s": round(t2 - t1, 3), "write_s": round(t3 - t2, 3),
            "steps_s": {k: round(v, 4) for k, v in timings.items()}, "html_parts_mb": parts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="eval rows in the lake (10 versions x 10 rows/item)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds of build, then queries")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for the lake and the page (kept; default: temporary)")
    ap.add_argument("--lake", default=None, help="lake to record the bench row in (default: only bench/results)")
    ap.add_argument("--no-record", action="store_true", help="print the figures, write no record (trial runs)")
    ap.add_argument("--smoke", action="store_true", help="a tiny lake (5,000 rows), one round; writes no record")
    a = ap.parse_args()
    if a.smoke:
        a.rows, a.rounds = 5_000, 1

    from _results import record, recording, work_folder

    with work_folder(a.work, "bench-dashboard-") as work:
        row = run(a, work)
    if recording(a.smoke, a.no_record):
        record("bench_dashboard", row, a.lake)


def run(a, work: Path) -> dict:
    env = generate(work, a.rows, a.seed)
    lake = Path(env["lake"])
    how = "reused (generated earlier)" if env["cached"] else "generated"
    print(f"lake {how}: {env['eval_rows']:,} eval rows ({env['eval_items']:,} items x {ROWS_PER_ITEM} rows x "
          f"{env['eval_runs']} runs/model versions), {env['images']:,} images, {env['disk_mb']} MB on disk with the "
          f"image files; generation {env['generate_s']} s (of which summaries {env['summary_s']} s; not timed)",
          flush=True)
    queries = _queries()
    if not queries:
        raise SystemExit(f"no dashboards/sql/*.sql under {REPO}: nothing to time")
    out = work / "dashboard.html"
    # warm-up, untimed: imports (plotly), the page cache of the lake's files
    t_warm, result = time_build(lake, out)
    time_queries(lake, queries)
    print(f"{len(queries)} panel queries; warm-up build {t_warm:.2f} s (not counted)", flush=True)
    load_before = load()
    builds, raws, per_rounds, connects = [], [], [], []
    threads = None
    for r in range(a.rounds):
        tb, result = time_build(lake, out)
        tq, per, tc, threads = time_queries(lake, queries)
        builds.append(tb)
        raws.append(tq)
        per_rounds.append(per)
        connects.append(tc)
        print(f"  round {r + 1}/{a.rounds}: build {tb:.2f} s, queries {tq:.2f} s (connect {tc:.2f} s) -> "
              f"{tb / tq:.2f}x   (load {load()[0]})", flush=True)
    load_after = load()
    steps = breakdown(lake, work / "dashboard-breakdown.html")
    build_s, raw_s = statistics.median(builds), statistics.median(raws)
    # the ratio of each round's A to its B (run back to back, so this VM's drift cancels), the median of those
    ratios = [tb / tq for tb, tq in zip(builds, raws, strict=True)]
    ratio = statistics.median(ratios)
    html_mb = out.stat().st_size / 1e6
    per_query = {name: round(statistics.median(p[name] for p in per_rounds), 4) for name, *_ in queries}
    ok_build, ok_ratio, ok_html = build_s <= BUILD_TARGET_S, ratio <= RATIO_TARGET, html_mb < HTML_TARGET_MB

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"dashboard build over {env['eval_rows']:,} eval rows, {N_VERSIONS} model versions (median of "
          f"{a.rounds}, DuckDB {threads} threads):")
    print(f"  build {build_s:.2f} s          (target <= {BUILD_TARGET_S:g} s: {verdict(ok_build)})")
    print(f"  DuckDB queries alone {raw_s:.2f} s (connect {statistics.median(connects):.2f} s + "
          f"{len(queries)} queries) -> build / queries {ratio:.2f}x (median of the rounds' ratios; ratio of the "
          f"medians {build_s / raw_s:.2f}x)   (target <= {RATIO_TARGET:g}x: {verdict(ok_ratio)})")
    print(f"  HTML {html_mb:.2f} MB        (target < {HTML_TARGET_MB:g} MB: {verdict(ok_html)})")
    print(f"  load {load_before} -> {load_after}")
    print("  slowest queries (B, median): " + ", ".join(f"{n} {s:.3f} s" for n, s in
                                                      sorted(per_query.items(), key=lambda kv: -kv[1])[:5]))
    if steps:
        print(f"  one more build, step by step: collect {steps['collect_s']:.2f} s (SQL {steps['sql_in_build_s']:.2f}"
              f" s, pictures {steps['pictures_s']:.2f} s, other {steps['collect_other_s']:.2f} s), render "
              f"{steps['render_s']:.2f} s, write {steps['write_s']:.2f} s; page: plotly.js "
              f"{steps['html_parts_mb']['plotly_js']:.2f} MB, data {steps['html_parts_mb']['data_json']:.2f} MB "
              f"(gallery {steps['html_parts_mb'].get('data.gallery', 0):.2f} MB)")
    return {"build_s": round(build_s, 3), "ratio": round(ratio, 3), "html_mb": round(html_mb, 3),
            "queries_s": round(raw_s, 3), "build_target_s": BUILD_TARGET_S, "ratio_target": RATIO_TARGET,
            "html_target_mb": HTML_TARGET_MB, "build_met": ok_build, "ratio_met": ok_ratio, "html_met": ok_html,
            "rounds": a.rounds, "builds_s": [round(x, 3) for x in builds],
            "queries_rounds_s": [round(x, 3) for x in raws], "ratios": [round(x, 3) for x in ratios],
            "ratio_of_medians": round(build_s / raw_s, 3),
            "connect_s": round(statistics.median(connects), 3), "per_query_s": per_query,
            "duckdb_threads": threads, "warmup_build_s": round(t_warm, 3), "load_before": load_before,
            "load_after": load_after, "build_result": _jsonable(result), "build_breakdown": steps,
            "dashboards_sha256": _tree_hash(REPO / "dashboards"),
            "lake": {k: v for k, v in env.items() if k not in ("lake", "versions", "cached")} | {
                "model_versions": N_VERSIONS, "rows_per_item": ROWS_PER_ITEM, "seed": a.seed,
                "generator": GEN_VERSION, "features": "NULL (real_feat, fake_feat)"}}


def _tree_hash(folder: Path) -> str:
    """16 hex digits over the dashboard code measured (its .py, .sql, .js, .css, .html files): the package may not be
    committed yet, so the record's code_version alone would not say which it was."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".sql", ".js", ".css", ".html"):
            h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _jsonable(x):
    try:
        return json.loads(json.dumps(x, default=str))
    except (TypeError, ValueError):
        return str(x)


if __name__ == "__main__":
    main()
