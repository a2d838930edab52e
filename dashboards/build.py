"""Build the dashboard: one self-contained HTML file over a lake.

    summary = build_dashboard(lake, lake / "dashboard.html")   # {"out", "panels", "rows", "bytes", "seconds", ...}

One read-only DuckDB connection (`smartmask.lake.query.connect`) runs every `sql/*.sql` file; DuckDB computes every
aggregate and the page only draws them. The results are embedded as JSON in `<script type="application/json">`,
made safe for that context (`<`, `>`, `&`, U+2028 and U+2029 written as \\uXXXX escapes, so no data string can close
the element or start markup), next to plotly.js (`plotly.offline.get_plotlyjs()`), the page script and its style,
all inlined. The Content-Security-Policy lets the page run exactly those two scripts (by their sha256) and load
nothing at all: no network, no other script, images only from `data:` URIs. The file is written to a temporary
name beside `out` and renamed into place.

Raw item rows never reach the page: only aggregates, the thumbnails of a small gallery sample (`gallery`) and a few
bulk-run outputs per run.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from dashboards.gallery import Pictures, bulk_samples, gallery_entries
from smartmask.lake.io import write_bytes_atomic

HERE = Path(__file__).resolve().parent
SQL_DIR = HERE / "sql"
TRAIN_POINTS = 400  # points per training curve
THROUGHPUT_POINTS = 120  # time buckets per bulk run
SAMPLES_PER_RUN = 6  # bulk outputs shown per run
MAX_SAMPLE_RUNS = 12  # ... of the newest runs
CARD_CHARS = 20_000

#: panel → the tables it draws (its `data-rows` is their row count; the gallery's: its entries)
PANELS: dict[str, tuple[str, ...]] = {
    "models": ("models", "eval_aggregate"),
    "compare": ("eval_paired", "eval_paired_stored"),
    "breakdown": ("eval_breakdown",),
    "trends": ("eval_aggregate",),
    "training": ("train_curves",),
    "lineage": ("lineage", "eval_runs"),
    "datasets": ("datasets", "dataset_stats", "dataset_classes", "dataset_rejects"),
    "bulk": ("bulk_runs", "bulk_throughput", "bulk_rejects"),
    "bench": ("bench_records", "bench_figures"),
    "gallery": (),
}
#: the queries whose result is embedded as a table (the gallery's and the samples' rows become pictures first)
TABLE_QUERIES = ("models", "eval_aggregate", "eval_breakdown", "eval_paired", "eval_paired_stored", "eval_runs",
                 "train_curves", "lineage", "dataset_stats", "dataset_classes", "dataset_rejects", "bulk_runs",
                 "bulk_throughput", "bulk_rejects", "bench_records", "bench_figures")

_JSON_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def sql_text(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def run_sql(con, name: str, params: dict[str, Any] | None = None) -> pa.Table:
    """The result of `sql/<name>.sql` on `con`; only the `$name` parameters the file uses are bound."""
    text = sql_text(name)
    used = set(_PARAM.findall(text))
    bound = {k: v for k, v in (params or {}).items() if k in used}
    missing = used - set(bound)
    if missing:
        raise ValueError(f"sql/{name}.sql needs parameters {sorted(missing)}")
    return con.sql(text, params=bound or None).to_arrow_table()


def _float(v: float) -> float | None:
    return float(f"{v:.7g}") if math.isfinite(v) else None


def _plain(v: Any) -> Any:
    """A JSON-able copy of a query value: non-finite floats become null, floats keep 7 significant digits (the page
    draws them; the file stays small), decimals and times become floats and ISO strings."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, decimal.Decimal):
        return _plain(float(v))
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, bytes):
        return base64.b64encode(v).decode("ascii")
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v)


def _column(col: pa.ChunkedArray) -> list:
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
        return col.to_pylist()  # already JSON-able: skip the per-value walk (a quarter of a million values here)
    if pa.types.is_floating(t):
        return [None if v is None else _float(v) for v in col.to_pylist()]
    return [_plain(v) for v in col.to_pylist()]


def columnar(table: pa.Table) -> dict:
    """{"columns": [...], "rows": [[...], ...]}: a table as the page reads it."""
    cols = [_column(table.column(i)) for i in range(table.num_columns)]
    return {"columns": list(table.column_names), "rows": [list(r) for r in zip(*cols, strict=True)]}


