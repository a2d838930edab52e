"""Rebuild a dataset version: plan (parse, hash, shard) → process shards (validate, order) → caption → publish.

The three steps are plain functions so the same code runs in a test, a Prefect task and a worker process.
Resumability: every shard writes its parts under the version's staging directory and then a `_done`
marker; a rerun of the same inputs gets the same version id, skips shards with a marker and redoes the rest
(part names are deterministic, so a half-finished shard is simply overwritten). Publish renames the whole
staging directory into `datasets/`, so a version is either completely visible or not at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from smartmask import DATA_CODE_VERSION, masks
from smartmask.captioning import captioner_id
from smartmask.conditioning.vocabulary import Vocabulary
from smartmask.config import RebuildConfig
from smartmask.lake.io import rows_to_table, write_json_atomic, write_parquet_atomic
from smartmask.lake.locks import lake_lock
from smartmask.lake.schemas import IMAGES, LAYERS, REJECTS
from smartmask.ordering import order_layers
from smartmask.publish import publish, published_manifest, require_accepted
from smartmask.rebuild_plan import Plan, ShardJob
from smartmask.sources import SourceImage, load_source
from smartmask.sources.base import reject
from smartmask.validate import (
    Reject,
    check_image,
    normalise_label,
    resolve_image,
    safe_image_path,
    to_rle,
    visible_beyond_band,
    visible_from_invisible,
)


def _file_sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _label_or_none(raw) -> str | None:
    try:
        return normalise_label(raw)
    except Reject:
        return None


def plan_rebuild(source_spec: str, images_dir: str | Path, name: str, lake: Path,
                 config: RebuildConfig = RebuildConfig()) -> Plan:
    """Parse the source, hash every input, and decide the version id. Raises SourceError on unusable input."""
    parsed = load_source(source_spec)
    root = Path(images_dir).expanduser().resolve()
    cap_id = captioner_id(config.captioner)  # resolves a model's revision: new weights → new dataset version
    h = hashlib.sha256()
    for part in (DATA_CODE_VERSION, config.content_hash(), cap_id, parsed.source, str(root)):
        h.update(part.encode() + b"\0")
    h.update(parsed.sha256.encode())  # hashed while parsing: the annotation file is read once
    shas: dict[str, str | None] = {}
    for img in parsed.images:
        sha = None
        if isinstance(img.file_name, str) and img.file_name:
            p = safe_image_path(root, img.file_name)  # None: an invalid name, or outside the root
            sha = _file_sha256(p) if p is not None else None
        shas[img.image_id] = sha
        h.update(f"{img.image_id}\0{img.file_name}\0{sha}\0".encode())
    version = h.hexdigest()[:16]
    vocab = Vocabulary.build(
        (lab, r.is_stuff) for img in parsed.images for r in img.regions
        if (lab := _label_or_none(r.label)) is not None
    )
    plan = Plan(name=name, version=version, lake=lake, source=parsed.source, images_root=root, config=config,
                vocabulary=vocab,
                counts_in=parsed.counts_in, parse_rejects=parsed.rejects, captioner_id=cap_id,
                source_notes=parsed.notes)
    ids = vocab.ids
    # At least one shard, empty if need be: its (empty) parts let a source with no usable image record publish its
    # rejects like any other all-rejected source instead of failing on tables that were never written.
    for k, start in enumerate(range(0, max(1, len(parsed.images)), config.shard_size)):
        chunk = parsed.images[start : start + config.shard_size]
        plan.jobs.append(ShardJob(k, chunk, {i.image_id: shas[i.image_id] for i in chunk}, ids, root,
                                  plan.staging, parsed.source, config))
    return plan


def _split(image_id: str) -> str:
    # Stable 95/5 split on the id alone, so an image keeps its split across dataset versions.
    return "val" if int(hashlib.sha1(image_id.encode()).hexdigest()[:8], 16) % 100 < 5 else "train"


def process_image(img: SourceImage, job: ShardJob, images: list, layers: list, rejects: list, stats: Counter) -> None:
    cfg, src = job.config, job.source

    def rej(kind, key, r: Reject, record, stage="validate"):
        rejects.append(reject(src, kind, key, r.reason, r.detail, record, image_id=img.image_id, stage=stage))
        stats[f"{kind}_rejected"] += 1

    try:
        path = resolve_image(job.images_root, img.file_name)
        w, h = check_image(path, img.width, img.height, cfg.max_image_pixels)
    except Reject as r:
        rej("image", img.image_id, r, img.raw if not isinstance(img.raw, dict) else
            {k: v for k, v in img.raw.items() if k not in ("layers",)})
        for reg in img.regions:
            rej("region", reg.key, Reject("image_rejected", f"its image was rejected: {r.reason}"), reg.raw)
        return
    ok: list[tuple] = []  # (region, label, amodal, visible|None)
    for reg in img.regions:
        try:
            if reg.defect:
                raise Reject(*reg.defect)
            label = normalise_label(reg.label)
            if reg.rank is not None and not (isinstance(reg.rank, int) and not isinstance(reg.rank, bool)
                                             and reg.rank >= 1):
                raise Reject("invalid_order", f"order must be a positive integer, got {reg.rank!r}")
            amodal = to_rle(reg.segmentation, h, w)
            try:
                visible = None if reg.visible is None else to_rle(reg.visible, h, w)
            except Reject as r:
                raise Reject(r.reason, f"visible mask: {r.detail}") from None
            if visible is None and reg.invisible is not None:
                try:
                    visible = visible_from_invisible(amodal, to_rle(reg.invisible, h, w))
                except Reject as r:
                    raise Reject(r.reason, f"invisible mask: {r.detail}") from None
            ok.append((reg, label, amodal, visible))
        except Reject as r:
            rej("region", reg.key, r, reg.raw)
    if ok:
        ok = _clip_visible(ok, cfg, lambda reg, r: rej("region", reg.key, r, reg.raw))
    if not ok:
        rej("image", img.image_id, Reject("no_valid_layers", "no region survived validation"),
            {"image_id": img.image_id, "file_name": img.file_name})
        return
    amodal = [o[2] for o in ok]
    visible = [o[3] if o[3] is not None else o[2] for o in ok]
    order = order_layers(amodal, visible, [o[0].is_stuff for o in ok], [o[4] for o in ok],
                         [o[0].rank for o in ok], _remap_pairs(img, ok), img.order_kind, cfg.min_evidence_pixels)
    boxes = masks.bbox(amodal)
    for layer, i in enumerate(order.back_to_front):
        reg, label, a_rle, v_rle, area, varea, clipped = ok[i]
        layers.append({
            "image_id": img.image_id, "layer": layer, "region_id": reg.key, "label": label,
            "label_raw": reg.label, "label_id": job.label_ids[label], "is_stuff": reg.is_stuff, "height": h,
            "width": w, "rle": a_rle["counts"], "bbox": [float(v) for v in boxes[i]], "area": area,
            "visible_rle": v_rle["counts"] if v_rle is not None else None, "visible_area": varea,
            "visible_clipped_pixels": clipped,
            "occlusion_rate": float(1.0 - varea / area), "order_source": order.provenance[i],
        })
        stats[f"label:{label}"] += 1
    provs = set(order.provenance)
    images.append({
        "image_id": img.image_id, "file_name": img.file_name, "uri": str(path), "width": w, "height": h,
        "sha256": job.sha256.get(img.image_id), "source": src, "split": _split(img.image_id),
        "n_layers": len(ok), "n_rejected_regions": len(img.regions) - len(ok),
        "order_source": provs.pop() if len(provs) == 1 else "mixed", "order_pairs": order.pairs,
        "cycles_broken": order.cycles_broken,
        "source_caption": img.caption if isinstance(img.caption, str) else None,
    })
    stats["image_accepted"] += 1
    stats["region_accepted"] += len(ok)
    stats["cycles_broken"] += order.cycles_broken


def _clip_visible(ok: list[tuple], cfg: RebuildConfig, rej) -> list[tuple]:
    """(region, label, amodal, visible|None) → (…, area, visible_area, clipped pixels) for the regions that pass.

    Visible pixels outside the amodal mask are clipped (visible := visible ∩ amodal) when they lie within
    `cfg.visible_band_px` of it; more than max(min_evidence_pixels, 1% of the visible area) beyond the band
    rejects the region. Areas and intersections stay in RLE; only regions with pixels outside are decoded.
    """
    amodal_areas = masks.area([o[2] for o in ok])
    with_vis = [k for k, o in enumerate(ok) if o[3] is not None]
    inter = [masks.merge([ok[k][2], ok[k][3]], intersect=True) for k in with_vis]
    vis_areas = dict(zip(with_vis, masks.area([ok[k][3] for k in with_vis]), strict=True))
    in_areas = dict(zip(with_vis, masks.area(inter), strict=True))
    inter_of = dict(zip(with_vis, inter, strict=True))
    kept = []
    for k, (o, a) in enumerate(zip(ok, amodal_areas, strict=True)):
        reg, label, a_rle, v_rle = o
        if a < cfg.min_area:
            rej(reg, Reject("empty_mask", f"mask has {a} pixels"))
            continue
        varea, clipped = int(a), 0
        if v_rle is not None:
            va, vin = int(vis_areas[k]), int(in_areas[k])
            if va > vin:
                beyond = visible_beyond_band(a_rle, v_rle, cfg.visible_band_px)
                if beyond > max(cfg.min_evidence_pixels, 0.01 * va):
                    rej(reg, Reject("visible_outside_amodal", f"{beyond} visible pixels lie more than "
                                    f"{cfg.visible_band_px} px outside the amodal mask"))
                    continue
                v_rle, clipped = inter_of[k], va - vin
            varea = vin
        kept.append((reg, label, a_rle, v_rle, int(a), varea, clipped))
    return kept


def _remap_pairs(img: SourceImage, ok: list[tuple]) -> list[tuple[int, int, str]]:
    """Source pairs index the source's region list; re-index them onto the regions that survived."""
    pos = {id(o[0]): k for k, o in enumerate(ok)}
    idx = {i: pos[id(r)] for i, r in enumerate(img.regions) if id(r) in pos}
    return [(idx[f], idx[b], kind) for f, b, kind in img.pairs if f in idx and b in idx]


