"""Prefect task for `bulk_insert`: the whole job as one task; the per-item fan-out is Ray Data's.

    read (one task, on the driver's node) → decode (tasks) → layout → suggest → insert (actor pools) → write (tasks)
    read (one task, on the driver's node) → all stages in one actor per replica           (the fused placement)

Every stage is a function or class from `smartmask.bulk` mapped over Arrow batches of work rows (`WORK`).
Each model stage is an actor pool: the pipeline is built inside each actor from plain arguments, so each model
loads once per actor. Ray Data streams: the driver only iterates the small final rows coming out of `write` and
commits them (`smartmask.bulk.store.Committer`), so its memory does not grow with the catalog.

Ray Data's own progress bars are off; the job shows one bar (done / rejected / per second) from the rows it
commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from smartmask.bulk.config import MODEL_STAGES, BulkConfig
from smartmask.bulk.stages import (
    AllStages,
    InsertStage,
    LayoutStage,
    SuggestStage,
    decode_rows,
    read_catalog,
    work_table,
)
from smartmask.bulk.store import Committer, committed_keys
from smartmask.bulk.write import write_rows
from smartmask.progress import Progress


def _read(batch: pa.Table, catalog: str, run_dir: str, config: dict) -> Iterator[pa.Table]:
    done = committed_keys(Path(run_dir))
    for rows in read_catalog(Path(catalog), BulkConfig.from_dict(config), done):
        yield work_table(rows)


def _decode(batch: pa.Table, config: dict, catalog_dir: str) -> pa.Table:
    return work_table(decode_rows(batch.to_pylist(), BulkConfig.from_dict(config), catalog_dir))


def _write(batch: pa.Table, run_dir: str, run: str, config: dict) -> pa.Table:
    from smartmask.lake.schemas import INSERT_ITEMS

    return pa.Table.from_pylist(write_rows(batch.to_pylist(), Path(run_dir), run, config), schema=INSERT_ITEMS)


def _actor(stage_cls):
    """A Ray Data callable class around a model stage: Arrow batch in, Arrow batch out."""

    class Actor(stage_cls):
        def __call__(self, batch: pa.Table) -> pa.Table:  # type: ignore[override]
            return work_table(super().__call__(batch.to_pylist()))

    Actor.__name__ = Actor.__qualname__ = stage_cls.__name__
    return Actor


def fit_to_cluster(cfg: BulkConfig, names: tuple[str, ...], cpus: float, gpus: float) -> BulkConfig:
    """Stages whose requests add up to more than the cluster has would wait forever for the rest (actors hold
    theirs): scale the CPU requests of the stages in use (`names`) down to fit, and the model actors' GPU requests
    too (one GPU per actor when there are enough, else they share). Sets every `num_gpus` (None: one GPU per model
    actor when the cluster has a GPU)."""
    import dataclasses
    import logging

    log = logging.getLogger(__name__)
    stages = {n: cfg.stage(n) for n in names}
    stages = {n: dataclasses.replace(r, num_gpus=r.num_gpus if r.num_gpus is not None else
                                     (1.0 if gpus >= 1 and n in (*MODEL_STAGES, "fused") else 0.0))
              for n, r in stages.items()}
    asked = READ_CPUS + sum(r.num_cpus * r.concurrency for r in stages.values())
    if asked > cpus:
        f = 0.95 * cpus / asked
        log.warning("the stages ask for %.2f CPUs, the cluster has %.2f: scaled by %.2f", asked, cpus, f)
        stages = {n: dataclasses.replace(r, num_cpus=r.num_cpus * f) for n, r in stages.items()}
    asked_gpus = sum(r.num_gpus * r.concurrency for r in stages.values())
    if asked_gpus > gpus > 0:
        f = gpus / asked_gpus
        log.warning("the model actors ask for %.2f GPUs, the cluster has %.0f: they share them (x%.2f)",
                    asked_gpus, gpus, f)
        stages = {n: dataclasses.replace(r, num_gpus=r.num_gpus * f) for n, r in stages.items()}
    return dataclasses.replace(cfg, stages={**cfg.stages, **stages})


def placement(cfg: BulkConfig, gpus: float) -> str:
    """`auto` → fused on CPUs (one process per pipeline replica: no image crosses processes, no five processes
    time-sliced on the same cores), staged with GPUs (each model stage scales and takes GPUs on its own)."""
    if cfg.placement != "auto":
        return cfg.placement
    return "staged" if gpus >= 1 else "fused"


READ_CPUS = 0.1
BLOCK_BYTES = 16 * 1024  # ~40 catalog rows per block out of the reader (one decoded photo per block after it)


class _Fused(AllStages):
    """Every stage in one actor (the fused placement): Arrow work rows in, Arrow `insert_items` rows out."""

    def __call__(self, batch: pa.Table) -> pa.Table:  # type: ignore[override]
        from smartmask.lake.schemas import INSERT_ITEMS

        return pa.Table.from_pylist(super().__call__(batch.to_pylist()), schema=INSERT_ITEMS)


def build_dataset(catalog: Path, lake: Path, folder: Path, run: str, cfg: BulkConfig):
    import ray
    from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.issue_detectors_config.detectors = []  # its memory advice is about the reader's key set, logged as noise
    # Ray Data fills a block up to target_max_block_size before passing it on (128 MiB by default: the whole
    # catalog's rows in one block, so no item would move until the reader finished and one worker would get them
    # all). Small blocks keep items streaming through every stage in parallel; 16 KiB, not 4 or 64: 64 KiB gave 2
    # workers 150 rows each at a time (1.4x of 1 worker on 240 items), 4 KiB cost one worker on one core ~15% more
    # per item than 16 KiB (docs/experiments.md, "Bulk insertion").
    ctx.target_max_block_size = BLOCK_BYTES
    res = ray.cluster_resources()
    fused = placement(cfg, res.get("GPU", 0.0)) == "fused"
    names = ("fused",) if fused else ("decode", "layout", "suggest", "insert", "write")
    cfg = fit_to_cluster(cfg, names, res.get("CPU", 1.0), res.get("GPU", 0.0))
    d = cfg.to_dict()
    # On this node (Ray's node-id label, as its own local-file reads do): the catalog is a file on this machine.
    here = {ray._raylet.RAY_NODE_ID_KEY: ray.get_runtime_context().get_node_id()}
    # One read task on this node: the catalog is a local file, and one reader sees every row (duplicates).
    ds = ray.data.from_items([{"part": 0}]).map_batches(
        _read, batch_size=1, batch_format="pyarrow", num_cpus=READ_CPUS, label_selector=here,
        fn_kwargs={"catalog": str(catalog), "run_dir": str(folder), "config": d})
    if fused:
        r = cfg.stage("fused")
        return ds.map_batches(_Fused, batch_size=r.batch_size, batch_format="pyarrow",
                              compute=ActorPoolStrategy(size=r.concurrency), num_cpus=r.num_cpus, num_gpus=r.num_gpus,
                              fn_constructor_kwargs={"lake": str(lake), "config": d, "catalog_dir": str(catalog.parent),
                                                     "run_dir": str(folder), "run": run})
    r = cfg.stage("decode")
    ds = ds.map_batches(_decode, batch_size=r.batch_size, batch_format="pyarrow",
                        compute=TaskPoolStrategy(size=r.concurrency), num_cpus=r.num_cpus,
                        fn_kwargs={"config": d, "catalog_dir": str(catalog.parent)})
    for name, cls in (("layout", LayoutStage), ("suggest", SuggestStage), ("insert", InsertStage)):
        r = cfg.stage(name)
        ds = ds.map_batches(_actor(cls), batch_size=r.batch_size, batch_format="pyarrow",
                            compute=ActorPoolStrategy(size=r.concurrency), num_cpus=r.num_cpus, num_gpus=r.num_gpus,
                            fn_constructor_kwargs={"lake": str(lake), "config": d})
    r = cfg.stage("write")
    return ds.map_batches(_write, batch_size=r.batch_size, batch_format="pyarrow",
                          compute=TaskPoolStrategy(size=r.concurrency), num_cpus=r.num_cpus, fn_kwargs={"run_dir": str(folder), "run": run, "config": d})


def run_pipeline(catalog: Path, lake: Path, folder: Path, run: str, cfg: BulkConfig, total: int,
                 already: int) -> dict:
    """Stream every pending item through the stages and commit the rows; returns this attempt's counts."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-dataset INFO lines and the "bars off" warning
    committer = Committer(folder, cfg.commit_every, cfg.commit_every_s)
    ds = build_dataset(catalog, lake, folder, run, cfg)
    with Progress(f"bulk-insert {run}", total=total, unit="items", initial=already) as bar:
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                committer.add(batch.to_pylist())
                bar.advance(batch.num_rows, inserted=committer.inserted, rejected=committer.rejected)
        finally:
            committer.close()  # what came back is committed, also when the job fails or is interrupted
    return {"inserted": committer.inserted, "rejected": committer.rejected,
            "duplicates_dropped": committer.duplicates_dropped, "rejects_by_reason": dict(committer.reasons)}


# Retried once: a job is resumable (committed keys are skipped), so a retry after a lost node redoes only the
# items that were in flight.
@task(name="bulk-insert-items", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def bulk_task(catalog: Path, lake: Path, folder: Path, run: str, cfg: BulkConfig, total: int, already: int) -> dict:
    return run_pipeline(catalog, lake, folder, run, cfg, total, already)
