"""Flow `rebuild_dataset`: ingest → validate → order → caption → publish, one Prefect task per shard.

Shard tasks run concurrently on threads and hand their CPU work to a process pool (`tasks.rebuild.shard_processes`).
Captioning is one task; with a model captioner it fans out over Ray Data, and Ray is started here for it
(`ray_address` joins an existing cluster).
`python -m flows.rebuild_dataset --source cocoa:FILE --images DIR --name NAME [--lake DIR]`.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from smartmask.config import RebuildConfig
from smartmask.lake.paths import lake_root
from tasks.captions import caption_task
from tasks.rebuild import plan_task, publish_task, shard_processes, shard_task


@flow(name="rebuild_dataset", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=16))
def rebuild_dataset(source: str, images: str, name: str, lake: str | None = None,
                    config: RebuildConfig | None = None, ray_address: str | None = None) -> dict:
    config = config or RebuildConfig()
    plan = plan_task(source, images, name, lake_root(lake), config)  # called inline: the plan stays in-process
    if not plan.published:
        pending = plan.pending()
        with shard_processes(min(config.workers, len(pending))):
            # quote(): Prefect would otherwise walk every record of a job looking for upstream futures (seconds).
            for future in [shard_task.submit(quote(job)) for job in pending]:
                future.result()  # raises if a shard failed after its retries: nothing is published
        if config.captioner == "template":
            caption_task(quote(plan))
        else:
            from flows.ray_runtime import ray_session

            with ray_session(address=ray_address):
                caption_task(quote(plan))
    return publish_task(quote(plan))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--lake")
    a = ap.parse_args()
    print(rebuild_dataset(a.source, a.images, a.name, a.lake)["version"])
