"""Prefect tasks for `rebuild_dataset`. The work is in `smartmask.rebuild`; these add retries and logging.

Inputs are large lists of records, so every task opts out of Prefect's input-hash caching (NO_CACHE):
hashing them would cost more than the work, and resumability comes from the shard `_done` markers instead.

Shard tasks are Prefect task runs on threads; the CPU work of each runs in a process pool (`shard_processes`).
Prefect's own ProcessPoolTaskRunner was measured and rejected here: every worker process is a full Prefect client
(5–6 s to spawn the pool, ~6 s to shut it down, and without PREFECT_API_URL each worker starts its own ephemeral
API server), which is more than the whole work of a 5,000-image rebuild on 2 cores.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from smartmask.config import RebuildConfig
from smartmask.publish import publish
from smartmask.rebuild import plan_rebuild, process_shard
from smartmask.rebuild_plan import Plan, ShardJob

_POOL: ProcessPoolExecutor | None = None


@contextmanager
def shard_processes(workers: int) -> Iterator[None]:
    """While open, `shard_task` runs its shard in one of `workers` processes (inline when workers <= 1)."""
    global _POOL
    if workers <= 1:
        yield
        return
    # forkserver: workers fork from a clean server process that has imported the library once, so they start
    # in milliseconds and never inherit the flow's threads and locks (plain fork of a threaded process can hang).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["smartmask.rebuild"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        _POOL = pool
        try:
            yield
        finally:
            _POOL = None


@task(name="plan-rebuild", cache_policy=NO_CACHE)
def plan_task(source: str, images: str, name: str, lake: Path, config: RebuildConfig) -> Plan:
    plan = plan_rebuild(source, images, name, lake, config)
    get_run_logger().info("dataset %s version %s: %d shards, %d pending, published=%s", name, plan.version,
                          len(plan.jobs), len(plan.pending()), plan.published)
    return plan


# Retries cover transient I/O (a network filesystem hiccup, a worker process lost); a deterministic bug fails
# all three attempts the same way and the flow fails with it.
@task(name="process-shard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      task_run_name="shard-{job.index}")
def shard_task(job: ShardJob) -> dict:
    if _POOL is not None:
        try:
            return _POOL.submit(process_shard, job).result()
        except BrokenProcessPool:
            # A worker died (OOM killer, a signal): the pool is unusable for every later shard, so finish
            # this one here rather than fail it three times against a dead pool.
            get_run_logger().warning("worker pool broken; processing shard %d in the flow process", job.index)
    return process_shard(job)


@task(name="publish-dataset", cache_policy=NO_CACHE)
def publish_task(plan: Plan) -> dict:
    return publish(plan)
