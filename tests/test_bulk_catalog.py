"""Bulk catalogs at library level: reading, normalising, keys, access checks, decoding and exactly-once commits."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bulk_catalogs import MAX_PIXELS, bad_rows
from PIL import Image

from smartmask.bulk.access import Access, AccessDenied
from smartmask.bulk.catalog import MAX_ROW_BYTES, CatalogError, check_catalog, item_key, iter_rows, normalise
from smartmask.bulk.config import BulkConfig, default_stages
from smartmask.bulk.stages import decode_rows, image_of, read_catalog
from smartmask.bulk.store import (
    BulkIncomplete,
    BulkRefused,
    Committer,
    bulk_run_dir,
    committed_keys,
    finish,
    part_files,
    run_counts,
    start_record,
)
from smartmask.lake.schemas import INSERT_ITEMS

DEFAULTS = {"n_suggestions": 4, "seed": 0, "max_n_suggestions": 8}
HUGE = 10**400  # a JSON integer Python parses exactly, too large for a float


def norm(**raw):
    """normalise() of a row with image_uri/object filled in unless given."""
    return normalise({"image_uri": "a.png", "object": "a cat"} | raw, DEFAULTS)


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows as JSON lines; a str row is written as is, a bytes row as raw bytes."""
    out = b""
    for r in rows:
        out += (r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()) + b"\n"
    path.write_bytes(out)
    return path


def write_png(path: Path, w: int, h: int, value: int = 90) -> np.ndarray:
    arr = (np.arange(h * w * 3, dtype=np.uint32).reshape(h, w, 3) * 7 + value).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def work(catalog: Path, cfg: BulkConfig, done: set[str] | None = None, batch_rows: int = 3) -> list[dict]:
    return [r for batch in read_catalog(catalog, cfg, done or set(), batch_rows=batch_rows) for r in batch]


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def _filled(t: pa.DataType):
    if pa.types.is_string(t):
        return "v"
    if pa.types.is_integer(t):
        return 1
    if pa.types.is_floating(t):
        return 0.5
    if pa.types.is_fixed_size_list(t):
        return [_filled(t.value_type)] * t.list_size
    if pa.types.is_list(t):
        return [_filled(t.value_type)]
    raise AssertionError(f"no filler for {t}")


def store_row(key: str, status: str = "inserted", reason: str | None = None) -> dict:
    """An `insert_items` row: every field filled for an inserted row; a reject keeps the item fields and leaves
    the output fields None (all nullable)."""
    row = {f.name: _filled(f.type) for f in INSERT_ITEMS}
    row |= {"item_key": key, "status": status, "guidance": '{"kind": "none"}', "reject_stage": None,
            "reject_reason": None, "reject_detail": None}
    if status == "rejected":
        keep = {"item_key", "line", "item_id", "image_uri", "object", "context", "guidance", "layout_from",
                "n_suggestions", "seed", "model_version", "config_hash", "inpainter", "segmenter", "created_at",
                "code_version", "status"}
        assert keep <= set(INSERT_ITEMS.names)
        row = {k: (v if k in keep else None) for k, v in row.items()}
        row |= {"reject_stage": "read", "reject_reason": reason, "reject_detail": f"because {reason}"}
    return row


# ------------------------------------------------------------------------------------------------ check_catalog

ROWS = [
    {"image_uri": "a.png", "object": "a cat", "bbox": [1.0, 2.0, 30.0, 40.0], "seed": 3},
    {"image_uri": "b.png", "object": "a dog", "context": "a dog in the park"},
    {"image_uri": "c.png", "object": "a tree", "item_id": "t-1", "n_suggestions": 2},
]


def write_three_formats(folder: Path) -> dict[str, Path]:
    """ROWS as Parquet (typed columns, bbox a list), CSV (all text, bbox "x0,y0,x1,y1") and JSONL."""
    folder.mkdir(parents=True, exist_ok=True)
    cols = ["item_id", "image_uri", "object", "context", "bbox", "n_suggestions", "seed"]
    table = pa.table({
        "item_id": pa.array([r.get("item_id") for r in ROWS], pa.string()),
        "image_uri": [r["image_uri"] for r in ROWS], "object": [r["object"] for r in ROWS],
        "context": pa.array([r.get("context") for r in ROWS], pa.string()),
        "bbox": pa.array([r.get("bbox") for r in ROWS], pa.list_(pa.float64())),
        "n_suggestions": pa.array([r.get("n_suggestions") for r in ROWS], pa.int64()),
        "seed": pa.array([r.get("seed") for r in ROWS], pa.int64()),
    })
    pq.write_table(table, folder / "cat.parquet")

    def text(r: dict, c: str) -> str:
        v = r.get(c)
        return "" if v is None else ",".join(f"{t:g}" for t in v) if isinstance(v, list) else str(v)

    lines = [",".join(cols)] + [",".join(f'"{text(r, c)}"' for c in cols) for r in ROWS]
    (folder / "cat.csv").write_text("\n".join(lines) + "\n")
    write_jsonl(folder / "cat.jsonl", ROWS)
    return {fmt: folder / f"cat.{fmt}" for fmt in ("parquet", "csv", "jsonl")}