def safe_json(data: Any) -> str:
    """`data` as JSON that can sit inside an HTML <script> element: no `<`, `>`, `&`, U+2028, U+2029 in the text."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_UNSAFE[m.group(0)], text)


def _sha256(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(*scripts: str) -> str:
    """Nothing may load and no script may run but the page's own inline ones (by hash; inline event handlers,
    `javascript:` URLs and injected scripts stay blocked); styles inline; images only as data: URIs."""
    return ("default-src 'none'; script-src " + " ".join(_sha256(s) for s in scripts)
            + "; style-src 'unsafe-inline'; img-src data:; font-src 'none'; connect-src 'none'; "
              "object-src 'none'; base-uri 'none'; form-action 'none'")


def _catalog_rows(lake: Path, warnings: list[str]) -> dict:
    from smartmask.lake.catalog import CatalogError, list_datasets

    try:
        return columnar(list_datasets(lake))
    except CatalogError as e:  # a damaged manifest: the rest of the page still builds
        warnings.append(f"dataset catalog unreadable: {' '.join(str(e).split())}")
        return {"columns": [], "rows": []}


def _cards(lake: Path) -> dict:
    """Each dataset version's CARD.md as text (the page shows it in a <pre>, as text), name and version taken from
    the folder names."""
    rows = []
    for card in sorted(lake.glob("datasets/name=*/version=*/CARD.md")):
        try:
            text = card.read_text(encoding="utf-8", errors="replace")[:CARD_CHARS]
        except OSError:
            continue
        rows.append([card.parent.parent.name.removeprefix("name="), card.parent.name.removeprefix("version="), text])
    return {"columns": ["name", "version", "text"], "rows": rows}


def render_page(data: dict) -> str:
    """The page's HTML around `data` (the JSON-able payload)."""
    import plotly.offline

    plotly_js = plotly.offline.get_plotlyjs()
    app_js = (HERE / "page.js").read_text(encoding="utf-8")
    parts = {"csp": content_security_policy(plotly_js, app_js), "style": (HERE / "page.css").read_text(encoding="utf-8"),
             "data": safe_json(data), "plotly": plotly_js, "app": app_js}
    for name in ("style", "plotly", "app"):
        if re.search(r"</(script|style)", parts[name], re.IGNORECASE):
            raise ValueError(f"the inlined {name} holds a closing tag")
    template = (HERE / "template.html").read_text(encoding="utf-8")
    # one pass, so a placeholder-like text inside an inlined part is never substituted
    return re.sub(r"\{\{(csp|style|data|plotly|app)\}\}", lambda m: parts[m.group(1)], template)


def collect(lake: Path, *, gallery: int = 24) -> tuple[dict, dict]:
    """(the page's data, timings): every query's result, the catalog and cards, the gallery and samples."""
    from smartmask.lake.query import connect

    lake = Path(lake).resolve()
    warnings: list[str] = []
    timings: dict[str, float] = {}
    params = {"points": TRAIN_POINTS, "per_run": SAMPLES_PER_RUN, "gallery": max(0, int(gallery))}
    t = time.perf_counter()
    con = connect(lake)
    timings["connect"] = time.perf_counter() - t
    try:
        results: dict[str, pa.Table] = {}
        for name in TABLE_QUERIES:
            t = time.perf_counter()
            p = dict(params, points=THROUGHPUT_POINTS) if name == "bulk_throughput" else params
            results[name] = run_sql(con, name, p)
            timings[name] = time.perf_counter() - t
        t = time.perf_counter()
        gallery_table = run_sql(con, "gallery", params) if gallery > 0 else None
        samples_table = run_sql(con, "bulk_samples", params)
        timings["gallery"] = time.perf_counter() - t
    finally:
        con.close()
    t = time.perf_counter()
    tables = {name: columnar(table) for name, table in results.items()}
    bulk = tables["bulk_runs"]
    last = bulk["columns"].index("last_at")
    newest = {r[0] for r in sorted(bulk["rows"], key=lambda r: str(r[last] or ""), reverse=True)[:MAX_SAMPLE_RUNS]}
    sample_rows = [r for r in samples_table.to_pylist() if r["run"] in newest]
    gallery_rows = gallery_table.to_pylist() if gallery_table is not None else []
    tables["datasets"] = _catalog_rows(lake, warnings)
    tables["cards"] = _cards(lake)
    pictures = Pictures(lake)
    entries = gallery_entries(pictures, gallery_rows)
    samples = bulk_samples(pictures, sample_rows)
    timings["pictures"] = time.perf_counter() - t  # and the tables made JSON-able
    panels = {p: {"tables": list(names), "rows": sum(len(tables[n]["rows"]) for n in names)}
              for p, names in PANELS.items()}
    panels["gallery"]["rows"] = len(entries)
    panels["bulk"]["rows"] += len(samples)
    data = {
        "meta": {"lake": str(lake), "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "warnings": warnings},
        "panels": panels,
        "tables": tables,
        "gallery": _plain(entries),
        "bulk_samples": _plain(samples),
    }
    return data, timings


def build_dashboard(lake: Path, out: Path, *, gallery: int = 24) -> dict:
    """Write the dashboard of `lake` to `out` (atomically) and return a summary: out, panels (panel → rows drawn),
    rows (table → rows), gallery (entries), bytes, seconds (all of it), sql_seconds (DuckDB: connect and every
    query), timings (per query; "pictures": the thumbnails and the tables made JSON-able), warnings."""
    start = time.perf_counter()
    data, timings = collect(lake, gallery=gallery)
    page = render_page(data).encode("utf-8")
    write_bytes_atomic(page, Path(out))
    size = len(page)
    return {
        "out": str(out),
        "panels": {p: v["rows"] for p, v in data["panels"].items()},
        "rows": {name: len(t["rows"]) for name, t in data["tables"].items()},
        "gallery": len(data["gallery"]),
        "bytes": size,
        "seconds": round(time.perf_counter() - start, 3),
        "sql_seconds": round(sum(v for k, v in timings.items() if k != "pictures"), 3),  # connect + every query
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "warnings": data["meta"]["warnings"],
    }
