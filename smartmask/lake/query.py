"""Read-only DuckDB over the lake: one view per table, spanning every version.

    con = connect(lake)                  # views images, layers, rejects, vocabulary, ... (see VIEWS)
    table = run_query(lake, "SELECT name, version, count(*) FROM images GROUP BY ALL")
    print(format_table(table))

Two independent guards keep a query inside the lake and read-only:

1. `run_query` parses the SQL (`duckdb.extract_statements`) and runs only SELECT statements (and EXPLAIN of a
   SELECT); anything else (COPY, ATTACH, INSTALL, LOAD, CREATE, SET, PRAGMA, CALL, ...) raises `QueryRefused`.
2. `connect` locks the connection down once its views exist: `enable_external_access=false` with
   `allowed_directories` set to the lake folders the views read (never the lake root, so `<lake>/_staging/` stays
   invisible), no extension auto-install/auto-load, no Python replacement scans, and `lock_configuration=true`
   so no statement can undo any of it.  `read_csv('/etc/passwd')`, `read_text`, `glob('/*')` or a
   `read_parquet` of a file outside those folders then fail with DuckDB's Permission Error.

DuckDB always adds its `temp_directory` to `allowed_directories`; we point it at a fresh, not yet existing folder
under the system temp dir (DuckDB creates it only if a query spills to disk and removes it on close), so the only
extra thing a query could see is its own spill files.

Results print with `smartmask.lake.render` (`format_table`, re-exported here, and `render` for csv/json).

To add a view, add an entry to `VIEWS` (or pass `views=` to `connect`): a glob relative to the lake, the pyarrow
schema that gives the view its columns while no file exists yet, and the hive partition keys in the glob.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa

from smartmask.lake.render import format_table  # noqa: F401  (re-exported: callers print query results with it)
from smartmask.lake.schemas import (
    DATASET_TABLES,
    EVAL_ITEMS,
    EVAL_SUMMARY,
    INSERT_ITEMS,
    LAYOUT_LAYERS,
    LAYOUTS,
    MODELS,
    TRAIN_METRICS,
)


class QueryRefused(ValueError):
    """The SQL is not a read-only query over the lake, or DuckDB rejected it as bad input; one line saying why."""


class LakeView(NamedTuple):
    glob: str  # relative to the lake, e.g. "datasets/name=*/version=*/images/*.parquet"
    # the columns the view always has (NULL where older files lack them); None: whatever the files hold
    schema: pa.Schema | None
    partitions: tuple[str, ...] = ()  # hive keys in the glob, in path order; always VARCHAR


def _dataset_view(table: str, schema: pa.Schema) -> LakeView:
    return LakeView(f"datasets/name=*/version=*/{table}/*.parquet", schema, ("name", "version"))


#: View name -> where its Parquet files live.  Other modules may add entries (models, train_metrics, eval_items, ...),
#: e.g. ``VIEWS["eval_items"] = LakeView("runs/kind=eval/run=*/items/*.parquet", EVAL_ITEMS, ("kind", "run"))``.
VIEWS: dict[str, LakeView] = {table: _dataset_view(table, schema) for table, schema in DATASET_TABLES.items()}
VIEWS["models"] = LakeView("models/version=*/model.parquet", MODELS, ("version",))
VIEWS["train_metrics"] = LakeView("runs/kind=train/run=*/metrics/*.parquet", TRAIN_METRICS, ("kind", "run"))
VIEWS["insert_items"] = LakeView("runs/kind=bulk_insert/run=*/items/*.parquet", INSERT_ITEMS, ("kind", "run"))
VIEWS["eval_items"] = LakeView("runs/kind=eval/run=*/items/*.parquet", EVAL_ITEMS, ("kind", "run"))
VIEWS["eval_summary"] = LakeView("runs/kind=eval/run=*/summary.parquet", EVAL_SUMMARY, ("kind", "run"))
# Benchmark rows (bench/_results.py `record(..., lake=)`): `bench` and `at` always; each benchmark adds its own
# columns (union by name, NULL where another benchmark's row lacks them).
VIEWS["bench"] = LakeView("runs/kind=bench/run=*/items.parquet", pa.schema([("bench", pa.string()), ("at", pa.string())]),
                          ("kind", "run"))


def _folder_keyed(schema: pa.Schema, *keys: str) -> pa.Schema:
    """`schema` without the columns a hive folder key of the same name supplies (DuckDB lets the folder's value win,
    as text, so the view takes them from the partitions only)."""
    return pa.schema([f for f in schema if f.name not in keys])


# Stored layered layouts (smartmask.design.store): one row per layer / per version; `layout` and `version` (text)
# from the folders <lake>/layouts/layout=<id>/version=<n>/.
VIEWS["layout_layers"] = LakeView("layouts/layout=*/version=*/layers.parquet",
                                  _folder_keyed(LAYOUT_LAYERS, "version"), ("layout", "version"))
VIEWS["layouts"] = LakeView("layouts/layout=*/version=*/layout.parquet", _folder_keyed(LAYOUTS, "version"),
                            ("layout", "version"))

_GLOB_CHARS = set("*?[{")


def _lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _allowed_dir(lake: Path, glob: str) -> str:
    """The deepest folder of `glob` before its first wildcard, as `<lake>/.../` (never the lake root, never `_...`)."""
    parts = Path(glob).parts
    literal: list[str] = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        literal.append(part)
    if (
        not literal
        or any(p in ("..", ".") or p.startswith(("_", ".")) for p in literal)
        or Path(glob).is_absolute()
    ):
        raise ValueError(
            f"view glob {glob!r} must start with a plain lake folder (not the root, not _staging)"
        )
    return str(lake.joinpath(*literal)) + os.sep


def _duck_types(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> list[str]:
    return [str(t) for t in con.from_arrow(schema.empty_table()).types]


def _view_sql(con: duckdb.DuckDBPyConnection, lake: Path, spec: LakeView, types: list[str] | None) -> str:
    schema_cols = list(spec.schema.names) if spec.schema is not None else []
    parts = list(spec.partitions)
    # The files are listed here, by Python, and handed to DuckDB one literal each: DuckDB would read the whole path
    # as a pattern, so a lake under a folder named `runs[2]` or `a*b` would match nothing (or the wrong files).
    files = sorted(str(p) for p in lake.glob(spec.glob))
    if not files:
        cols = [f"CAST(NULL AS {t}) AS {_ident(c)}" for c, t in zip(schema_cols, types or [], strict=True)]
        cols += [f"CAST(NULL AS VARCHAR) AS {_ident(p)}" for p in parts]
        return f"SELECT {', '.join(cols) or 'NULL AS _empty'} WHERE false"
    source = (
        f"read_parquet([{', '.join(_lit(f) for f in files)}], hive_partitioning=true, union_by_name=true, "
        f"hive_types_autocast=false)"
    )
    present = con.sql(f"SELECT * FROM {source} LIMIT 0").columns
    cols = []
    for c, t in zip(schema_cols, types or [], strict=True):
        cols.append(_ident(c) if c in present else f"CAST(NULL AS {t}) AS {_ident(c)}")
    cols += [_ident(c) for c in present if c not in schema_cols and c not in parts]
    cols += [_ident(p) if p in present else f"CAST(NULL AS VARCHAR) AS {_ident(p)}" for p in parts]
    return f"SELECT {', '.join(cols)} FROM {source}"


def connect(lake: Path, views: Mapping[str, LakeView] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per entry of `views` (default `VIEWS`), locked to the lake.

    Each view spans every dataset name and version (hive columns `name`, `version`); a table with no file yet is an
    empty view with the schema's columns.  Which files exist is decided now: open a new connection to see new ones.
    Close the connection when done.
    """
    lake = Path(lake).resolve()
    views = VIEWS if views is None else views
    con = duckdb.connect(":memory:")
    try:
        allowed = sorted({_allowed_dir(lake, spec.glob) for spec in views.values()})
        types = {n: _duck_types(con, s.schema) for n, s in views.items() if s.schema is not None}
        spill = os.path.join(tempfile.gettempdir(), f"smartmask-duckdb-{uuid.uuid4().hex}")
        con.execute(f"SET temp_directory = {_lit(spill)}")
        # DuckDB draws a progress bar on stdout for queries over ~2 s; stdout is for results (`smartmask query`),
        # and the locked configuration below could not turn it off later.
        con.execute("SET enable_progress_bar = false")
        con.execute(f"SET allowed_directories = [{', '.join(_lit(d) for d in allowed)}]")
        con.execute("SET allowed_paths = []")
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET python_enable_replacements = false")
        # Views are built under the lock-down already: if they work here, they work for every query.
        for name, spec in views.items():
            con.execute(f"CREATE VIEW {_ident(name)} AS {_view_sql(con, lake, spec, types.get(name))}")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


