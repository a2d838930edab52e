"""Flow `rebuild_dataset`: ingest → validate → order → caption → publish, one Prefect task per shard.

Shard tasks run concurrently on threads and hand their CPU work to a process pool (`tasks.rebuild.shard_processes`).
Captioning is one task; with a model captioner it fans out over Ray Data, and Ray is started here for it
(`ray_address` joins an existing cluster).

One run at a time writes a (dataset, version): the flow holds the version's lake lock from the first shard to the
publish. A second run of the same input waits up to `lock_wait_s` for it, then fails with `LockHeld` naming the
holder (the CLI's exit 2); a run that finds the version published meanwhile returns its manifest.
`python -m flows.rebuild_dataset --source cocoa:FILE --images DIR --name NAME [--lake DIR]`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.futures import as_completed, wait
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from smartmask.config import RebuildConfig
from smartmask.lake.locks import LockHeld, lake_lock
from smartmask.lake.paths import lake_root
from smartmask.progress import Progress
from smartmask.publish import NoAcceptedRecords, PublishRefused, published_manifest, require_accepted
from smartmask.rebuild import describe
from smartmask.rebuild_plan import Plan
from tasks.captions import caption_task
from tasks.rebuild import plan_task, publish_task, shard_processes, shard_task


def _run_shards(plan: Plan) -> None:
    pending = plan.pending()
    if not pending:
        return
    done = len(plan.jobs) - len(pending)
    with shard_processes(min(plan.config.workers, len(pending))), \
            Progress(f"rebuild {plan.name}", total=len(plan.jobs), unit="shards", initial=done) as bar:
        images = rejected = 0
        # quote(): Prefect would otherwise walk every record of a job looking for upstream futures (seconds).
        futures = [shard_task.submit(quote(job)) for job in pending]
        try:
            for future in as_completed(futures):
                stats = future.result()  # raises if a shard failed after its retries: nothing is published
                images += stats.get("image_accepted", 0)
                rejected += stats.get("image_rejected", 0)
                bar.advance(1, images=images, rejected=rejected)
        finally:
            wait(futures)  # no shard still writing once this returns or raises: the lock is released after it


@flow(name="rebuild_dataset", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=16))
def rebuild_dataset(source: str, images: str, name: str, lake: str | None = None,
                    config: RebuildConfig | None = None, ray_address: str | None = None,
                    lock_wait_s: float = 0.0) -> dict:
    config = config or RebuildConfig()
    plan = plan_task(source, images, name, lake_root(lake), config)  # called inline: the plan stays in-process
    try:
        return _rebuild(plan, ray_address, lock_wait_s)
    except (LockHeld, NoAcceptedRecords, PublishRefused) as e:
        # Expected outcomes, not bugs: the run fails with their one line (the caller gets the exception back)
        # instead of a logged traceback.
        return Failed(message=str(e), data=e)


def _rebuild(plan: Plan, ray_address: str | None, lock_wait_s: float) -> dict:
    config = plan.config
    if not plan.published:
        with lake_lock(plan.lake, "rebuild", plan.lock_key, wait_s=lock_wait_s, what=describe(plan)) as stale:
            if stale:
                get_run_logger().warning("took over the lock of a run that died (pid %s on %s, started %s)",
                                         stale.get("pid"), stale.get("host"), stale.get("started"))
            if not plan.published:  # another run may have published it while we waited for the lock
                _run_shards(plan)
                if config.captioner == "template":
                    caption_task(quote(plan))
                else:
                    from flows.ray_runtime import ray_session

                    with ray_session(address=ray_address):
                        caption_task(quote(plan))
                publish_task(quote(plan))
    return require_accepted(published_manifest(plan))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--lake")
    a = ap.parse_args()
    print(rebuild_dataset(a.source, a.images, a.name, a.lake)["version"])