def test_three_formats_same_rows_same_count_and_same_item_keys(tmp_path):
    paths = write_three_formats(tmp_path)
    cfg = BulkConfig(model_version="x")
    keys = {}
    for fmt, p in paths.items():
        assert check_catalog(p) == (fmt, len(ROWS))
        rows = work(p, cfg)
        assert [r["status"] for r in rows] == ["ok"] * len(ROWS), [r.get("detail") for r in rows]
        keys[fmt] = [r["row_key"] for r in rows]
    assert keys["parquet"] == keys["csv"] == keys["jsonl"]
    assert len(set(keys["jsonl"])) == len(ROWS)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_unknown_columns_are_each_named(tmp_path, fmt):
    rows = [{"image_uri": "a.png", "object": "a cat", "colour": "red", "size": "2"}]
    p = tmp_path / f"cat.{fmt}"
    if fmt == "jsonl":
        write_jsonl(p, rows)
    elif fmt == "csv":
        p.write_text("image_uri,object,colour,size\na.png,a cat,red,2\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), p)
    with pytest.raises(CatalogError) as e:
        check_catalog(p)
    msg = one_line(e)
    assert "'colour'" in msg and "'size'" in msg and "unknown columns" in msg


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("missing", ["image_uri", "object"])
def test_missing_required_column_is_named(tmp_path, fmt, missing):
    rows = [{k: v for k, v in {"image_uri": "a.png", "object": "a cat", "context": "c"}.items() if k != missing}]
    p = tmp_path / f"cat.{fmt}"
    if fmt == "jsonl":
        write_jsonl(p, rows)
    elif fmt == "csv":
        p.write_text(",".join(rows[0]) + "\n" + ",".join(rows[0].values()) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), p)
    with pytest.raises(CatalogError) as e:
        check_catalog(p)
    msg = one_line(e)
    assert "missing required column" in msg and missing in msg.split("column", 1)[1]


def test_missing_file_unknown_extension_and_broken_parquet(tmp_path):
    with pytest.raises(CatalogError) as e:
        check_catalog(tmp_path / "nope.jsonl")
    assert "not found" in one_line(e)
    (tmp_path / "cat.xlsx").write_text("image_uri,object\n")
    with pytest.raises(CatalogError) as e:
        check_catalog(tmp_path / "cat.xlsx")
    assert "'.xlsx'" in one_line(e)
    (tmp_path / "cat.parquet").write_bytes(b"PAR1 this is not parquet\nat all\n")
    with pytest.raises(CatalogError) as e:
        check_catalog(tmp_path / "cat.parquet")
    assert "Parquet" in one_line(e)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CatalogError) as e:
        check_catalog(tmp_path / "empty.csv")
    one_line(e)


def test_csv_with_utf8_bom_is_read(tmp_path):
    p = tmp_path / "cat.csv"
    p.write_bytes(b"\xef\xbb\xbfimage_uri,object\na.png,a cat\n")
    assert check_catalog(p) == ("csv", 1)


# ---------------------------------------------------------------------------------------------------- iter_rows


def test_jsonl_bad_lines_are_rejects_with_their_line_numbers(tmp_path):
    good = {"image_uri": "a.png", "object": "a cat"}
    p = write_jsonl(tmp_path / "cat.jsonl", [
        good,                                                        # 1
        '{"image_uri": "b.png", "object": ',                         # 2 broken JSON
        "[1, 2, 3]",                                                 # 3 not an object
        "",                                                          # 4 blank: not a row
        "   \t",                                                     # 5 blank too
        b'{"image_uri": "\xff\xfe.png", "object": "x"}',             # 6 invalid UTF-8
        json.dumps({"image_uri": "c.png", "object": "x" * MAX_ROW_BYTES}),  # 7 over-long
        good | {"object": "a dog"},                                  # 8
    ])
    got = [(line, raw is not None, bad.reason if bad else None) for line, raw, bad in iter_rows(p)]
    assert got == [(1, True, None), (2, False, "malformed_row"), (3, False, "malformed_row"),
                   (6, False, "bad_encoding"), (7, False, "row_too_large"), (8, True, None)]
    assert check_catalog(p) == ("jsonl", 6)  # every non-blank line is a row, rejects included


