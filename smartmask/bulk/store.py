"""A bulk run's folder in the lake, and how rows get into it exactly once.

    <lake>/runs/kind=bulk_insert/run=<name>/
        run.json                 what the run is (catalog path and sha256, config, config hash): fixed at first start
        items/part-*.parquet     committed `insert_items` rows (the view `insert_items`)
        outputs/<k[:2]>/<k>/     each inserted item's PNGs (smartmask.bulk.write)
        manifest.json            counts, configs, code version, model lineage; status complete | incomplete

Exactly once: the driver commits rows (`Committer`) only after the write stage returned them, i.e. after their
files are complete; a part file is renamed into place whole. A rerun reads the committed keys
(`committed_keys`) and the reader skips them; rows that reach the driver twice (a Ray task retried after its
output was delivered) are dropped by key. The run is marked complete only when the committed rows number the
catalog's rows exactly and no key appears twice (`finish`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from smartmask.lake.io import write_json_atomic, write_parquet_atomic
from smartmask.lake.paths import run_dir
from smartmask.lake.schemas import INSERT_ITEMS

KIND = "bulk_insert"


class BulkRefused(ValueError):
    """This run name is taken by a different catalog or config; one line."""


class BulkIncomplete(RuntimeError):
    """The committed rows do not account for the catalog exactly; one line with the counts."""


def bulk_run_dir(lake: Path, run: str) -> Path:
    return run_dir(lake, KIND, run)


def start_record(folder: Path, record: dict) -> dict:
    """Write run.json on the first start; on a rerun require the same catalog content and config hash."""
    path = folder / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        for key, what in (("catalog_sha256", "catalog"), ("config_hash", "config")):
            if old.get(key) != record.get(key):
                raise BulkRefused(f"run {folder.name.removeprefix('run=')} was started with a different {what} "
                                  f"({key} {old.get(key)} != {record.get(key)}): choose another --out name")
        return old
    write_json_atomic(record, path)
    return record


def sweep_temp_files(folder: Path) -> int:
    """Remove the temp files a killed attempt left mid-write (`.<name>.tmp…`: never a final name, never read);
    returns how many. Walks the run folder once per start."""
    n = 0
    if folder.exists():
        for p in folder.rglob(".*.tmp*"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def part_files(folder: Path) -> list[Path]:
    return sorted((folder / "items").glob("part-*.parquet"))


def committed_keys(folder: Path) -> set[str]:
    keys: set[str] = set()
    for part in part_files(folder):
        keys.update(pq.read_table(part, columns=["item_key"]).column("item_key").to_pylist())
    return keys


class Committer:
    """Buffers final rows and commits them as Parquet parts: every `every` rows, every `every_s` seconds, and at
    `close`. Rows whose key this attempt already committed are dropped (counted in `duplicates_dropped`); keys of
    earlier attempts never arrive (the reader skips them), and `finish` counts any duplicate that slipped by."""

    def __init__(self, folder: Path, every: int = 256, every_s: float = 10.0):
        self.folder, self.every, self.every_s = folder, every, every_s
        self._buf: list[dict] = []
        self._keys: set[str] = set()  # this attempt's keys: 32 hex chars each
        self._last = time.monotonic()
        self.inserted = self.rejected = self.duplicates_dropped = 0
        self.reasons: Counter = Counter()

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            if r["item_key"] in self._keys:
                self.duplicates_dropped += 1
                continue
            self._keys.add(r["item_key"])
            self._buf.append(r)
            if r["status"] == "inserted":
                self.inserted += 1
            else:
                self.rejected += 1
                self.reasons[r["reject_reason"]] += 1
        if len(self._buf) >= self.every or (self._buf and time.monotonic() - self._last >= self.every_s):
            self.flush()

    def flush(self) -> None:
        if self._buf:
            table = pa.Table.from_pylist(self._buf, schema=INSERT_ITEMS)
            name = f"part-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
            write_parquet_atomic(table, self.folder / "items" / name)
            self._buf = []
        self._last = time.monotonic()

    close = flush


def run_counts(folder: Path) -> dict:
    """inserted / rejected / by reason / duplicate keys over every committed part (DuckDB, out of core)."""
    import duckdb

    parts = [str(p) for p in part_files(folder)]
    if not parts:
        return {"inserted": 0, "rejected": 0, "rejects_by_reason": {}, "duplicate_keys": 0, "rows": 0}
    con = duckdb.connect()
    groups = con.execute("SELECT status, reject_reason, count(*) AS n FROM read_parquet(?) GROUP BY ALL "
                         "ORDER BY n DESC, reject_reason", [parts]).fetchall()
    by: dict[str, int] = {}
    for status, _, n in groups:
        by[status] = by.get(status, 0) + n
    reasons = {reason: n for status, reason, n in groups if status == "rejected"}
    rows, distinct = con.execute("SELECT count(*), count(DISTINCT item_key) FROM read_parquet(?)", [parts]).fetchone()
    con.close()
    return {"inserted": by.get("inserted", 0), "rejected": by.get("rejected", 0), "rejects_by_reason": reasons,
            "duplicate_keys": rows - distinct, "rows": rows}


def finish(folder: Path, catalog_rows: int, record: dict, attempt: dict) -> dict:
    """The manifest: counts from the committed rows, checked against the catalog before the run is complete."""
    counts = run_counts(folder)
    complete = counts["duplicate_keys"] == 0 and counts["rows"] == catalog_rows
    old = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else {}
    manifest = record | {
        "status": "complete" if complete else "incomplete", "in": catalog_rows, "inserted": counts["inserted"],
        "rejected": counts["rejected"], "rejects_by_reason": counts["rejects_by_reason"],
        "duplicate_keys": counts["duplicate_keys"], "attempts": [*old.get("attempts", []), attempt],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(manifest, folder / "manifest.json")
    if not complete:
        raise BulkIncomplete(
            f"run {record['run']}: {counts['rows']} rows committed ({counts['inserted']} inserted + "
            f"{counts['rejected']} rejected, {counts['duplicate_keys']} duplicate keys) for {catalog_rows} catalog "
            "rows; rerun to finish it (a catalog edited since the first start needs a new run name)")
    return manifest
