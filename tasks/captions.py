"""Prefect task for the caption stage of `rebuild_dataset`: one task for the whole job (fan-out is Ray Data's).

The template captioner runs in-process (thousands of images/s). A model captioner runs as Ray Data actors
(`map_batches` over a callable class that loads the model once per actor; one GPU per actor when the cluster has
GPUs); the flow starts Ray around this task. Each batch that comes back is written to the caption cache at once,
so a killed job loses at most the batches in flight.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from smartmask.captioning.stage import cache_dir, read_cache, write_cache_part
from smartmask.lake.io import rows_to_table, write_json_atomic, write_parquet_atomic
from smartmask.lake.schemas import CAPTIONS
from smartmask.publish import CAPTION_FAILURES
from smartmask.rebuild import caption_template
from smartmask.rebuild_plan import Plan


def _model_captions(plan: Plan) -> dict:
    import ray

    from smartmask.captioning.instructblip import InstructBlipCaptioner

    cfg, staging = plan.config, plan.staging
    images = pq.read_table(staging / "images", columns=["image_id", "uri", "sha256", "n_layers"]).to_pylist()
    cdir = cache_dir(plan.lake, plan.captioner_id, cfg.caption_prompt)
    cached = read_cache(cdir)
    todo = [{"image_id": r["image_id"], "uri": r["uri"]} for r in images if r["sha256"] not in cached]
    sha = {r["image_id"]: r["sha256"] for r in images}
    failures: dict[str, tuple[str, str]] = {}
    log = get_run_logger()
    log.info("captioning %d images with %s (%d cached)", len(todo), plan.captioner_id, len(images) - len(todo))
    if todo:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        ds = ray.data.from_items(todo).map_batches(
            InstructBlipCaptioner, fn_constructor_kwargs={"model": cfg.captioner.split(":", 1)[1],
                                                          "prompt": cfg.caption_prompt},
            batch_size=cfg.caption_batch_size, compute=ray.data.ActorPoolStrategy(size=cfg.caption_actors),
            num_gpus=gpus)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            ok = []
            for iid, cap, reason, detail in zip(batch["image_id"], batch["caption"], batch["error_reason"],
                                                batch["error_detail"], strict=True):
                if reason:
                    failures[str(iid)] = (str(reason), str(detail))
                else:
                    ok.append((sha[str(iid)], str(cap)))
                    cached[sha[str(iid)]] = str(cap)
            write_cache_part(cdir, plan.captioner_id, cfg.caption_prompt, ok)
    rows = [{"image_id": r["image_id"], "captioner": plan.captioner_id, "prompt": cfg.caption_prompt,
             "caption": cached[r["sha256"]], "relations": None} for r in images if r["image_id"] not in failures]
    write_parquet_atomic(rows_to_table(rows, CAPTIONS), staging / "captions" / "part-00000.parquet")
    n_layers = {r["image_id"]: r["n_layers"] for r in images}
    fail_rows = [{"image_id": k, "reason": v[0], "detail": v[1], "n_layers": n_layers[k]} for k, v in failures.items()]
    write_json_atomic(fail_rows, staging / CAPTION_FAILURES)
    return {"images": len(images), "captioned": len(todo) - len(failures), "cached": len(images) - len(todo),
            "failed": len(failures)}


@task(name="caption-images", cache_policy=NO_CACHE)
def caption_task(plan: Plan) -> dict:
    done = plan.staging / "_captions_done.json"
    if done.exists():
        return json.loads(done.read_text())
    if plan.config.captioner == "template":
        return caption_template(plan)
    stats = _model_captions(plan)
    write_json_atomic(stats, done)
    return stats
