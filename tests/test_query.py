"""Read-only DuckDB views over the lake (smartmask.lake.query)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smartmask.lake.paths import dataset_dir, staging_dir
from smartmask.lake.query import QueryRefused, connect, format_table, run_query
from smartmask.lake.schemas import DATASET_TABLES, IMAGES, LAYERS, REJECTS, VOCABULARY

VERSIONS = ("v1", "v2")


def _rows(table: str, version: str) -> list[dict]:
    if table == "images":
        return [
            {
                "image_id": f"{version}-img{i}",
                "file_name": f"{i}.png",
                "width": 64,
                "height": 48,
                "split": "train",
            }
            for i in range(2)
        ]
    if table == "layers":
        return [
            {
                "image_id": f"{version}-img0",
                "layer": k,
                "label": lbl,
                "bbox": [0.0, 1.0, 2.0, 3.0],
                "area": 10 * (k + 1),
            }
            for k, lbl in enumerate(["sky", "tree", "dog"])
        ]
    if table == "rejects":
        return [{"source": "cocoa", "record_kind": "region", "stage": "validate", "reason": "empty_mask"}]
    if table == "vocabulary":
        return [{"label_id": 1, "label": "dog", "is_stuff": False, "r": 255, "g": 0, "b": 0, "instances": 3}]
    if table == "captions":
        return [{"image_id": f"{version}-img0", "captioner": "template@1", "caption": "a dog in front of a tree"}]
    if table == "stats":
        return [{"section": "summary", "key": "images", "value": 2.0}]
    raise AssertionError(table)


def _write(folder: Path, table: str, rows: list[dict], schema: pa.Schema) -> Path:
    (folder / table).mkdir(parents=True, exist_ok=True)
    path = folder / table / "part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    for version in VERSIONS:
        for table, schema in DATASET_TABLES.items():
            if table == "images" and version == "v1":
                # an older writer without the last column: the view still has it, NULL here
                schema = pa.schema([f for f in IMAGES if f.name != "source_caption"])
            _write(dataset_dir(lake, "toy", version), table, _rows(table, version), schema)
    # work in progress, never visible
    _write(staging_dir(lake, "toy", "v3"), "images", [{"image_id": "staged-img"}], IMAGES)
    # outside the lake
    pq.write_table(pa.table({"secret": ["outside"]}), tmp_path / "outside.parquet")
    return lake


# --- reading ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", sorted(DATASET_TABLES))
def test_every_table_spans_every_version(lake: Path, table: str) -> None:
    result = run_query(
        lake, f"SELECT name, version, count(*) AS n FROM {table} GROUP BY ALL ORDER BY version"
    )
    expected = len(_rows(table, "v1"))
    assert result.to_pylist() == [{"name": "toy", "version": v, "n": expected} for v in VERSIONS]
    cols = run_query(lake, f"SELECT * FROM {table} LIMIT 0").column_names
    assert cols == [*DATASET_TABLES[table].names, "name", "version"]


def test_values_and_schema_evolution(lake: Path) -> None:
    layers = run_query(
        lake, "SELECT label, layer, bbox, area FROM layers WHERE version = 'v2' ORDER BY layer"
    )
    assert layers.column("label").to_pylist() == ["sky", "tree", "dog"]
    assert layers.column("bbox").to_pylist()[0] == [0.0, 1.0, 2.0, 3.0]
    assert layers.schema.field("layer").type == pa.int32()
    caption = run_query(
        lake, "SELECT version, count(source_caption) AS c, count(*) AS n FROM images GROUP BY ALL ORDER BY 1"
    )
    assert caption.to_pylist() == [{"version": "v1", "c": 0, "n": 2}, {"version": "v2", "c": 0, "n": 2}]
    vocab = run_query(lake, "SELECT r, is_stuff FROM vocabulary LIMIT 1")
    assert vocab.schema.field("r").type == pa.uint8() and vocab.to_pylist() == [{"r": 255, "is_stuff": False}]


def test_version_that_looks_numeric_stays_text(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    _write(dataset_dir(lake, "toy", "20240101"), "rejects", _rows("rejects", "x"), REJECTS)
    result = run_query(lake, "SELECT name, version FROM rejects")
    assert result.schema.field("version").type == pa.string()
    assert result.to_pylist() == [{"name": "toy", "version": "20240101"}]


@pytest.mark.parametrize("exists", [False, True])
def test_empty_lake_has_empty_views(tmp_path: Path, exists: bool) -> None:
    lake = tmp_path / "lake"
    if exists:
        (lake / "datasets").mkdir(parents=True)
        _write(staging_dir(lake, "toy", "v1"), "layers", [{"image_id": "staged"}], LAYERS)
    con = connect(lake)
    try:
        names = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
        assert set(DATASET_TABLES) <= names
    finally:
        con.close()
    for table, schema in DATASET_TABLES.items():
        result = run_query(lake, f"SELECT * FROM {table}")
        assert result.num_rows == 0
        assert result.column_names == [*schema.names, "name", "version"]
    types = run_query(lake, "SELECT * FROM vocabulary").schema
    assert types.field("label_id").type == VOCABULARY.field("label_id").type
    assert types.field("version").type == pa.string()


def test_staging_is_invisible(lake: Path) -> None:
    ids = run_query(lake, "SELECT image_id FROM images").column("image_id").to_pylist()
    assert len(ids) == 4 and "staged-img" not in ids
    assert run_query(lake, "SELECT count(*) AS n FROM images WHERE version = 'v3'").to_pylist() == [{"n": 0}]
    for sql in (
        f"SELECT * FROM read_parquet('{lake}/_staging/**/*.parquet')",
        f"SELECT * FROM read_parquet('{lake}/datasets/../_staging/datasets/*/*/images/*.parquet')",
        f"SELECT * FROM glob('{lake}/*')",
    ):
        with pytest.raises(QueryRefused):
            run_query(lake, sql)


def test_reads_inside_the_datasets_folder_are_fine(lake: Path) -> None:
    path = dataset_dir(lake, "toy", "v1") / "images" / "part-00000.parquet"
    assert run_query(lake, f"SELECT count(*) AS n FROM read_parquet('{path}')").to_pylist() == [{"n": 2}]


def test_select_kinds_allowed(lake: Path) -> None:
    assert run_query(lake, "FROM vocabulary SELECT label").to_pylist() == [{"label": "dog"}] * 2
    assert run_query(lake, "WITH x AS (SELECT 1 AS a) SELECT a FROM x").to_pylist() == [{"a": 1}]
    assert run_query(lake, "SELECT 1 AS a; SELECT 2 AS b").to_pylist() == [{"b": 2}]
    assert "name" in run_query(lake, "DESCRIBE images").column("column_name").to_pylist()
    assert run_query(lake, "SUMMARIZE layers").num_rows > 0
    assert run_query(lake, "EXPLAIN SELECT * FROM images").num_rows >= 1
    assert run_query(lake, "/* why */ EXPLAIN ANALYZE SELECT count(*) FROM layers").num_rows >= 1


# --- refusals --------------------------------------------------------------------------------------------------------

REFUSED = {
    "copy_to": "COPY (SELECT * FROM images) TO '{out}/copied.csv'",
    "copy_into_lake": "COPY (SELECT * FROM images) TO '{lake}/datasets/copied.parquet' (FORMAT parquet)",
    "copy_from": "COPY images FROM '{out}/outside.parquet'",
    "attach": "ATTACH '{out}/attached.duckdb' AS x",
    "detach": "DETACH memory",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "create": "CREATE TABLE t AS SELECT * FROM images",
    "create_view": "CREATE OR REPLACE VIEW images AS SELECT 1",
    "drop": "DROP VIEW images",
    "insert": "INSERT INTO images (image_id) VALUES ('x')",
    "update": "UPDATE images SET split = 'test'",
    "delete": "DELETE FROM images",
    "alter": "ALTER VIEW images RENAME TO imgs",
    "pragma": "PRAGMA enable_profiling",
    "set": "SET enable_external_access = true",
    "reset": "RESET allowed_directories",
    "set_variable": "SET VARIABLE x = 1",
    "call": "CALL pragma_version()",
    "export": "EXPORT DATABASE '{out}/exported'",
    "import": "IMPORT DATABASE '{out}/exported'",
    "vacuum": "VACUUM",
    "checkpoint": "CHECKPOINT",
    "transaction": "BEGIN TRANSACTION",
    "multi_with_drop": "SELECT * FROM images; DROP VIEW images",
    "multi_with_copy": "SELECT 1; COPY (SELECT 1) TO '{out}/copied.csv'",
    "explain_copy": "EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}/copied.csv'",
    "pivot": "PIVOT images ON split USING count(*)",
    "empty": "",
    "only_comment": "-- nothing here",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_csv_auto": "SELECT * FROM read_csv_auto('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/hostname')",
    "read_blob": "SELECT * FROM read_blob('/etc/hostname')",
    "read_json": "SELECT * FROM read_json('{out}/outside.parquet')",
    "glob_root": "SELECT * FROM glob('/*')",
    "read_parquet_outside": "SELECT * FROM read_parquet('{out}/outside.parquet')",
    "parquet_metadata_outside": "SELECT * FROM parquet_metadata('{out}/outside.parquet')",
    "dotdot": "SELECT * FROM read_parquet('{lake}/datasets/../../outside.parquet')",
    "subquery_outside": "SELECT * FROM images WHERE image_id IN (SELECT secret FROM '{out}/outside.parquet')",
    "url": "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "syntax": "SELEC * FORM images",
    "unknown_table": "SELECT * FROM no_such_table",
}


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_refused(lake: Path, key: str) -> None:
    out = lake.parent
    before = _snapshot(out)
    sql = REFUSED[key].format(out=out, lake=lake)
    with pytest.raises(QueryRefused) as info:
        run_query(lake, sql)
    message = str(info.value)
    assert message and "\n" not in message
    assert _snapshot(out) == before  # nothing written, copied, attached or exported anywhere
    assert run_query(lake, "SELECT count(*) AS n FROM images").to_pylist() == [{"n": 4}]


def test_refusal_messages_say_why(lake: Path) -> None:
    with pytest.raises(QueryRefused, match="SELECT.*statement 2 is DROP"):
        run_query(lake, "SELECT 1; DROP VIEW images")
    with pytest.raises(QueryRefused, match="INSTALL"):
        run_query(lake, "INSTALL httpfs")
    with pytest.raises(QueryRefused, match="outside the lake.*/etc/passwd"):
        run_query(lake, "SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryRefused, match=r'^Parser Error: syntax error at or near "SELEC" \(LINE 1: SELEC'):
        run_query(lake, "SELEC * FORM images")
    assert issubclass(QueryRefused, ValueError)


def test_connection_is_locked_even_without_the_statement_check(lake: Path, tmp_path: Path) -> None:
    con = connect(lake)
    try:
        assert con.sql("SELECT count(*) FROM layers").fetchall() == [(6,)]
        for sql in (
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "RESET lock_configuration",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
        for sql in (
            "SELECT * FROM read_text('/etc/hostname')",
            f"SELECT * FROM read_parquet('{tmp_path}/outside.parquet')",
            f"COPY (SELECT 1) TO '{tmp_path}/copied.csv'",
            "LOAD httpfs",
        ):
            with pytest.raises(duckdb.Error):
                con.sql(sql).fetchall()
        assert not (tmp_path / "copied.csv").exists()
    finally:
        con.close()


# --- parameters ------------------------------------------------------------------------------------------------------


def test_bound_parameters(lake: Path) -> None:
    got = run_query(
        lake, "SELECT image_id FROM images WHERE version = ? AND width = ? ORDER BY 1", ["v2", 64]
    )
    assert got.column("image_id").to_pylist() == ["v2-img0", "v2-img1"]
    named = run_query(lake, "SELECT count(*) AS n FROM layers WHERE label = $label", {"label": "dog"})
    assert named.to_pylist() == [{"n": 2}]


@pytest.mark.parametrize(
    "evil", ["v1' OR '1'='1", "v1'; DROP VIEW images; --", "'); COPY (SELECT 1) TO '/tmp/x.csv'; --"]
)
def test_injection_in_a_parameter_is_data(lake: Path, evil: str) -> None:
    before = _snapshot(lake.parent)
    got = run_query(lake, "SELECT count(*) AS n, ? AS echoed FROM images WHERE version = ?", [evil, evil])
    assert got.to_pylist() == [{"n": 0, "echoed": evil}]
    assert _snapshot(lake.parent) == before
    assert run_query(lake, "SELECT count(*) AS n FROM images").to_pylist() == [{"n": 4}]


def test_bad_parameters_are_refused(lake: Path) -> None:
    with pytest.raises(QueryRefused):
        run_query(lake, "SELECT ? AS a; SELECT 2", [1])
    with pytest.raises(QueryRefused):
        run_query(lake, "SELECT ? AS a", "v1")
    with pytest.raises(QueryRefused):
        run_query(lake, "SELECT ? AS a, ? AS b", [1])


# --- rendering -------------------------------------------------------------------------------------------------------


def test_format_table() -> None:
    table = pa.table(
        {
            "label": ["sky", None, "a\nlong " + "x" * 100],
            "n": [1, 22, 333],
            "f": [0.5, 1 / 3, None],
            "ok": [True, False, None],
        }
    )
    text = format_table(table)
    lines = text.splitlines()
    assert lines[0].split(" | ")[:2] == ["label".ljust(40), "  n"]
    assert set(lines[1]) <= {"-", "+"} and len(lines) == 2 + 3 + 1
    assert "NULL" in lines[3] and "…" in lines[4] and "\\n" in lines[4]
    assert lines[2].split(" | ")[1] == "  1" and lines[4].split(" | ")[1] == "333"
    assert "0.333333" in lines[3] and "true" in lines[2]
    assert lines[-1] == "(3 rows)"
    assert format_table(table, max_rows=1).splitlines()[-1] == "(1 of 3 rows shown)"
    assert format_table(table.slice(0, 0)).splitlines()[-1] == "(0 rows)"
    assert format_table(pa.table({"n": [1]})).splitlines()[-1] == "(1 row)"


def test_format_query_result(lake: Path) -> None:
    text = format_table(run_query(lake, "SELECT name, version, label FROM layers ORDER BY version, layer"))
    assert text.splitlines()[2].split() == ["toy", "|", "v1", "|", "sky"]
    assert text.endswith("(6 rows)")


def test_bench_rows_from_different_benchmarks_share_one_view(tmp_path: Path, monkeypatch) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import _results

    monkeypatch.setattr(_results, "HERE", tmp_path)  # the JSON copies go to a temp folder, not bench/results
    _results.record("bench_a", {"ratio": 1.5}, lake=str(tmp_path / "lake"))
    _results.record("bench_b", {"images_per_s": 230.0}, lake=str(tmp_path / "lake"))
    rows = run_query(tmp_path / "lake", "SELECT bench, ratio, images_per_s, kind FROM bench ORDER BY bench").to_pylist()
    assert rows == [{"bench": "bench_a", "ratio": 1.5, "images_per_s": None, "kind": "bench"},
                    {"bench": "bench_b", "ratio": None, "images_per_s": 230.0, "kind": "bench"}]
    assert run_query(tmp_path / "empty", "SELECT count(*) AS n FROM bench").to_pylist() == [{"n": 0}]
