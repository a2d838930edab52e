"""Flow `rebuild_dataset`: ingest → validate → order → publish, one Prefect task per shard.

Shards run in a process pool (the work is CPU-bound pycocotools/numpy; threads would share one core).
`python -m flows.rebuild_dataset --source cocoa:FILE --images DIR --name NAME [--lake DIR]`.
"""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ProcessPoolTaskRunner

from smartmask.config import RebuildConfig
from smartmask.lake.layout import lake_root
from tasks.rebuild import plan_task, publish_task, shard_task


@flow(name="rebuild_dataset", log_prints=True)
def rebuild_dataset(source: str, images: str, name: str, lake: str | None = None,
                    config: RebuildConfig | None = None) -> dict:
    config = config or RebuildConfig()
    plan = plan_task(source, images, name, lake_root(lake), config)  # called inline: the plan stays in-process
    if plan.published:
        return publish_task(plan)
    pending = plan.pending()
    if config.workers > 1 and len(pending) > 1:
        with ProcessPoolTaskRunner(max_workers=min(config.workers, len(pending))) as runner:
            futures = [runner.submit(shard_task, {"job": job}) for job in pending]
            for f in futures:
                f.result()
    else:
        for job in pending:
            shard_task(job)
    return publish_task(plan)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--lake")
    a = ap.parse_args()
    m = rebuild_dataset(a.source, a.images, a.name, a.lake)
    print(m["version"])
