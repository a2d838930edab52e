"""A bulk job's work rows: the `WORK` schema every stage reads and writes, and the small helpers on one row.

A work row carries the canonical item (JSON) and whatever the stages so far produced: pixels as raw bytes
(H, W, 3 uint8), masks as packed bits or RLE, the layout and suggestions as JSON. A rejected row keeps no pixels.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

WORK = pa.schema([
    ("row_key", pa.string()), ("line", pa.int64()), ("item", pa.string()), ("status", pa.string()),
    ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("image_sha256", pa.string()),
    ("height", pa.int32()), ("width", pa.int32()), ("image", pa.binary()), ("alpha", pa.binary()),
    ("scribble", pa.binary()), ("layout", pa.string()), ("suggestions", pa.string()), ("chosen_rank", pa.int32()),
    ("inserted", pa.binary()), ("inserted_alpha", pa.binary()), ("dilated", pa.binary()), ("insert", pa.string()),
    ("timings", pa.string()),
])  # fmt: skip


def work_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{k: r.get(k) for k in WORK.names} for r in rows], schema=WORK)


def reject_row(row: dict, stage: str, reason: str, detail: str) -> dict:
    row.update(status="rejected", stage=stage, reason=reason, detail=" ".join(str(detail).split())[:500])
    for k in ("image", "alpha", "scribble", "inserted", "inserted_alpha", "dilated"):
        row[k] = None  # a reject carries no pixels through the remaining stages
    return row


def add_timing(row: dict, stage: str, seconds: float) -> None:
    t = json.loads(row.get("timings") or "{}")
    t[stage] = round(seconds, 6)
    row["timings"] = json.dumps(t)



def image_of(row: dict) -> np.ndarray:
    return np.frombuffer(row["image"], np.uint8).reshape(row["height"], row["width"], 3)


def unpack_bits(data: bytes, H: int, W: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, np.uint8), count=H * W).reshape(H, W).astype(bool)