# --- statement checks ---------------------------------------------------------------------------------------------

_EXPLAIN = re.compile(
    r"^\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*explain\s+(?:analy[sz]e\s+|\([^()]*\)\s*)?(?P<inner>.*)$",
    re.IGNORECASE | re.DOTALL,
)


def _one_line(error: BaseException) -> str:
    """DuckDB's message on one line: its first line, plus the `LINE n: ...` context without the caret line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__
    head = lines[0]
    context = next((ln for ln in lines[1:] if re.match(r"LINE \d+:", ln)), None)
    hint = next((ln for ln in lines[1:] if ln.startswith("Did you mean")), None)
    out = head + (f" {hint}" if hint else "") + (f" ({context})" if context else "")
    return out[:500]


_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)


def _first_word(text: str) -> str:
    m = re.match(r"[A-Za-z_]+", _LEADING_COMMENTS.sub("", text, count=1))
    return m.group(0).upper() if m else ""


def _is_select(text: str) -> bool:
    try:
        stmts = duckdb.extract_statements(text)
    except (duckdb.Error, ValueError):
        return False
    return len(stmts) == 1 and stmts[0].type == duckdb.StatementType.SELECT


def check_sql(sql: str) -> list[str]:
    """The statements of `sql` if every one is a SELECT (or EXPLAIN of a SELECT), else `QueryRefused`."""
    if not isinstance(sql, str):
        raise QueryRefused(f"the query must be SQL text, not {type(sql).__name__}")
    try:
        stmts = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryRefused(_one_line(e)) from None
    except ValueError:  # a statement kind the Python enum does not know (e.g. UPDATE EXTENSIONS)
        raise QueryRefused(
            "only read-only SELECT queries are allowed; this one holds another kind of statement"
        ) from None
    if not stmts:
        raise QueryRefused("empty query: give one SELECT statement")
    out = []
    for i, stmt in enumerate(stmts, 1):
        word = _first_word(stmt.query)
        try:
            kind = stmt.type
            what = kind.name.replace("_", " ")
            what = what if word in ("", what) else f"{word} ({what})"
        except ValueError:  # a statement kind the Python enum does not know (e.g. UPDATE EXTENSIONS)
            kind, what = None, word or "another kind of statement"
        ok = kind == duckdb.StatementType.SELECT
        if kind == duckdb.StatementType.EXPLAIN:
            m = _EXPLAIN.match(stmt.query)
            ok = bool(m) and _is_select(m.group("inner"))
            what = "EXPLAIN of something other than one SELECT"
        if not ok:
            where = f"statement {i} is" if len(stmts) > 1 else "this is"
            raise QueryRefused(
                f"only read-only SELECT queries (or EXPLAIN of one) are allowed; {where} {what}"
            )
        out.append(stmt.query)
    return out


# --- running --------------------------------------------------------------------------------------------------------

_BAD_INPUT = (duckdb.ProgrammingError, duckdb.DataError, duckdb.NotSupportedError, duckdb.DependencyException)


def run_query(lake: Path, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
    """The result of a read-only query over the lake's views, as a pyarrow Table.

    `params` are bound to the `?` (or `$name`) markers by DuckDB, never formatted into the text.  Several SELECT
    statements are allowed (each is bound and checked; the last one's rows are returned); parameters then are not.
    Raises `QueryRefused` (one line) for anything but a SELECT, for any attempt to read outside the lake, and for
    SQL DuckDB rejects as bad input (syntax, unknown table or column, bad cast, ...).
    """
    texts = check_sql(sql)
    bound: list[Any] | dict[str, Any] | None = None
    if params is not None:
        if len(texts) > 1:
            raise QueryRefused("parameters need a single SELECT statement")
        if isinstance(params, (str, bytes)) or not isinstance(params, (Sequence, Mapping)):
            raise QueryRefused("parameters must be a list (for ?) or a dict (for $name)")
        bound = dict(params) if isinstance(params, Mapping) else list(params)
    con = connect(lake)
    try:
        rel = None
        for i, text in enumerate(texts):
            rel = con.sql(text, params=bound if i == len(texts) - 1 else None)
        if rel is None:
            raise QueryRefused("the query returned no result")
        return rel.to_arrow_table()
    except duckdb.PermissionException as e:
        raise QueryRefused(f"the query reaches outside the lake: {_one_line(e)}") from None
    except _BAD_INPUT as e:
        raise QueryRefused(_one_line(e)) from None
    finally:
        con.close()
