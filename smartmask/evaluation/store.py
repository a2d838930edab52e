"""An evaluation run's folder in the lake: `runs/kind=eval/run=<run>/`.

  run.json        what the run is: eval set (name + content hash), model version, config (+ hash); pinned at start
  items/part-*.parquet   item rows (`EVAL_ITEMS`), committed in parts, all rows of an item in the same part
  summary.parquet aggregates, paired differences, gap (`EVAL_SUMMARY`), written when every item is in
  report.md       the Table-1 / Table-2 style report
  manifest.json   status (complete), counts, files

Resumable: a rerun reads the committed item ids and scores only the rest; an item's rows are written together, so a
kill never leaves half an item. A run name is bound to its run.json: the same name with another eval set or config
is refused (`EvalRefused`). Default run names carry the eval set, model version and config hash, so evaluating the
same version with the same settings again finds the complete run and reproduces nothing twice.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from smartmask.lake.io import write_json_atomic, write_parquet_atomic
from smartmask.lake.paths import run_dir
from smartmask.lake.schemas import EVAL_ITEMS, EVAL_SUMMARY


class EvalRefused(ValueError):
    """The run name is taken by a run of another eval set or config (one line)."""


class EvalIncomplete(RuntimeError):
    """Items are missing after the job: rerun to finish (one line)."""


def eval_run_dir(lake: Path, run: str) -> Path:
    return run_dir(Path(lake), "eval", run)


def default_run_name(eval_set: str, model_version: str | None, config_hash: str) -> str:
    return f"{eval_set}--{model_version or 'baselines'}--{config_hash[:8]}"


def start(folder: Path, record: dict) -> dict:
    """Pin the run's identity in run.json (first start) or check a rerun matches it."""
    path = folder / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        for key in ("eval_set_hash", "config_hash", "model_version"):
            if old.get(key) != record.get(key):
                raise EvalRefused(f"run {record['run']!r} exists for another {key.replace('_', ' ')} "
                                  f"({old.get(key)} != {record.get(key)}); choose another run name")
        return old
    write_json_atomic(record, path)
    return record


def part_files(folder: Path) -> list[Path]:
    return sorted((folder / "items").glob("part-*.parquet"))


def committed_items(folder: Path) -> set[str]:
    done: set[str] = set()
    for p in part_files(folder):
        done.update(pq.read_table(p, columns=["item_id"]).column("item_id").to_pylist())
    return done


def commit(folder: Path, rows: list[dict]) -> None:
    """One part file holding `rows` (whole items), atomically."""
    if rows:
        name = f"part-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet_atomic(pa.Table.from_pylist(rows, schema=EVAL_ITEMS), folder / "items" / name)


def read_items(folder: Path, columns: list[str] | None = None) -> list[dict]:
    parts = part_files(folder)
    if not parts:
        return []
    return pa.concat_tables([pq.read_table(p, columns=columns).cast(
        EVAL_ITEMS if columns is None else pa.schema([EVAL_ITEMS.field(c) for c in columns])) for p in parts]
    ).to_pylist()


def write_summary(folder: Path, rows: list[dict]) -> None:
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=EVAL_SUMMARY), folder / "summary.parquet")


def read_summary(folder: Path) -> list[dict]:
    p = folder / "summary.parquet"
    return pq.read_table(p).to_pylist() if p.exists() else []


def check_complete(folder: Path, expected_items: set[str], rows_per_item: int, run: str) -> dict:
    """Counts over the committed rows; raises EvalIncomplete unless every expected item has all its rows once."""
    rows = read_items(folder, columns=["item_id", "method", "guidance", "status"])
    per: dict[str, int] = {}
    keys = set()
    dup = 0
    for r in rows:
        k = (r["item_id"], r["method"], r["guidance"])
        dup += k in keys
        keys.add(k)
        per[r["item_id"]] = per.get(r["item_id"], 0) + 1
    missing = sorted(expected_items - set(per))
    short = sorted(i for i, n in per.items() if n != rows_per_item)
    failed = sum(r["status"] != "ok" for r in rows)
    if missing or short or dup:
        raise EvalIncomplete(f"run {run}: {len(missing)} items missing, {len(short)} with the wrong number of rows, "
                             f"{dup} duplicate rows; rerun to finish it")
    return {"items": len(per), "rows": len(rows), "ok_rows": len(rows) - failed, "failed_rows": failed}
