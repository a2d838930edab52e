"""Benchmark: evaluation metric throughput (items/s, no model inference) and the metrics' share of evaluation time.

    ./dev sh python bench/bench_eval.py [--part throughput|share|all] [--items 400] [--share-items N] [--work DIR]

Both parts run on the demo's world (`synth` 200 scenes, seed 0, default SynthConfig: 640x480, ~22 layers per
image), rebuilt as dataset "synth" into a lake under `--work` (default: a temporary folder removed at exit; a given
folder is kept and reused, so a second run skips generation), with an untrained tiny-preset SmartMask registered in
it (the same compute as a trained one). One torch/BLAS thread, like one evaluation actor of the demo on 2 cores.
The offline Local-FID extractor `random-conv:0` and CLIP `tiny-random:0` (what the demo's `auto` resolves to
without Inception/CLIP weights on disk) score every output.

1. throughput: `scoring.score_item` over `--items` eval items (default 400, so that the whole benchmark takes
   about 10 minutes on 2 cores at ~1.2 items/s; the recorded run used 1000). The eval set is every held-out thing
   object of the world (205 in the demo's world: its 10 val images); with fewer than `--items` the items are cycled
   with distinct item ids (`<id>#cN`), which the output says. The outputs are prepared outside the timed region,
   once per distinct item, as the demo scores them: under each of the 4 guidance types SmartMask with 4 masks
   (jittered copies of the ground truth: no model), and the box and oracle baselines under box/point/scribble,
   each rank-1 mask inserted with the synthetic inpainter through `SmartMaskPipeline.insert` -> 10 rows per item.
   The figure of merit is items/s of `score_item` over one pass (`--rounds`: more passes), timed in 10 chunks
   (each chunk's rate and load average are recorded). For comparison, from the same pass: the time spent inside
   the Local-FID extractor and CLIP (timing wrappers), and the items/s without it ("mask and background metrics,
   crops, RLE": what a run without the two networks would take).
2. share: the demo's evaluation (EvalConfig: n_suggestions 4, steps 10, DPM, baselines box + oracle, all 4 guidance
   types, synthetic inpainter) on the world's default eval set (`eval_set.ensure_default`: 20 items), run in-process
   through `Evaluator.evaluate` on every item (`--share-items N`: the first N); metrics share = sum of rows'
   `seconds_metrics` / (that + sum of `seconds_inference`). Target: < 10%. One warm-up item runs first, untimed.

The load average (`os.getloadavg`) before and after each part goes into the record: this 2-core machine is often
shared. `--smoke` (alias `--cpu-smoke`): a tiny world and a few items, checks the code path, writes no record.
A JSON record goes to bench/results/ (and to <lake>/runs/kind=bench/ with --lake).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

SHARE_TARGET = 0.10  # metrics < 10% of evaluation time
EXTRACTOR, CLIP = "random-conv:0", "tiny-random:0"
DEMO_SETTINGS = {"n_suggestions": 4, "steps": 10}  # flows/demo.py DEMO_EVAL
ALL_ITEMS = 100_000  # the throughput eval set: every held-out thing object
JITTER = 0.06  # the SmartMask stand-in's 4 masks: the ground truth shifted by up to 6% of its box's side


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------------------- setup


def setup(work: Path, scenes: int, seed: int, small: bool) -> dict:
    """The demo's world (cached per synth code), rebuilt into `work/lake` as "synth", with a registered untrained
    tiny SmartMask. Returns {lake, world, version, model}."""
    from smartmask.config import RebuildConfig, SynthConfig
    from smartmask.rebuild import rebuild
    from smartmask.synth import generate

    code = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((REPO / "smartmask" / "synth").glob("*.py"))))
    synth_cfg = SynthConfig.small() if small else SynthConfig()
    key = f"synth-{scenes}-seed{seed}-{'small' if small else 'default'}-{code.hexdigest()[:8]}"
    world, lake = work / key, work / f"lake-{key}"
    info = work / f"info-{key}.json"
    if info.exists():
        return json.loads(info.read_text())
    t = time.perf_counter()
    if not (world / "annotations.json").exists():
        generate(world, scenes, seed, synth_cfg, workers=min(2, os.cpu_count() or 1))
    m = rebuild(f"cocoa:{world / 'annotations.json'}", world / "images", "synth", lake, RebuildConfig(workers=1))
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import register_tiny_smartmask

    model_work = work / f"model-{key}"
    model_work.mkdir(parents=True, exist_ok=True)
    mv = register_tiny_smartmask(lake, m["version"], model_work, "bench-eval")
    d = {"lake": str(lake), "world": str(world), "version": m["version"], "model": mv}
    info.write_text(json.dumps(d))
    print(f"world {key}: generated, rebuilt (synth@{m['version']}) and a tiny model {mv} registered in "
          f"{time.perf_counter() - t:.1f} s (not timed)", flush=True)
    return d


# ------------------------------------------------------------------------------------------------- part 1


def jittered(gt, n: int, rng):
    """`n` copies of the bool mask `gt`, each shifted by a random offset of up to JITTER of its box's side."""
    import numpy as np

    from smartmask.boxes import mask_box

    x0, y0, x1, y1 = mask_box(gt)
    r = max(1, round(JITTER * max(x1 - x0, y1 - y0)))
    H, W = gt.shape
    out = []
    for _ in range(n):
        dx, dy = (int(v) for v in rng.integers(-r, r + 1, size=2))
        m = np.zeros_like(gt)
        m[max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = gt[max(-dy, 0):H - max(dy, 0),
                                                                   max(-dx, 0):W - max(dx, 0)]
        out.append(m)
    return out


def prepare(env: dict, eval_set, model_version: str) -> list[tuple]:
    """Per distinct item: (item, image, scene, outputs), as the demo's methods would hand them to `score_item`."""
    import numpy as np

    from smartmask import masks
    from smartmask.boxes import mask_box
    from smartmask.evaluation.config import GUIDANCE, Baseline
    from smartmask.evaluation.evaluator import guidance_inputs
    from smartmask.evaluation.scoring import Output
    from smartmask.inference.images import load_image
    from smartmask.inference.pipeline import SmartMaskPipeline

    lake = Path(env["lake"])
    pipe = SmartMaskPipeline.from_lake(lake, with_model=False, inpainter="synthetic")
    layouts = SmartMaskPipeline.from_lake(lake, model_version, layout_only=True)  # S_I for plausibility
    baselines = [Baseline.parse(b) for b in ("box", "oracle")]
    out = []
    for item in eval_set.items:
        image = np.asarray(load_image(item["image_uri"]))
        H, W = image.shape[:2]
        scene = layouts.layout(layout_from=item["layout_from"])
        gt = masks.decode({"size": [H, W], "counts": item["gt_rle"]}).astype(bool)
        obj, ctx, seed = item["object"], item["context"], int(item["seed"])
        rng = np.random.default_rng(seed)

        def inserted(mask, source, obj=obj, ctx=ctx, image=image, seed=seed):
            return pipe.insert(obj, ctx, image=image, mask=mask, mask_source=source, seed=seed).image \
                if mask.any() else None

        outputs = []
        for g in GUIDANCE:
            ms = jittered(gt, 4, rng)
            outputs.append(Output("smartmask", model_version, g, ms, inserted(ms[0], f"smartmask:{model_version}"),
                                  0.0))
            if g == "none":
                continue
            _, coarse = guidance_inputs(item, g)
            for b in baselines:
                mask = coarse if b.name == "box" else eval_set.shapes.fit_to_box(obj, mask_box(coarse), H, W)
                if mask is None:
                    outputs.append(Output(b.name, b.label, g, [], None, 0.0, error="no class shape"))
                    continue
                outputs.append(Output(b.name, b.label, g, [mask], inserted(mask, b.label), 0.0))
        out.append((item, image, scene, outputs))
    return out


class _Timed:
    """Wraps the extractor / CLIP scorer and adds up the seconds spent in them."""

    def __init__(self, inner, method: str):
        self.inner, self.method, self.seconds = inner, method, 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _timed(self, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - t0

    def __call__(self, crops):
        return self._timed(self.inner, crops)

    def score(self, crops, texts):
        return self._timed(self.inner.score, crops, texts)


def score_pass(work_items: list[tuple], extractor, clip) -> tuple[float, int]:
    from smartmask.evaluation.scoring import score_item

    rows = 0
    t0 = time.perf_counter()
    for item, image, scene, outputs in work_items:
        rows += len(score_item(item, image, outputs, extractor=extractor, clip=clip, scene=scene))
    return time.perf_counter() - t0, rows


def part_throughput(a, env: dict) -> dict:
    from smartmask.evaluation.clip_score import ClipScorer
    from smartmask.evaluation.eval_set import EvalSetConfig, build_eval_set
    from smartmask.evaluation.fid import load_extractor

    lake = Path(env["lake"])
    t = time.perf_counter()
    es = build_eval_set(lake, "bench-eval-all", "synth", env["version"],
                        EvalSetConfig(n_items=ALL_ITEMS, per_image=ALL_ITEMS))
    es.items[:] = es.items[:a.items]  # prepare no more distinct items than are scored
    distinct = prepare(env, es, env["model"])
    t_prep = time.perf_counter() - t
    cycles = -(-a.items // len(distinct))
    work_items = []
    for i in range(a.items):
        item, image, scene, outputs = distinct[i % len(distinct)]
        c = i // len(distinct)
        work_items.append((item if c == 0 else item | {"item_id": f"{item['item_id']}#c{c}"}, image, scene, outputs))
    n_outputs = sum(len(o) for *_, o in distinct) / len(distinct)
    n_inserted = sum(sum(x.image is not None for x in o) for *_, o in distinct) / len(distinct)
    how = (f"{len(distinct)} distinct held-out items (all of the world's) cycled {cycles}x with distinct item ids"
           if len(distinct) < a.items else f"{a.items} distinct held-out items")
    print(f"throughput: {a.items} items ({how}), {n_outputs:.1f} outputs ({n_inserted:.1f} inserted) per item; "
          f"outputs prepared in {t_prep:.1f} s (not timed)", flush=True)

    extractor, clip = _Timed(load_extractor(EXTRACTOR), "extractor"), _Timed(ClipScorer.load(CLIP), "clip")
    score_pass(work_items[:min(10, len(work_items))], extractor, clip)  # warm-up: torch's first calls, page-in
    extractor.seconds = clip.seconds = 0.0
    load_before = load()
    chunk = max(1, a.items // 10)
    chunks, total, rows = [], 0.0, 0
    for r in range(a.rounds):
        before = total
        for i in range(0, a.items, chunk):
            s, n = score_pass(work_items[i:i + chunk], extractor, clip)
            total, rows = total + s, rows + n
            chunks.append({"items": min(chunk, a.items - i), "s": round(s, 3), "load1": load()[0]})
        print(f"  pass {r + 1}/{a.rounds}: {a.items / (total - before):.2f} items/s (load {load()[0]})", flush=True)
    load_after = load()
    n_items = a.items * a.rounds
    ips = n_items / total
    net = extractor.seconds + clip.seconds
    ips_no_net = n_items / (total - net)
    rates = [c["items"] / c["s"] for c in chunks]
    print(f"metric throughput (score_item, 1 thread, {EXTRACTOR} + CLIP {CLIP}): {ips:.2f} items/s, "
          f"{rows / total:.1f} rows/s ({rows} rows, {total:.1f} s; per {chunk}-item chunk {min(rates):.2f}-"
          f"{max(rates):.2f} items/s; load {load_before[0]} -> {load_after[0]})")
    print(f"  of that time: Local-FID extractor {extractor.seconds / total:.0%}, CLIP {clip.seconds / total:.0%}, "
          f"the rest (mask and background metrics, crops, RLE) {1 - net / total:.0%} -> without the two networks "
          f"{ips_no_net:.2f} items/s (full / without = {ips / ips_no_net:.2f}x)")
    return {"items_per_s": round(ips, 3), "rows_per_s": round(rows / total, 2),
            "no_networks_items_per_s": round(ips_no_net, 3), "full_over_no_networks": round(ips / ips_no_net, 3),
            "throughput": {
                "items": a.items, "rounds": a.rounds, "distinct_items": len(distinct), "cycles": cycles,
                "rows": rows, "seconds": round(total, 2), "outputs_per_item": round(n_outputs, 2),
                "inserted_per_item": round(n_inserted, 2), "chunks": chunks,
                "extractor_share": round(extractor.seconds / total, 4), "clip_share": round(clip.seconds / total, 4),
                "prepare_s": round(t_prep, 1), "image_hw": list(distinct[0][1].shape[:2]),
                "smartmask_masks": f"4 jittered copies of the ground truth (shift <= {JITTER:.0%} of the box side)",
                "extractor": EXTRACTOR, "clip": CLIP, "threads": 1, "load_before": load_before,
                "load_after": load_after}}


# ------------------------------------------------------------------------------------------------- part 2


def part_share(a, env: dict) -> dict:
    from smartmask.evaluation.config import EvalConfig
    from smartmask.evaluation.eval_set import ensure_default
    from smartmask.evaluation.evaluator import Evaluator

    lake = Path(env["lake"])
    es = ensure_default(lake, "synth", env["version"])
    items = es.items[:a.share_items] if a.share_items else es.items
    cfg = EvalConfig(model_version=env["model"], inpainter="synthetic", fid_extractor=EXTRACTOR, clip=CLIP,
                     **({"n_suggestions": 2, "steps": 2} if a.smoke else DEMO_SETTINGS))
    ev = Evaluator(lake, es, cfg)
    t = time.perf_counter()
    ev.evaluate(items[0])  # warm-up (untimed): first torch calls, caches
    t_warm = time.perf_counter() - t
    load_before = load()
    metrics = inference = 0.0
    per_method: dict[str, float] = {}
    rows = failed = 0
    t0 = time.perf_counter()
    for item in items:
        for r in ev.evaluate(item):
            rows += 1
            failed += r["status"] != "ok"
            metrics += r["seconds_metrics"]
            inference += r["seconds_inference"]
            per_method[r["method"]] = per_method.get(r["method"], 0.0) + r["seconds_inference"]
    wall = time.perf_counter() - t0
    load_after = load()
    share = metrics / (metrics + inference)
    met = share < SHARE_TARGET
    print(f"share: {len(items)} items of {es.name} ({rows} rows, {failed} failed), n_suggestions "
          f"{cfg.n_suggestions}, {cfg.steps} steps, 1 thread; warm-up item {t_warm:.1f} s (not counted)")
    print(f"  inference {inference:.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in per_method.items())
          + f"), metrics {metrics:.1f} s, wall {wall:.1f} s ({wall - metrics - inference:.1f} s neither: image "
          f"load, layout)   (load {load_before[0]} -> {load_after[0]})")
    print(f"metrics share of evaluation time: {share:.1%}   (target < {SHARE_TARGET:.0%}: "
          f"{'met' if met else 'NOT met'})")
    return {"metrics_share": round(share, 4), "share_target": SHARE_TARGET, "share_met": met,
            "share": {"eval_set": es.name, "items": len(items), "rows": rows, "failed_rows": failed,
                      "n_suggestions": cfg.n_suggestions, "steps": cfg.steps, "baselines": list(cfg.baselines),
                      "guidance": list(cfg.guidance), "inference_s": round(inference, 2),
                      "inference_s_by_method": {k: round(v, 2) for k, v in per_method.items()},
                      "metrics_s": round(metrics, 2), "wall_s": round(wall, 2), "warmup_item_s": round(t_warm, 2),
                      "metrics_s_per_item": round(metrics / len(items), 4),
                      "inference_s_per_item": round(inference / len(items), 4),
                      "extractor": EXTRACTOR, "clip": CLIP, "threads": 1, "load_before": load_before,
                      "load_after": load_after}}


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("throughput", "share", "all"), default="all")
    ap.add_argument("--items", type=int, default=400, help="eval items per timed throughput pass")
    ap.add_argument("--rounds", type=int, default=1, help="timed passes over the items (throughput)")
    ap.add_argument("--share-items", type=int, default=None, help="the first N default-set items (default: all)")
    ap.add_argument("--scenes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for the world, lake and model (kept; default: temporary)")
    ap.add_argument("--lake", default=None, help="lake to record the bench row in (default: only bench/results)")
    ap.add_argument("--no-record", action="store_true", help="print the figures, write no record (trial runs)")
    ap.add_argument("--smoke", "--cpu-smoke", dest="smoke", action="store_true",
                    help="a tiny world and a few items; writes no record")
    a = ap.parse_args()
    if a.smoke:
        a.scenes, a.items, a.rounds, a.share_items = 30, 12, 1, 2

    import torch

    torch.set_num_threads(1)
    from _results import record, recording, work_folder

    with work_folder(a.work, "bench-eval-") as work:
        env = setup(work, a.scenes, a.seed, small=a.smoke)
        row: dict = {}
        if a.part in ("throughput", "all"):
            row |= part_throughput(a, env)
        if a.part in ("share", "all"):
            row |= part_share(a, env)
    if not recording(a.smoke, a.no_record):
        return
    # Headline figures first: the renderer's generic table shows a benchmark's first numeric fields.
    order = ["items_per_s", "metrics_share", "rows_per_s", "no_networks_items_per_s"]
    row = {k: row[k] for k in order if k in row} | {k: v for k, v in row.items() if k not in order}
    row |= {"part": a.part, "world": f"synth {a.scenes} scenes seed {a.seed}, SynthConfig()",
            "dataset_version": env["version"], "model": "untrained tiny preset (registered)"}
    record("bench_eval", row, a.lake)


if __name__ == "__main__":
    main()
