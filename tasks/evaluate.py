"""Prefect tasks for `evaluate`: the scoring job (one task; the per-item fan-out is Ray Data's) and the summary.

    pending eval items (the manifest minus committed ones) → Ray Data actor pool, one `Evaluator` per actor
    (each loads the model, the inpainters, the feature extractor and CLIP once) → item rows back to the driver,
    committed one batch = one Parquet part (whole items, so a kill never splits an item)

On a CPU-only cluster an actor takes the CPUs its share of the cluster allows (at most `workers` actors); with GPUs,
one GPU per actor while there are enough, else they share. Ray Data's own progress bars are off; the job shows one
bar over items.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from smartmask.evaluation.config import EvalConfig
from smartmask.evaluation.store import commit
from smartmask.progress import Progress


class _EvalActor:
    """A Ray Data callable class: eval manifest rows in, `eval_items` rows out."""

    def __init__(self, lake: str, eval_set: str, config: dict, base: dict, threads: int):
        import torch

        from smartmask.evaluation.evaluator import Evaluator

        torch.set_num_threads(max(1, threads))
        self.evaluator = Evaluator(lake, eval_set, EvalConfig.from_dict(config), base=base)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from smartmask.lake.schemas import EVAL_ITEMS

        rows = [r for item in batch.to_pylist() for r in self.evaluator.evaluate(item)]
        return pa.Table.from_pylist(rows, schema=EVAL_ITEMS)


def actor_resources(workers: int, cpus: float, gpus: float) -> dict:
    """Per-actor requests that fit the cluster: `workers` actors at most, as many as there are whole CPUs."""
    n = max(1, min(workers, int(cpus)))
    per_cpu = max(1.0, (cpus - 0.5) // n) if cpus >= 2 else cpus * 0.9 / n
    per_gpu = 0.0 if gpus < 1 else (1.0 if gpus >= n else gpus / n)
    return {"concurrency": n, "num_cpus": per_cpu, "num_gpus": per_gpu, "threads": max(1, int(per_cpu))}


def run_items(lake: Path, folder: Path, eval_set: str, items: list[dict], cfg: EvalConfig, base: dict,
              workers: int, already: int, total: int) -> dict:
    """Score `items` on Ray Data and commit their rows; returns this attempt's counts."""
    import logging

    import ray
    from ray.data import ActorPoolStrategy, DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    res = ray.cluster_resources()
    r = actor_resources(workers, res.get("CPU", 1.0), res.get("GPU", 0.0))
    if r["num_gpus"] and cfg.device is None:
        cfg = dataclasses.replace(cfg, device="cuda")
    # Items are small rows (RLE strings); parallelism = one block per item so every actor gets work at once.
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        _EvalActor, batch_size=1, batch_format="pyarrow", compute=ActorPoolStrategy(size=r["concurrency"]),
        num_cpus=r["num_cpus"], num_gpus=r["num_gpus"],
        fn_constructor_kwargs={"lake": str(lake), "eval_set": eval_set, "config": cfg.to_dict(), "base": base,
                               "threads": r["threads"]})
    done = failed = 0
    with Progress(f"evaluate {folder.name[4:]}", total=total, unit="items", initial=already) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows = batch.to_pylist()
            commit(folder, rows)
            n = len({row["item_id"] for row in rows})
            done += n
            failed += sum(row["status"] != "ok" for row in rows)
            bar.advance(n, failed_rows=failed)
    return {"items": done, "failed_rows": failed, "actors": r["concurrency"]}


# Retried once: the job is resumable (committed items are skipped), a retry redoes only what was in flight.
@task(name="evaluate-items", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def evaluate_task(lake: Path, folder: Path, eval_set: str, cfg: EvalConfig, base: dict, workers: int) -> dict:
    from smartmask.evaluation.eval_set import load_eval_set
    from smartmask.evaluation.store import committed_items

    es = load_eval_set(lake, eval_set)
    done = committed_items(folder)
    pending = [it for it in es.items if it["item_id"] not in done]
    if not pending:
        return {"items": 0, "failed_rows": 0, "actors": 0}
    return run_items(lake, folder, eval_set, pending, cfg, base, workers, len(done), len(es.items))


@task(name="evaluate-summary", cache_policy=NO_CACHE)
def summary_task(folder: Path, record: dict, counts: dict, compare_to: list[Path], n_boot: int) -> dict:
    """Aggregates, paired differences (within the run and against `compare_to` runs), the report."""
    from smartmask.evaluation.report import render
    from smartmask.evaluation.store import read_items, write_summary
    from smartmask.evaluation.summary import aggregate_rows, compare_versions
    from smartmask.lake.io import write_bytes_atomic

    rows = read_items(folder)
    summary = aggregate_rows(rows, n_boot=n_boot)
    for other in compare_to:
        summary += compare_versions(rows, read_items(other), n_boot=n_boot)
    write_summary(folder, summary)
    report = render(record, summary, counts)
    write_bytes_atomic(report.encode("utf-8"), folder / "report.md")
    return {"summary_rows": len(summary), "report": report}