def test_jsonl_line_just_under_the_limit_is_read(tmp_path):
    head = '{"image_uri": "a.png", "object": "'
    line = head + "x" * (MAX_ROW_BYTES - len(head) - 3) + '"}'  # + "\n" = MAX_ROW_BYTES bytes
    p = write_jsonl(tmp_path / "cat.jsonl", [line])
    [(n, raw, bad)] = list(iter_rows(p))
    assert (n, bad) == (1, None) and len(raw["object"]) == MAX_ROW_BYTES - len(head) - 3


def test_csv_too_many_fields_short_rows_and_quoted_newlines(tmp_path):
    p = tmp_path / "cat.csv"
    p.write_text(
        "image_uri,object,context\n"           # 1
        'a.png,a cat,"a cat\non a mat"\n'      # 2-3: one row
        "\n"                                   # 4 blank
        "b.png,a dog,park,EXTRA\n"             # 5 too many fields
        "c.png,a tree\n"                       # 6 short: context padded
        "d.png\n")                             # 7 shorter: object padded too
    got = list(iter_rows(p))
    assert [(n, bad.reason if bad else None) for n, _, bad in got] == [(2, None), (5, "malformed_row"), (6, None),
                                                                      (7, None)]
    assert got[0][1] == {"image_uri": "a.png", "object": "a cat", "context": "a cat\non a mat"}
    assert "4 fields" in got[1][2].detail
    assert got[2][1] == {"image_uri": "c.png", "object": "a tree", "context": ""}
    assert got[3][1] == {"image_uri": "d.png", "object": "", "context": ""}
    assert check_catalog(p) == ("csv", 4)
    assert normalise(got[3][1], DEFAULTS)[1].reason == "empty_object"


def test_csv_field_over_the_size_limit_is_a_reject_and_reading_goes_on(tmp_path):
    p = tmp_path / "cat.csv"
    p.write_text("image_uri,object\na.png,a cat\nb.png," + "x" * 200_000 + "\nc.png,a dog\n")
    got = [(n, raw["image_uri"] if raw else None, bad.reason if bad else None) for n, raw, bad in iter_rows(p)]
    assert got == [(2, "a.png", None), (3, None, "malformed_row"), (4, "c.png", None)]


def test_csv_invalid_utf8_field_is_a_bad_encoding_reject(tmp_path):
    p = tmp_path / "cat.csv"
    p.write_bytes(b"image_uri,object\na.png,a \xff cat\n")
    [(n, raw, bad)] = list(iter_rows(p))
    assert bad is None
    item, rej = normalise(raw, DEFAULTS)
    assert item is None and rej.reason == "bad_encoding"


# ---------------------------------------------------------------------------------------------------- normalise


def test_bbox_list_and_text_give_the_same_item_and_key():
    a, _ = norm(bbox=[1, 2, 30, 40])
    b, _ = norm(bbox="1,2,30,40")
    c, _ = norm(bbox=" [1.0, 2, 30, 40.0] ")
    assert a is not None and a == b == c
    assert a["guidance"] == {"kind": "box", "bbox": [1.0, 2.0, 30.0, 40.0]}
    assert item_key(a, "h") == item_key(b, "h") == item_key(c, "h")


def test_whitespace_in_object_and_context_is_normalised():
    a, _ = norm(object="  a \t big\n cat ", context=" a  cat\ton a mat ")
    b, _ = norm(object="a big cat", context="a cat on a mat")
    assert a["object"] == "a big cat" and a["context"] == "a cat on a mat"
    assert a == b


def test_item_id_derived_stable_and_content_dependent_given_one_kept():
    a1, _ = norm(point=[3, 4])
    a2, _ = norm(point=[3, 4])
    b, _ = norm(point=[3, 5])
    assert a1["item_id"].startswith("i-") and len(a1["item_id"]) == 18
    assert a1["item_id"] == a2["item_id"] != b["item_id"]
    given, _ = norm(point=[3, 4], item_id="  mine-7 ")
    assert given["item_id"] == "mine-7"
    empty_id, _ = norm(point=[3, 4], item_id="")
    assert empty_id["item_id"] == a1["item_id"]


