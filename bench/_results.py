"""Where every benchmark records its result: a JSON file in bench/results/ and, with `--lake`, a row in the lake's
`runs/kind=bench/` so the dashboard can show benchmarks over versions."""

from __future__ import annotations

import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def record(name: str, row: dict, lake: str | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    row = {"bench": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} | row
    out = HERE / "results" / f"{name}-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(row, indent=2))
    if lake:
        import pyarrow as pa

        from smartmask.lake.io import write_parquet_atomic

        write_parquet_atomic(pa.Table.from_pylist([row]),
                             Path(lake).resolve() / "runs" / "kind=bench" / f"run={name}-{stamp}" / "items.parquet")
    print(f"wrote {out}")
    return out
