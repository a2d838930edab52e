"""Publish a rebuilt dataset version: check that the staging is complete, settle caption failures, write vocabulary,
card and manifest, check that every input record is accounted for, then make the version visible with one
directory rename.

Complete means: every shard's parts hold exactly the rows its `_done` marker counted, and every accepted image has
a caption (or was dropped as a caption failure). Anything else is refused and the stale marker removed, so a rerun
redoes that piece instead of publishing a version with, say, captions for 50 of 400 images.

A source whose every record is rejected is still stored, as a version with no images and status
`no_accepted_records`, so its rejects can be queried; `require_accepted` then fails the run with one line.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from smartmask import DATA_CODE_VERSION
from smartmask.lake.cards import write_card
from smartmask.lake.io import rows_to_table, utc_stamp, write_json_atomic, write_parquet_atomic
from smartmask.lake.paths import dataset_dir
from smartmask.lake.schemas import REJECTS, VOCABULARY
from smartmask.rebuild_plan import Plan
from smartmask.sources.base import reject

CAPTION_FAILURES = "_caption_failures.json"  # in staging: images the caption stage could not caption
CAPTIONS_DONE = "_captions_done.json"


class PublishRefused(RuntimeError):
    """The staging is incomplete or inconsistent; the message says which piece a rerun will redo."""


class NoAcceptedRecords(ValueError):
    """Every record of the source was rejected. One line naming the top reasons; the CLI exits 2."""


def _rows(path) -> int | None:
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else None


def _verify_shards(plan: Plan, failures: list[dict]) -> None:
    """Each shard's parts hold the rows its marker counted (less caption failures, once those were dropped)."""
    failed = {f["image_id"]: f["n_layers"] for f in failures}
    for job in plan.jobs:
        marker = plan.staging / "_done" / f"{job.index:05d}.json"
        st = json.loads(marker.read_text())
        dropped = [failed[i.image_id] for i in job.images if i.image_id in failed]
        expect = {"images": (st.get("image_accepted", 0), len(dropped)),
                  "layers": (st.get("region_accepted", 0), sum(dropped)),
                  "rejects": (st.get("image_rejected", 0) + st.get("region_rejected", 0), 0)}
        for table, (n, minus) in expect.items():
            rows = _rows(plan.staging / table / f"part-{job.index:05d}.parquet")
            if rows not in (n, n - minus):
                marker.unlink(missing_ok=True)
                raise PublishRefused(f"cannot publish {plan.version}: shard {job.index}'s {table} part has {rows} "
                                     f"rows, its marker counted {n}; rerun the rebuild to redo that shard")


def _verify_captions(plan: Plan) -> None:
    images = set(pq.read_table(plan.staging / "images", columns=["image_id"]).column(0).to_pylist())
    captions = set(pq.read_table(plan.staging / "captions", columns=["image_id"]).column(0).to_pylist())
    if images != captions:
        (plan.staging / CAPTIONS_DONE).unlink(missing_ok=True)
        raise PublishRefused(f"cannot publish {plan.version}: captions cover {len(images & captions)} of "
                             f"{len(images)} accepted images ({len(captions - images)} captions of images not in "
                             f"the version); rerun the rebuild to redo the caption stage")


def _top_reasons(plan: Plan, k: int = 3) -> list[list]:
    reasons = Counter(r["reason"] for r in plan.parse_rejects)
    for d in pq.read_table(plan.staging / "rejects", columns=["reason"]).column(0).value_counts().to_pylist():
        reasons[d["values"]] += d["counts"]
    reasons.pop("image_rejected", None)  # a consequence (a region of a rejected image), never the cause
    return [[r, n] for r, n in reasons.most_common(k)]


def published_manifest(plan: Plan) -> dict:
    return json.loads((dataset_dir(plan.lake, plan.name, plan.version) / "_manifest.json").read_text())


def require_accepted(manifest: dict) -> dict:
    """The manifest of a version with accepted images; `NoAcceptedRecords` for one that holds only rejects."""
    if manifest.get("status", "published") != "no_accepted_records":
        return manifest
    img = manifest["counts"].get("image", {"in": 0})
    reasons = ", ".join(f"{r} x{n}" for r, n in manifest.get("top_reject_reasons", [])) or "no records in the source"
    name, version = manifest["name"], manifest["version"]
    raise NoAcceptedRecords(
        f"no image of {manifest['source']} was accepted ({img['in']} in; top reject reasons: {reasons}); "
        f"the rejects are stored as dataset {name} version {version}: smartmask query \"SELECT reason, detail, "
        f"record FROM rejects WHERE name = '{name}' AND version = '{version}'\"")


def _caption_failures(plan: Plan) -> list[dict]:
    path = plan.staging / CAPTION_FAILURES
    return json.loads(path.read_text()) if path.exists() else []


def _drop_caption_failures(plan: Plan, stats: Counter, failures: list[dict]) -> list[dict]:
    """Images the caption stage failed on leave images/layers and become rejects (with their regions)."""
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
        raise PublishRefused(f"cannot publish {plan.version}: shards {missing} are not done")
    captions_done = plan.staging / CAPTIONS_DONE
    if not captions_done.exists():
        raise PublishRefused(f"cannot publish {plan.version}: the caption stage has not finished")
    failures = _caption_failures(plan)
    _verify_shards(plan, failures)
    _drop_caption_failures(plan, stats, failures)
    _verify_captions(plan)
    write_parquet_atomic(rows_to_table(plan.parse_rejects, REJECTS), plan.staging / "rejects" / "part-parse.parquet")
    parse_rej = Counter(r["record_kind"] for r in plan.parse_rejects)
    counts = {}
    for kind, n_in in sorted(plan.counts_in.items()):
        rejected = parse_rej[kind] + stats[f"{kind}_rejected"]
        accepted = stats[f"{kind}_accepted"] if kind in ("image", "region") else n_in - parse_rej[kind]
        counts[kind] = {"in": n_in, "accepted": accepted, "rejected": rejected}
        if n_in != accepted + rejected:  # a bug, never a data problem: refuse to publish a leaky version
            raise PublishRefused(f"accounting broken for {kind}: in={n_in} accepted={accepted} rejected={rejected}")
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
        "status": "published" if stats["image_accepted"] > 0 else "no_accepted_records",
        "top_reject_reasons": _top_reasons(plan),
        "source_notes": list(plan.source_notes),
        "created_at": utc_stamp(),
    }
    write_card(plan.lake, plan.name, plan.version, plan.staging, manifest)
    write_json_atomic(manifest, plan.staging / "_manifest.json")
    final.parent.mkdir(parents=True, exist_ok=True)
    plan.staging.rename(final)  # the publish: one rename, so the version appears whole or not at all
    for leftover in ("_done", CAPTIONS_DONE, CAPTION_FAILURES):
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