def test_defaults_fill_empty_values():
    item, _ = norm(n_suggestions="", seed=None, context=None, layout_from="")
    assert (item["n_suggestions"], item["seed"], item["context"], item["layout_from"]) == (4, 0, "", None)
    item, _ = norm(n_suggestions="8", seed="4294967295", point="5,6,2")
    assert (item["n_suggestions"], item["seed"]) == (8, 2**32 - 1)
    assert item["guidance"] == {"kind": "point", "point": [5.0, 6.0, 2.0]}


@pytest.mark.parametrize("raw, reason", [
    ({"n_suggestions": 0}, "bad_value"),
    ({"n_suggestions": 9}, "bad_value"),  # > max_n_suggestions (8)
    ({"n_suggestions": "two"}, "bad_value"),
    ({"seed": -1}, "bad_value"),
    ({"seed": 2**32}, "bad_value"),
    ({"seed": 1.5}, "bad_value"),
    ({"seed": True}, "bad_value"),
    ({"object": ["a", "cat"]}, "bad_value"),
    ({"object": "a\x00cat"}, "bad_value"),
    ({"bbox": [1, 2, float("nan"), 4]}, "bad_guidance"),
    ({"bbox": [1, 2, float("inf"), 4]}, "bad_guidance"),
    ({"bbox": "1,2,inf,4"}, "bad_guidance"),
    ({"bbox": [1, 2, 3]}, "bad_guidance"),
    ({"bbox": "1,2,3"}, "bad_guidance"),
    ({"bbox": "ten,2,30,40"}, "bad_guidance"),
    ({"bbox": [1, 2, True, 4]}, "bad_guidance"),
    ({"bbox": [30, 2, 30, 40]}, "bad_guidance"),  # x0 >= x1
    ({"bbox": [1, 40, 30, 2]}, "bad_guidance"),  # y0 >= y1
    ({"point": [5, 5, 0]}, "bad_guidance"),
    ({"point": [5, 5, -2]}, "bad_guidance"),
    ({"point": [5]}, "bad_guidance"),
    ({"bbox": [1, 2, 30, 40], "point": [5, 5]}, "conflicting_guidance"),
    ({"point": [5, 5], "scribble_uri": "s.png"}, "conflicting_guidance"),
    ({"object": "   "}, "empty_object"),
    ({"object": None}, "empty_object"),
    ({"layout_from": "no-colon-here"}, "bad_layout_ref"),
    ({"layout_from": "synth:img:notanint"}, "bad_layout_ref"),
    ({"layout_from": ":img"}, "bad_layout_ref"),
    ({"image_uri": "  "}, "missing_field"),
])
def test_bad_values_get_their_reason(raw, reason):
    item, rej = norm(**raw)
    assert item is None
    assert (rej.stage, rej.reason) == ("read", reason), rej
    assert rej.detail and "\n" not in rej.detail


def test_missing_object_key_is_missing_field():
    item, rej = normalise({"image_uri": "a.png"}, DEFAULTS)
    assert item is None and rej.reason == "missing_field"


@pytest.mark.parametrize("raw, reason", [
    ({"seed": HUGE}, "bad_value"),
    ({"n_suggestions": HUGE}, "bad_value"),
    ({"bbox": [0, 0, 10, HUGE]}, "bad_guidance"),
    ({"point": [HUGE, 1]}, "bad_guidance"),
])
def test_huge_integers_are_rejects_not_crashes(raw, reason):
    item, rej = norm(**raw)
    assert item is None and rej.reason == reason


def test_read_catalog_survives_a_huge_integer_row(tmp_path):
    p = write_jsonl(tmp_path / "cat.jsonl", [{"image_uri": "a.png", "object": "a cat"},
                                             '{"image_uri": "b.png", "object": "a dog", "seed": ' + str(HUGE) + "}"])
    rows = work(p, BulkConfig(model_version="x"))
    assert [(r["line"], r["status"], r.get("reason")) for r in rows] == [(1, "ok", None), (2, "rejected", "bad_value")]


# --------------------------------------------------------------------------------------------- item_key, config


