"""How the lake's tables print: `format_table` for people, `render` for the `--format` every listing command takes.

`table` is aligned text (truncated to `max_rows`, with a row count at the end). `csv` and `json` are for programs and
hold every row and nothing else: csv is a header and RFC 4180 quoted rows (NULL is an empty field, lists and structs
are JSON text, floats keep full precision); json is one array of row objects (NULL, NaN and infinities are null,
bytes are hex strings, dates ISO 8601).
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
from typing import Any

import pyarrow as pa


def _cell(value: Any, width: int) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (bytes, bytearray)):
        text = "\\x" + bytes(value[: width // 2]).hex()
    else:
        text = str(value)
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(table: pa.Table, max_rows: int = 50, max_width: int = 40) -> str:
    """`table` as aligned text: header, rule, up to `max_rows` rows (numbers right-aligned), and a row count."""
    n = table.num_rows
    shown = min(n, max(0, max_rows))
    footer = f"({n} row{'s' if n != 1 else ''})" if shown == n else f"({shown} of {n} rows shown)"
    if table.num_columns == 0:
        return footer
    columns = []
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        values = col.slice(0, shown).to_pylist()
        numeric = (
            pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type)
        )
        cells = [_cell(v, max_width) for v in values]
        header = _cell(name, max_width)
        width = max([len(header), *map(len, cells)])
        just = str.rjust if numeric else str.ljust
        columns.append(([just(header, width)], "-" * width, [just(c, width) for c in cells]))
    lines = [" | ".join(h[0] for h, _, _ in columns).rstrip(), "-+-".join(r for _, r, _ in columns)]
    for row in range(shown):
        lines.append(" | ".join(c[row] for _, _, c in columns).rstrip())
    lines.append(footer)
    return "\n".join(lines)


FORMATS = ("table", "csv", "json")


def _plain(value: Any) -> Any:
    """A cell as a JSON-safe Python value (nested lists and structs kept as lists and objects)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # a MAP comes back as (key, value) tuples: they become [key, value]
        return [_plain(v) for v in value]
    return value


def format_json(table: pa.Table) -> str:
    """Every row as a JSON array of objects keyed by column name."""
    rows = [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]
    return json.dumps(rows, ensure_ascii=False, allow_nan=False)


def _csv_cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    return repr(value) if isinstance(value, float) else str(value)


def format_csv(table: pa.Table) -> str:
    """A header line and every row, quoted where a cell holds a comma, a quote or a line break (RFC 4180)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow([_csv_cell(row[c]) for c in table.column_names])
    return buf.getvalue().removesuffix("\n")


def render(table: pa.Table, fmt: str = "table", max_rows: int = 50) -> str:
    """`table` in one of `FORMATS`; `max_rows` limits the table form only (the other two are for programs)."""
    if fmt == "csv":
        return format_csv(table)
    if fmt == "json":
        return format_json(table)
    if fmt == "table":
        return format_table(table, max_rows=max_rows)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
