"""Prefect tasks for `rebuild_dataset`. The work is in `smartmask.rebuild`; these add retries and logging.

Inputs are large lists of records, so every task opts out of Prefect's input-hash caching (NO_CACHE):
hashing them would cost more than the work, and resumability comes from the shard `_done` markers instead.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from smartmask.config import RebuildConfig
from smartmask.rebuild import Plan, ShardJob, plan_rebuild, process_shard, publish


@task(name="plan-rebuild", cache_policy=NO_CACHE)
def plan_task(source: str, images: str, name: str, lake: Path, config: RebuildConfig) -> Plan:
    plan = plan_rebuild(source, images, name, lake, config)
    get_run_logger().info("dataset %s version %s: %d shards, %d pending, published=%s", name, plan.version,
                          len(plan.jobs), len(plan.pending()), plan.published)
    return plan


# Retries cover transient I/O (a network filesystem hiccup); a deterministic bug fails all three the same way.
@task(name="process-shard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      task_run_name="shard-{job.index}")
def shard_task(job: ShardJob) -> dict:
    return process_shard(job)


@task(name="publish-dataset", cache_policy=NO_CACHE)
def publish_task(plan: Plan) -> dict:
    return publish(plan)