def test_item_key_depends_on_config_seed_and_object_only():
    item, _ = norm(bbox=[1, 2, 30, 40], seed=3)
    same, _ = norm(bbox="1,2,30,40", seed="3")
    k = item_key(item, "c1")
    assert len(k) == 32 and int(k, 16) >= 0
    assert item_key(same, "c1") == k
    assert item_key(item, "c2") != k
    assert item_key(norm(bbox=[1, 2, 30, 40], seed=4)[0], "c1") != k
    assert item_key(norm(bbox=[1, 2, 30, 40], seed=3, object="a dog")[0], "c1") != k


def test_config_hash_covers_outputs_not_placement():
    base = BulkConfig(model_version="m-1")
    h = base.config_hash()
    assert len(h) == 16
    for changed in ({"model_version": "m-2"}, {"steps": 21}, {"inpainter": "synthetic"}, {"seed": 1},
                    {"n_suggestions": 3}, {"scheduler": "ddim"}):
        assert dataclasses.replace(base, **changed).config_hash() != h, changed
    for same in ({"stages": default_stages(2)}, {"allow_roots": ("/data/images",)}, {"device": "cuda:1"},
                 {"allow_schemes": ("s3",)}, {"commit_every": 7}, {"commit_every_s": 1.0}):
        assert dataclasses.replace(base, **same).config_hash() == h, same
    assert BulkConfig.from_dict(base.to_dict()).config_hash() == h


# ------------------------------------------------------------------------------------------------------- Access


def test_relative_paths_resolve_against_the_base_not_the_cwd(tmp_path, monkeypatch):
    base = tmp_path / "cat"
    (base / "img").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    a = Access.of((), (), base)
    assert a.roots == (base.resolve(),)  # default root: the base
    assert a.resolve("img/x.png") == str(base.resolve() / "img" / "x.png")
    assert a.resolve("./img/../img/x.png") == str(base.resolve() / "img" / "x.png")
    with pytest.raises(AccessDenied) as e:
        a.resolve("../other/x.png")
    assert e.value.reason == "uri_not_allowed"
    with pytest.raises(AccessDenied) as e:
        a.resolve(str(tmp_path / "x.png"))
    assert e.value.reason == "uri_not_allowed"


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    os.symlink(outside / "secret.png", root / "link.png")
    os.symlink(outside, root / "dirlink")
    a = Access.of((str(root),), (), tmp_path / "elsewhere")
    for uri in (str(root / "link.png"), str(root / "dirlink" / "secret.png"), f"file://{root / 'link.png'}"):
        with pytest.raises(AccessDenied) as e:
            a.resolve(uri)
        assert e.value.reason == "uri_not_allowed", uri
    (root / "ok.png").write_bytes(b"x")
    os.symlink(root / "ok.png", root / "inner-link.png")
    assert a.resolve(str(root / "inner-link.png")) == str((root / "ok.png").resolve())


def test_file_uris(tmp_path):
    (tmp_path / "img dir").mkdir()
    target = str((tmp_path / "img dir" / "x.png").resolve())
    a = Access.of((), (), tmp_path)
    quoted = str(tmp_path.resolve() / "img%20dir" / "x.png")
    assert a.resolve(f"file://{quoted}") == target
    assert a.resolve(f"file://localhost{quoted}") == target
    assert a.resolve("file:img%20dir/x.png") == target
    for uri, reason in (("file://otherhost/x", "uri_not_allowed"), ("file:///etc/passwd", "uri_not_allowed"),
                        (f"file://{tmp_path.resolve()}/%2e%2e/x", "uri_not_allowed")):
        with pytest.raises(AccessDenied) as e:
            a.resolve(uri)
        assert e.value.reason == reason, uri


def test_remote_schemes_only_when_allowed(tmp_path):
    with pytest.raises(AccessDenied) as e:
        Access.of((), (), tmp_path).resolve("s3://b/k")
    assert e.value.reason == "scheme_not_allowed"
    a = Access.of((), ("S3",), tmp_path)
    assert a.resolve("s3://b/k") == "s3://b/k"
    for uri in ("gs://b/k", "http://169.254.169.254/latest"):
        with pytest.raises(AccessDenied) as e:
            a.resolve(uri)
        assert e.value.reason == "scheme_not_allowed", uri


# -------------------------------------------------------------------------------------------------- read_catalog


