"""Where things live in the lake. Hive-style `key=value` directories, so DuckDB reads every version at once with
`read_parquet('<lake>/datasets/*/*/<table>/*.parquet', hive_partitioning=true)`:

    <lake>/datasets/name=<name>/version=<version>/<table>/part-<shard>.parquet   + _manifest.json, CARD.md
    <lake>/models/version=<id>/                    a registered model (smartmask.registry)
    <lake>/runs/kind=<kind>/run=<run id>/          train / suggest / insert / bench runs
    <lake>/caption_cache/captioner=<key>/          model captions, kept across dataset versions
    <lake>/_staging/...                            work in progress; invisible to readers, renamed into place
The tables' columns are in `smartmask.lake.schemas`. Each top-level folder has one writer (the stage that owns it);
`smartmask.lake.guard` keeps every other command's output out of them.
"""

from __future__ import annotations

import os
from pathlib import Path


def lake_root(lake: str | os.PathLike | None = None) -> Path:
    """`--lake DIR`, else `$SMARTMASK_LAKE`, else `./lake`."""
    return Path(lake or os.environ.get("SMARTMASK_LAKE") or "lake").resolve()


def dataset_dir(lake: Path, name: str, version: str) -> Path:
    return lake / "datasets" / f"name={name}" / f"version={version}"


def staging_dir(lake: Path, name: str, version: str) -> Path:
    return lake / "_staging" / "datasets" / f"name={name}" / f"version={version}"


def model_dir(lake: Path, version: str) -> Path:
    return lake / "models" / f"version={version}"


def run_dir(lake: Path, kind: str, run: str) -> Path:
    return lake / "runs" / f"kind={kind}" / f"run={run}"