def process_shard(job: ShardJob) -> dict:
    """Validate and order one shard; write its parts and then its `_done` marker. Returns its counts."""
    t0 = time.perf_counter()
    images: list[dict] = []
    layers: list[dict] = []
    rejects: list[dict] = []
    stats: Counter = Counter()
    for img in job.images:
        process_image(img, job, images, layers, rejects, stats)
    part = f"part-{job.index:05d}.parquet"
    write_parquet_atomic(rows_to_table(images, IMAGES), job.staging / "images" / part)
    write_parquet_atomic(rows_to_table(layers, LAYERS), job.staging / "layers" / part)
    write_parquet_atomic(rows_to_table(rejects, REJECTS), job.staging / "rejects" / part)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    write_json_atomic(dict(stats), job.staging / "_done" / f"{job.index:05d}.json")
    return dict(stats)


def rebuild(source_spec: str, images_dir: str | Path, name: str, lake: Path,
            config: RebuildConfig = RebuildConfig(), *, lock_wait_s: float = 0.0) -> dict:
    """The whole rebuild in-process (no Prefect): what the flow does, minus retries and parallelism.

    Raises `LockHeld` when another live run holds this version (after `lock_wait_s`), and `NoAcceptedRecords`
    when every record was rejected (the version is then stored with its rejects only, so they can be queried).
    """
    plan = plan_rebuild(source_spec, images_dir, name, lake, config)
    if not plan.published:
        with lake_lock(plan.lake, "rebuild", plan.lock_key, wait_s=lock_wait_s, what=describe(plan)):
            if not plan.published:  # another run may have finished it while we waited
                for job in plan.pending():
                    process_shard(job)
                caption_template(plan)
                publish(plan)
    return require_accepted(published_manifest(plan))


def describe(plan: Plan) -> str:
    return f"dataset {plan.name} version {plan.version}"


def caption_template(plan: Plan) -> dict:
    """The template caption stage (the flow runs model captioners under Ray; see tasks/captions.py)."""
    from smartmask.captioning.stage import template_captions

    done = plan.staging / "_captions_done.json"
    if done.exists():
        return json.loads(done.read_text())
    if plan.config.captioner != "template":
        raise ValueError("model captioners run under Ray: use the rebuild_dataset flow")
    table = template_captions(pq.read_table(plan.staging / "layers"), plan.captioner_id)
    write_parquet_atomic(table, plan.staging / "captions" / "part-00000.parquet")
    stats = {"images": table.num_rows, "captioned": table.num_rows, "cached": 0, "failed": 0}
    write_json_atomic(stats, done)
    return stats