def test_read_catalog_rejects_repeats_and_skips_done_keys(tmp_path):
    a = {"image_uri": "a.png", "object": "a cat", "point": [3, 4]}
    b = {"image_uri": "b.png", "object": "a dog"}
    p = write_jsonl(tmp_path / "cat.jsonl", [a, b, a | {"point": "3,4"}, "{broken", a, ""])
    cfg = BulkConfig(model_version="x")
    rows = work(p, cfg)
    assert [(r["line"], r["status"], r.get("reason")) for r in rows] == [
        (1, "ok", None), (2, "ok", None), (3, "rejected", "duplicate_item"), (4, "rejected", "malformed_row"),
        (5, "rejected", "duplicate_item")]
    keys = [r["row_key"] for r in rows]
    assert len(set(keys)) == len(keys)
    first = json.loads(rows[0]["item"])
    assert keys[0] == item_key(first, cfg.config_hash())
    assert keys[0] in rows[2]["detail"]
    assert check_catalog(p)[1] == len(rows)  # in = out
    assert rows[2]["image"] is None and rows[2]["stage"] == "read"

    again = work(p, cfg)  # stable across reruns
    assert [r["row_key"] for r in again] == keys
    done = {keys[0], keys[2], keys[3]}
    rest = work(p, cfg, done)
    assert [r["row_key"] for r in rest] == [keys[1], keys[4]]
    assert rest[1]["reason"] == "duplicate_item"  # still the second repeat, though the first row was skipped


def test_read_catalog_every_row_once_across_batches(tmp_path):
    rows = [{"image_uri": f"{i}.png", "object": "a cat"} for i in range(7)]
    rows.insert(3, "[]")
    rows.insert(5, {"image_uri": "x.png", "object": ""})
    p = write_jsonl(tmp_path / "cat.jsonl", rows)
    cfg = BulkConfig(model_version="x")
    batches = list(read_catalog(p, cfg, set(), batch_rows=2))
    assert [len(b) for b in batches] == [2, 2, 2, 2, 1]
    out = [r for b in batches for r in b]
    assert [r["line"] for r in out] == list(range(1, 10))
    assert sum(r["status"] == "rejected" for r in out) == 2
    assert check_catalog(p)[1] == len(out)


# --------------------------------------------------------------------------------------------------- decode_rows


@pytest.fixture
def images(tmp_path) -> dict:
    root = tmp_path / "images"
    good = write_png(root / "good.png", 20, 10)
    write_png(root / "big.png", 40, 30)  # 1200 pixels > the 1000 allowed below
    write_png(root / "scribble-small.png", 10, 10, 255)
    sc = np.zeros((10, 20, 3), np.uint8)
    sc[2:5, 3:9] = 255
    Image.fromarray(sc).save(root / "scribble.png")
    (root / "text.png").write_text("this is text, not a PNG")
    cfg = BulkConfig(model_version="x", allow_roots=(str(root),), max_image_pixels=1000)
    return {"root": root, "good": good, "cfg": cfg, "scribble": sc[..., 0] > 127}


def decoded(tmp_path: Path, cfg: BulkConfig, rows: list) -> list[dict]:
    p = write_jsonl(tmp_path / "cat.jsonl", rows)
    return decode_rows(work(p, cfg, batch_rows=100), cfg, str(tmp_path))


