"""Publish a rebuilt dataset version: settle caption failures, write vocabulary, card and manifest, check that
every input record is accounted for, then make the version visible with one directory rename."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from smartmask import DATA_CODE_VERSION
from smartmask.lake.cards import write_card
from smartmask.lake.io import rows_to_table, write_json_atomic, write_parquet_atomic
from smartmask.lake.paths import dataset_dir
from smartmask.lake.schemas import REJECTS, VOCABULARY
from smartmask.rebuild_plan import Plan
from smartmask.sources.base import reject

CAPTION_FAILURES = "_caption_failures.json"  # in staging: images the caption stage could not caption


def _drop_caption_failures(plan: Plan, stats: Counter) -> list[dict]:
    """Images the caption stage failed on leave images/layers and become rejects (with their regions)."""
    path = plan.staging / CAPTION_FAILURES
    failures = json.loads(path.read_text()) if path.exists() else []
    if not failures:
        return []
    failed = [f["image_id"] for f in failures]
    for table in ("images", "layers"):
        for part in sorted((plan.staging / table).glob("part-*.parquet")):
            t = pq.read_table(part)
            keep = pc.invert(pc.is_in(t.column("image_id"), value_set=pa.array(failed, pa.string())))
            if not pc.all(keep).as_py():  # idempotent: a rerun after a kill finds nothing left to drop
                write_parquet_atomic(t.filter(keep), part)
    rejects = []
    for f in failures:
        rejects.append(reject(plan.source, "image", f["image_id"], f["reason"], f["detail"], None,
                              image_id=f["image_id"], stage="caption"))
        for k in range(f["n_layers"]):
            rejects.append(reject(plan.source, "region", f"{f['image_id']}#layer{k}", "image_rejected",
                                  f"its image was rejected: {f['reason']}", None, image_id=f["image_id"],
                                  stage="caption"))
    stats["image_accepted"] -= len(failed)
    stats["image_rejected"] += len(failed)
    stats["region_accepted"] -= sum(f["n_layers"] for f in failures)
    stats["region_rejected"] += sum(f["n_layers"] for f in failures)
    write_parquet_atomic(rows_to_table(rejects, REJECTS), plan.staging / "rejects" / "part-caption.parquet")
    return failures


def publish(plan: Plan) -> dict:
    """Drop caption failures, write parse rejects, vocabulary, card and manifest, check the accounting, rename."""
    final = dataset_dir(plan.lake, plan.name, plan.version)
    if final.exists():
        return json.loads((final / "_manifest.json").read_text())
    stats: Counter = Counter()
    for f in sorted((plan.staging / "_done").glob("*.json")):
        stats.update(json.loads(f.read_text()))
    missing = [j.index for j in plan.pending()]
    if missing:
        raise RuntimeError(f"cannot publish {plan.version}: shards {missing} are not done")
    captions_done = plan.staging / "_captions_done.json"
    if not captions_done.exists():
        raise RuntimeError(f"cannot publish {plan.version}: the caption stage has not finished")
    _drop_caption_failures(plan, stats)
    write_parquet_atomic(rows_to_table(plan.parse_rejects, REJECTS), plan.staging / "rejects" / "part-parse.parquet")
    parse_rej = Counter(r["record_kind"] for r in plan.parse_rejects)
    counts = {}
    for kind, n_in in sorted(plan.counts_in.items()):
        rejected = parse_rej[kind] + stats[f"{kind}_rejected"]
        accepted = stats[f"{kind}_accepted"] if kind in ("image", "region") else n_in - parse_rej[kind]
        counts[kind] = {"in": n_in, "accepted": accepted, "rejected": rejected}
        if n_in != accepted + rejected:  # a bug, never a data problem: refuse to publish a leaky version
            raise RuntimeError(f"accounting broken for {kind}: in={n_in} accepted={accepted} rejected={rejected}")
    labels = pq.read_table(plan.staging / "layers", columns=["label"]).column("label").value_counts().to_pylist()
    instances = {d["values"]: d["counts"] for d in labels}
    vocab = plan.vocabulary
    rows = [r | {"instances": int(instances.get(r["label"], 0))} for r in vocab.rows()]
    write_parquet_atomic(rows_to_table(rows, VOCABULARY), plan.staging / "vocabulary" / "part-00000.parquet")
    manifest = {
        "name": plan.name, "version": plan.version, "source": plan.source, "images_root": str(plan.images_root),
        "config": {k: getattr(plan.config, k) for k in plan.config.__slots__}, "code_version": DATA_CODE_VERSION,
        "captioner": plan.captioner_id, "captions": json.loads(captions_done.read_text()),
        "counts": counts, "cycles_broken": stats["cycles_broken"], "shards": len(plan.jobs),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_card(plan.lake, plan.name, plan.version, plan.staging, manifest)
    write_json_atomic(manifest, plan.staging / "_manifest.json")
    final.parent.mkdir(parents=True, exist_ok=True)
    plan.staging.rename(final)  # the publish: one rename, so the version appears whole or not at all
    for leftover in ("_done", "_captions_done.json", CAPTION_FAILURES):
        p = final / leftover
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    for parent in plan.staging.parents:  # drop now-empty staging folders, up to <lake>/_staging itself
        if parent == plan.lake or not parent.is_relative_to(plan.lake / "_staging"):
            break
        try:
            parent.rmdir()
        except OSError:
            break  # not empty: another version is staging there
    return manifest
