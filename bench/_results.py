"""Where every benchmark records its result: a JSON file in bench/results/ and, with `--lake`, a row in the lake's
`runs/kind=bench/` so the dashboard can show benchmarks over versions.

Every record carries the code it measured and the machine it ran on, added here unless the benchmark set them:
- `code_version`: `git rev-parse --short HEAD`, with `-dirty` when tracked files differ from that commit; without
  git (or outside a checkout) `smartmask.DATA_CODE_VERSION`, else "unknown".
- `machine`: platform, CPU model (/proc/cpuinfo), cores, memory in GiB, GPU name(s) when torch sees CUDA, host.
In the lake row `machine` is flattened to `machine_<key>` columns, so the `bench` view can filter on them.

`python bench/render_results.py` turns bench/results/*.json into bench/RESULTS.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@contextlib.contextmanager
def work_folder(given: str | None, prefix: str) -> Iterator[Path]:
    """The benchmark's working folder: `given` (created if missing and kept, so a rerun reuses what it holds), else
    a temporary folder removed on exit."""
    if given:
        work = Path(given).resolve()
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recording(smoke: bool, no_record: bool) -> bool:
    """Whether a run should write its record; says why not (a smoke run measures nothing, --no-record is a trial)."""
    if smoke:
        print("(smoke, not a measurement: no record written)")
    elif no_record:
        print("(--no-record: no record written)")
    return not (smoke or no_record)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20,
                          check=True).stdout.strip()


def code_version() -> str:
    """The commit this checkout is at (`-dirty` when tracked files are modified), else DATA_CODE_VERSION."""
    try:
        sha = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        if sha:
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from smartmask import DATA_CODE_VERSION

        return DATA_CODE_VERSION
    except ImportError:
        return "unknown"


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def _gpu() -> str | None:
    """The CUDA device name(s) torch sees ("2x NVIDIA H100 80GB HBM3"), None without torch or CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch, a broken driver: the record still gets written
        return None
    if len(names) <= 1:
        return names[0] if names else None
    return f"{len(names)}x {names[0]}" if len(set(names)) == 1 else ", ".join(names)


def machine() -> dict:
    """What the benchmark ran on. Always the same keys (None where unknown)."""
    return {"platform": platform.platform(), "cpu": _cpu_model(), "cores": os.cpu_count(),
            "memory_gib": _memory_gib(), "gpu": _gpu(), "host": platform.node() or None}


def _lake_table(row: dict):
    """The lake row: `machine` flattened to machine_* columns; all-null columns typed as strings, so the `bench`
    view's union by name never meets an untyped column."""
    import pyarrow as pa

    flat = {k: v for k, v in row.items() if k != "machine"}
    if isinstance(row.get("machine"), dict):
        flat |= {f"machine_{k}": v for k, v in row["machine"].items()}
    table = pa.Table.from_pylist([flat])
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type):
            table = table.set_column(i, f.name, pa.array([None] * table.num_rows, pa.string()))
    return table


def record(name: str, row: dict, lake: str | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    row = {"bench": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} | row
    row.setdefault("code_version", code_version())
    row.setdefault("machine", machine())
    out = HERE / "results" / f"{name}-{stamp}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    if lake:
        from smartmask.lake.io import write_parquet_atomic

        write_parquet_atomic(_lake_table(row),
                             Path(lake).resolve() / "runs" / "kind=bench" / f"run={name}-{stamp}" / "items.parquet")
    print(f"wrote {out}")
    return out