def test_decode_rejects_by_reason_and_fills_good_rows(tmp_path, images):
    img = "images/good.png"
    out = decoded(tmp_path, images["cfg"], [
        {"image_uri": img, "object": "a", "bbox": [1, 1, 10, 8]},               # 1 good, box inside
        {"image_uri": img, "object": "b", "bbox": [15, 2, 25, 8]},              # 2 box past the right edge
        {"image_uri": img, "object": "c", "point": [20, 5]},                    # 3 point at x = W
        {"image_uri": img, "object": "d", "point": [5, -1]},                    # 4 point above
        {"image_uri": img, "object": "e", "scribble_uri": "images/scribble-small.png"},  # 5 10x10 on 20x10
        {"image_uri": "images/big.png", "object": "f"},                         # 6 over max_image_pixels
        {"image_uri": "images/text.png", "object": "g"},                        # 7 not an image
        {"image_uri": "images/missing.png", "object": "h"},                     # 8
        {"image_uri": "cat.jsonl", "object": "i"},                              # 9 outside allow_roots
        {"image_uri": img, "object": "j", "scribble_uri": "cat.jsonl"},         # 10 scribble outside
        {"image_uri": img, "object": "k", "scribble_uri": "images/scribble.png"},  # 11 good scribble
        {"image_uri": img, "object": "l", "point": [19.5, 9.5, 3]},             # 12 good point
        {"image_uri": img, "object": ""},                                       # 13 rejected at read
    ])
    got = {r["line"]: (r["status"], r.get("stage"), r.get("reason")) for r in out}
    assert got == {
        1: ("ok", None, None), 2: ("rejected", "decode", "box_outside_image"),
        3: ("rejected", "decode", "point_outside_image"), 4: ("rejected", "decode", "point_outside_image"),
        5: ("rejected", "decode", "bad_guidance"), 6: ("rejected", "decode", "image_too_large"),
        7: ("rejected", "decode", "image_unreadable"), 8: ("rejected", "decode", "image_not_found"),
        9: ("rejected", "decode", "uri_not_allowed"), 10: ("rejected", "decode", "uri_not_allowed"),
        11: ("ok", None, None), 12: ("ok", None, None), 13: ("rejected", "read", "empty_object"),
    }
    sha = hashlib.sha256((images["root"] / "good.png").read_bytes()).hexdigest()
    for r in out:
        if r["status"] == "ok":
            assert (r["height"], r["width"], r["image_sha256"]) == (10, 20, sha)
            assert len(r["image"]) == 10 * 20 * 3
            np.testing.assert_array_equal(image_of(r), images["good"])
            assert "decode" in json.loads(r["timings"])
        else:
            assert r["image"] is None and r.get("image_sha256") is None and r["detail"]
            assert "\n" not in r["detail"]
    scribbled = next(r for r in out if r["line"] == 11)
    bits = np.unpackbits(np.frombuffer(scribbled["scribble"], np.uint8), count=200).reshape(10, 20).astype(bool)
    np.testing.assert_array_equal(bits, images["scribble"])
    assert next(r for r in out if r["line"] == 1)["scribble"] is None  # set by decode, None for a box


def test_decode_with_the_shared_bad_rows(tmp_path):
    """Every read/decode reason `tests/bulk_catalogs.bad_rows` promises, on a 160x120 image (what it assumes)."""
    root = tmp_path / "allowed"
    write_png(root / "scene.png", 160, 120)
    good = {"image_uri": str(root / "scene.png"), "object": "a chair", "context": "a chair in a room",
            "point": [80, 60], "layout_from": "synth:img-1:2"}
    pairs = bad_rows(good, root, tmp_path / "outside")
    later = {"layout_failed", "insert_failed"}  # need the models: still ok after decode
    cfg = BulkConfig(model_version="x", allow_roots=(str(root),), max_image_pixels=MAX_PIXELS)
    out = decoded(tmp_path, cfg, [good] + [row for _, row in pairs])
    assert len(out) == 1 + len(pairs)
    assert (out[0]["status"], out[0]["height"], out[0]["width"]) == ("ok", 120, 160)
    for (reason, row), r in zip(pairs, out[1:], strict=True):
        if reason in later:
            assert r["status"] == "ok", (reason, r.get("reason"), r.get("detail"))
        else:
            assert (r["status"], r.get("reason")) == ("rejected", reason), (row, r.get("detail"))


# ----------------------------------------------------------------------------------------- Committer, finish


def test_committer_commits_each_key_once(tmp_path):
    folder = bulk_run_dir(tmp_path / "lake", "r1")
    a, b, c, d = (f"{i:032x}" for i in range(4))
    com = Committer(folder, every=100, every_s=3600)
    com.add([store_row(a), store_row(b)])
    com.add([store_row(a)])  # a retried task delivering its output again
    assert part_files(folder) == []  # buffered: neither 100 rows nor an hour
    com.add([store_row(b), store_row(c, "rejected", "bad_value")])
    com.close()
    assert (com.inserted, com.rejected, com.duplicates_dropped) == (2, 1, 2)
    assert com.reasons == {"bad_value": 1}
    [part] = part_files(folder)
    assert pq.read_schema(part).names == INSERT_ITEMS.names
    assert committed_keys(folder) == {a, b, c}
    assert run_counts(folder) == {"inserted": 2, "rejected": 1, "rejects_by_reason": {"bad_value": 1},
                                  "duplicate_keys": 0, "rows": 3}

    com.add([store_row(c, "rejected", "bad_value"), store_row(d, "rejected", "uri_not_allowed")])  # after a flush
    com.close()
    assert com.duplicates_dropped == 3 and len(part_files(folder)) == 2
    assert run_counts(folder)["rows"] == 4


