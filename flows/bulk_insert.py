"""Flow `bulk_insert`: a catalog of (image, object, context, guidance) rows → inserted images, masks and one
`insert_items` row per catalog row, on Ray Data (local by default, `ray_address` joins a cluster).

    check the catalog and the models → lock the run → run.json (catalog sha256 + config hash, fixed at first start)
    → Ray Data: read → decode → layout → suggest → insert → write, rows committed as they come back
    → manifest: in = inserted + rejected and no duplicate key, else the run stays incomplete

Rerunning the same run name resumes it: committed item keys are skipped. One process at a time runs a given run
name (lake lock `bulk_insert/<run>`); a second waits up to `lock_wait_s`, then fails naming the holder.
`python -m flows.bulk_insert CATALOG --run NAME --model V [--lake DIR]`.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import Failed

from smartmask.bulk.access import file_sha256
from smartmask.bulk.catalog import CatalogError, check_catalog
from smartmask.bulk.config import RUN_NAME, BulkConfig
from smartmask.bulk.store import (
    BulkIncomplete,
    BulkRefused,
    bulk_run_dir,
    committed_keys,
    finish,
    start_record,
    sweep_temp_files,
)
from smartmask.bulk.write import BULK_CODE_VERSION
from smartmask.lake.locks import LockHeld, lake_lock
from smartmask.lake.paths import lake_root
from smartmask.lake.render import format_table

#: `BulkConfig.model_version` placeholder: the newest registered model, resolved when the run starts.
NEWEST = "newest"


def check_job(root: Path, catalog: Path, run: str, cfg: BulkConfig) -> tuple[str, int, dict]:
    """Everything that can be wrong with the job as a whole, before Ray starts: (format, rows, model lineage).
    Raises CatalogError / BulkRefused / BadInput, each one line."""
    import json

    from smartmask.inference.errors import BadInput
    from smartmask.inference.inpaint import parse_spec
    from smartmask.lake.paths import model_dir
    from smartmask.pretrained import ModelNotFound, model_revision
    from smartmask.registry import NotFound, resolve_model

    if not RUN_NAME.match(run):
        raise BulkRefused(f"run name {run!r}: use letters, digits, '.', '-' or '_' (at most 128, no '/')")
    fmt, rows = check_catalog(catalog)
    try:
        resolve_model(root, cfg.model_version)
    except NotFound as e:
        raise BadInput(str(e), "model") from None
    try:
        parsed = parse_spec(cfg.inpainter)
    except ValueError as e:
        raise BadInput(str(e), "inpainter") from None
    for source, field in ((parsed.base, "inpainter"), (parsed.controlnet, "inpainter"), (cfg.segmenter, "segmenter")):
        if source:
            try:
                model_revision(source)
            except ModelNotFound as e:
                raise BadInput(str(e), field) from None
    lineage = json.loads((model_dir(root, cfg.model_version) / "lineage.json").read_text())
    return fmt, rows, lineage


@flow(name="bulk_insert")
def bulk_insert(catalog: str, run: str, config: BulkConfig, lake: str | None = None,
                ray_address: str | None = None, lock_wait_s: float = 0.0) -> dict:
    """Returns the manifest (with `summary`, the printed table). Expected failures (a bad catalog, a run name
    taken by another catalog, the run locked, rows not adding up) fail the run with their one line.

    `config.model_version == NEWEST` ("newest", e.g. from a `smartmask serve` deployment) is resolved here, when
    the run starts, to the newest model registered in the lake (none registered: the run fails naming it); a
    `{model}` in `run` becomes that version, so each model gets its own run."""
    from smartmask.inference.errors import BadInput

    root = lake_root(lake)
    path = Path(catalog).expanduser().resolve()
    try:
        config = resolve_newest(root, config)
        run = run.replace("{model}", config.model_version)
        fmt, rows, lineage = check_job(root, path, run, config)
        return _run(root, path, run, config, fmt, rows, lineage, ray_address, lock_wait_s)
    except (CatalogError, BulkRefused, BulkIncomplete, LockHeld, BadInput) as e:
        return Failed(message=str(e), data=e)


def resolve_newest(root: Path, cfg: BulkConfig) -> BulkConfig:
    """`cfg` with its NEWEST placeholder model version replaced by the newest registered one (BadInput if none)."""
    import dataclasses

    from smartmask.inference.errors import BadInput
    from smartmask.registry import NotFound, resolve_model

    if cfg.model_version not in ("", NEWEST):
        return cfg
    try:
        return dataclasses.replace(cfg, model_version=resolve_model(root, None))
    except NotFound as e:
        raise BadInput(str(e), "model") from None


def _run(root: Path, catalog: Path, run: str, cfg: BulkConfig, fmt: str, rows: int, lineage: dict,
         ray_address: str | None, lock_wait_s: float) -> dict:
    from flows.ray_runtime import ray_session
    from tasks.bulk import bulk_task

    folder = bulk_run_dir(root, run)
    with lake_lock(root, "bulk_insert", run, wait_s=lock_wait_s, what=f"bulk insertion run {run}"):
        record = start_record(folder, {
            "run": run, "catalog": str(catalog), "catalog_format": fmt, "catalog_sha256": file_sha256(catalog),
            "config": cfg.to_dict(), "config_hash": cfg.config_hash(), "model_version": cfg.model_version,
            "model_lineage": lineage, "code_version": BULK_CODE_VERSION,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        sweep_temp_files(folder)  # what a killed attempt left mid-write
        already = len(committed_keys(folder))
        t0 = time.perf_counter()
        stats: dict = {"inserted": 0, "rejected": 0}
        if already < rows:
            with ray_session(address=ray_address):
                stats = bulk_task(catalog, root, folder, run, cfg, rows, already)
        seconds = time.perf_counter() - t0
        done = stats["inserted"] + stats["rejected"]
        attempt = stats | {"resumed_from": already, "seconds": round(seconds, 3),
                           "items_per_s": round(done / seconds, 3) if seconds > 0 else None,
                           "ray_address": ray_address, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        manifest = finish(folder, rows, record, attempt)
    manifest["summary"] = summary_table(manifest, attempt)
    manifest["folder"] = str(folder)
    from tasks.dashboard import dashboard_task

    manifest["dashboard"] = dashboard_task(root)
    get_run_logger().info("bulk insertion run %s %s: %d in, %d inserted, %d rejected", run, manifest["status"],
                          manifest["in"], manifest["inserted"], manifest["rejected"])
    return manifest


def summary_table(manifest: dict, attempt: dict) -> str:
    import pyarrow as pa

    lines = [("in", manifest["in"]), ("inserted", manifest["inserted"]), ("rejected", manifest["rejected"])]
    lines += [(f"  rejected: {k}", v) for k, v in manifest["rejects_by_reason"].items()]
    lines += [("this attempt: items", attempt["inserted"] + attempt["rejected"]),
              ("this attempt: resumed after", attempt["resumed_from"]),
              ("this attempt: seconds", attempt["seconds"]),
              ("this attempt: items/s", attempt["items_per_s"])]
    table = pa.table({"what": [k for k, _ in lines], "n": [str(v) for _, v in lines]})
    return f"bulk insertion run {manifest['run']} ({manifest['status']}), model {manifest['model_version']}\n" + \
        format_table(table, max_rows=60)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("catalog")
    ap.add_argument("--run", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--lake")
    ap.add_argument("--inpainter", default="controlnet-sd15")
    ap.add_argument("--segmenter")
    a = ap.parse_args()
    print(bulk_insert(a.catalog, a.run, BulkConfig(model_version=a.model, inpainter=a.inpainter,
                                                   segmenter=a.segmenter), a.lake)["run"])