def test_committer_flushes_every_n_rows(tmp_path):
    folder = tmp_path / "run"
    com = Committer(folder, every=2, every_s=3600)
    com.add([store_row(f"{i:032x}") for i in range(3)])
    assert len(part_files(folder)) == 1 and len(committed_keys(folder)) == 3  # one part once the buffer passed 2
    com.add([store_row(f"{3:032x}")])
    assert len(part_files(folder)) == 1
    com.add([store_row(f"{4:032x}")])
    assert len(part_files(folder)) == 2
    com.close()
    assert run_counts(folder)["rows"] == 5
    assert run_counts(tmp_path / "empty") == {"inserted": 0, "rejected": 0, "rejects_by_reason": {},
                                              "duplicate_keys": 0, "rows": 0}


def test_finish_complete_only_when_the_rows_match_the_catalog(tmp_path):
    folder = bulk_run_dir(tmp_path / "lake", "r1")
    record = {"run": "r1", "catalog_sha256": "c" * 64, "config_hash": "h" * 16}
    com = Committer(folder)
    com.add([store_row("k1"), store_row("k2", "rejected", "bad_value"), store_row("k3", "rejected", "bad_value")])
    com.close()

    with pytest.raises(BulkIncomplete) as e:
        finish(folder, 4, record, {"attempt": 1})
    msg = one_line(e)
    assert "3 rows committed" in msg and "4 catalog" in msg
    m = json.loads((folder / "manifest.json").read_text())
    assert (m["status"], m["in"], m["inserted"], m["rejected"]) == ("incomplete", 4, 1, 2)

    m = finish(folder, 3, record, {"attempt": 2})
    assert (m["status"], m["in"], m["inserted"], m["rejected"], m["duplicate_keys"]) == ("complete", 3, 1, 2, 0)
    assert m["rejects_by_reason"] == {"bad_value": 2}
    assert m["attempts"] == [{"attempt": 1}, {"attempt": 2}]
    assert json.loads((folder / "manifest.json").read_text())["status"] == "complete"
    assert m["catalog_sha256"] == record["catalog_sha256"]


def test_finish_refuses_a_key_committed_twice(tmp_path):
    """A second attempt's Committer starts empty: a key it commits again shows up in finish, not silently."""
    folder = tmp_path / "run"
    for _ in range(2):
        com = Committer(folder)
        com.add([store_row("k1")])
        com.close()
    with pytest.raises(BulkIncomplete):
        finish(folder, 2, {"run": "r"}, {})  # 2 rows for 2 catalog rows, but the same key twice
    m = json.loads((folder / "manifest.json").read_text())
    assert (m["status"], m["duplicate_keys"]) == ("incomplete", 1)


def test_start_record_refuses_another_catalog_or_config(tmp_path):
    folder = bulk_run_dir(tmp_path / "lake", "r1")
    first = {"run": "r1", "catalog_sha256": "a" * 64, "config_hash": "1" * 16, "started_at": "t0"}
    assert start_record(folder, first) == first
    assert start_record(folder, first | {"started_at": "t1"}) == first  # a rerun keeps the first record
    for key, what in (("catalog_sha256", "catalog"), ("config_hash", "config")):
        with pytest.raises(BulkRefused) as e:
            start_record(folder, first | {key: "b" * len(first[key])})
        msg = one_line(e)
        assert f"different {what}" in msg and "r1" in msg
    assert json.loads((folder / "run.json").read_text()) == first


def test_jsonl_with_utf8_bom_reads_its_first_row(tmp_path):
    p = tmp_path / "cat.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"image_uri": "a.png", "object": "a cat"}\n{"image_uri": "b.png", "object": "a dog"}\n')
    assert check_catalog(p) == ("jsonl", 2)
    assert [bad for _, _, bad in iter_rows(p)] == [None, None]


def test_jsonl_line_without_newline_is_read_bounded(tmp_path):
    p = tmp_path / "cat.jsonl"
    p.write_bytes(b'{"image_uri": "a.png", "object": "a cat"}\n' + b"x" * (3 * MAX_ROW_BYTES) + b"\n"
                  + b'{"image_uri": "b.png", "object": "a dog"}')
    got = [(line, None if bad is None else bad.reason) for line, _, bad in iter_rows(p)]
    assert got == [(1, None), (2, "row_too_large"), (3, None)]
