"""Bulk catalogs: Parquet, CSV or JSON Lines, one row per item, read as a stream with every row accounted for.

Columns (only `image_uri` and `object` are required; any other name is an error that names it):

    item_id        your id; derived from the row's content when absent
    image_uri      a local path, file:// URI, or (with --allow-scheme) any fsspec URI
    object         what to insert, e.g. "a woman"
    context        the scene description, e.g. "a woman beside the river"
    bbox           x0,y0,x1,y1 in image pixels (a list, or the text "x0,y0,x1,y1")    } at most one guidance;
    point          x,y or x,y,r in image pixels                                         } none = mask-free
    scribble_uri   a mask image of the image's size (white = scribble)                  }
    n_suggestions  masks to sample (default: the run's --n)
    seed           suggestion j uses seed + j (default: the run's --seed)
    layout_from    DATASET:IMAGE_ID[:K], an annotated image's ground-truth layout; empty: the segmenter's

`iter_rows` yields (line, raw dict or None, reject or None) for every row: a row the format cannot parse (a
broken JSON line, a CSV row with too many fields, undecodable bytes) is a reject with its line, never a crash.
`normalise` turns a raw row into the canonical item (hashed into the item key) or a reject.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smartmask.inference.layout import LayoutError, parse_layout_ref

COLUMNS = ("item_id", "image_uri", "object", "context", "bbox", "point", "scribble_uri", "n_suggestions", "seed",
           "layout_from")
REQUIRED = ("image_uri", "object")
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MAX_ROW_BYTES = 1 << 20  # a catalog row is a few hundred bytes; a megabyte line is a broken or hostile file
SEED_MAX = 2**32 - 1


class CatalogError(ValueError):
    """The catalog as a whole is unusable (missing file, unknown format, unknown or missing columns); one line."""


@dataclass(frozen=True, slots=True)
class Reject:
    stage: str
    reason: str  # a stable code (docs/bulk_insert.md)
    detail: str


def catalog_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CatalogError(f"{path.name}: unknown catalog format {path.suffix!r} (expected .parquet, .csv or .jsonl)")
    return fmt


def check_catalog(path: str | Path) -> tuple[str, int]:
    """(format, rows) after checking the file exists and its columns are known and complete; reads the whole
    file once for CSV/JSONL (counting, and for JSONL the union of keys), the footer only for Parquet."""
    p = Path(path)
    if not p.is_file():
        raise CatalogError(f"catalog not found: {p}")
    fmt = catalog_format(p)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            f = pq.ParquetFile(p)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken footer
            raise CatalogError(f"{p.name}: not a readable Parquet file ({_line(e)})") from None
        _check_columns(p, f.schema_arrow.names)
        return fmt, f.metadata.num_rows
    if fmt == "csv":
        with open(p, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            header = next(csv.reader(fh), None)
        if not header:
            raise CatalogError(f"{p.name}: empty CSV (no header row)")
        _check_columns(p, [h.strip() for h in header])
        return fmt, sum(1 for _ in iter_rows(p))
    keys: set[str] = set()
    rows = 0
    for _, raw, _ in iter_rows(p):
        rows += 1
        if raw is not None:
            keys.update(raw)
    _check_columns(p, sorted(keys), jsonl=True)
    return fmt, rows


def _check_columns(p: Path, names: list[str], jsonl: bool = False) -> None:
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise CatalogError(f"{p.name}: unknown column{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(repr(n) for n in unknown)} (known: {', '.join(COLUMNS)})")
    missing = [c for c in REQUIRED if c not in names]
    if missing and not (jsonl and not names):  # an all-broken JSONL file has no keys: its rows are rejects
        raise CatalogError(f"{p.name}: missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")


def iter_rows(path: Path, batch_rows: int = 1024) -> Iterator[tuple[int, dict | None, Reject | None]]:
    """Every row of the catalog in file order: (line, raw, None) or (line, None, reject). `line` is the 1-based
    data row number for Parquet, the file line where the row starts for CSV and JSONL (blank JSONL lines are not
    rows)."""
    fmt = catalog_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            for raw in batch.to_pylist():
                n += 1
                yield n, raw, None
    elif fmt == "csv":
        yield from _csv_rows(path)
    else:
        yield from _jsonl_rows(path)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict | None, Reject | None]]:
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as e:  # a field over the size limit, a NUL byte: the reader goes on at the next line
                yield start, None, Reject("read", "malformed_row", f"CSV: {_line(e)}")
                continue
            if not values or all(not v.strip() for v in values):
                continue  # a blank line is not a row
            if len(values) > len(header):
                yield start, None, Reject("read", "malformed_row",
                                          f"CSV row has {len(values)} fields, the header {len(header)}")
                continue
            yield start, dict(zip(header, values + [""] * (len(header) - len(values)), strict=True)), None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict | None, Reject | None]]:
    with open(path, "rb") as fh:
        line_no = 0
        while line := fh.readline(MAX_ROW_BYTES + 1):  # bounded: a file without newlines is not read whole
            line_no += 1
            if len(line) > MAX_ROW_BYTES and not line.endswith(b"\n"):
                size = len(line)
                while (rest := fh.readline(1 << 20)) and (size := size + len(rest)) and not rest.endswith(b"\n"):
                    pass
                yield line_no, None, Reject("read", "row_too_large", f"{size:,} bytes (limit {MAX_ROW_BYTES:,})")
                continue
            if line_no == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (Windows editors write one)
            if not line.strip():
                continue
            try:
                raw = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                yield line_no, None, Reject("read", "bad_encoding", "the line is not valid UTF-8")
                continue
            except (ValueError, RecursionError) as e:
                yield line_no, None, Reject("read", "malformed_row", f"not JSON ({_line(e)})")
                continue
            if not isinstance(raw, dict):
                yield line_no, None, Reject("read", "malformed_row", f"a JSON {type(raw).__name__}, not an object")
                continue
            yield line_no, raw, None


# ------------------------------------------------------------------------------------------------ normalise


def normalise(raw: dict, defaults: dict) -> tuple[dict | None, Reject | None]:
    """The canonical item (every column, JSON-safe, guidance parsed) or the reason it cannot be one. `defaults`:
    n_suggestions, seed and max_n_suggestions of the run. Checks needing the image (box inside it) come later."""
    try:
        return _normalise(raw, defaults), None
    except _Bad as e:
        return None, Reject("read", e.reason, e.detail)


class _Bad(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _text(raw: dict, key: str) -> str | None:
    v = raw.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if not isinstance(v, str | int) or isinstance(v, bool):
        raise _Bad("bad_value", f"{key} must be text, got {type(v).__name__}")
    s = str(v).strip()
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("bad_encoding", f"{key} is not valid UTF-8") from None
    if "\x00" in s:
        raise _Bad("bad_value", f"{key} contains a NUL character")
    return s or None


def _int(raw: dict, key: str, default: int, lo: int, hi: int) -> int:
    v = raw.get(key)
    if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v)):
        return default
    try:
        f = float(v) if not isinstance(v, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        raise _Bad("bad_value", f"{key} must be an integer, got {str(v)[:40]!r}") from None
    if not f.is_integer() or not lo <= f <= hi:
        raise _Bad("bad_value", f"{key} must be an integer in {lo}..{hi}, got {str(v)[:40]}")
    return int(f)


def _numbers(raw: dict, key: str, counts: tuple[int, ...]) -> list[float] | None:
    v = raw.get(key)
    if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        s = v.strip().removeprefix("[").removesuffix("]")
        try:
            v = [float(t) for t in s.split(",")]
        except ValueError:
            raise _Bad("bad_guidance", f"{key} must be {_shape(counts)} numbers, got {str(raw[key])[:60]!r}") from None
    if not isinstance(v, list | tuple) or len(v) not in counts or any(
            isinstance(t, bool) or not isinstance(t, int | float) for t in v):
        raise _Bad("bad_guidance", f"{key} must be {_shape(counts)} numbers, got {str(raw[key])[:60]!r}")
    try:
        out = [float(t) for t in v]
    except OverflowError:  # a JSON integer with hundreds of digits
        raise _Bad("bad_guidance", f"{key} has a number too large: {str(raw[key])[:60]}") from None
    if not all(math.isfinite(t) for t in out):
        raise _Bad("bad_guidance", f"{key} has a non-finite number: {out}")
    return out


def _shape(counts: tuple[int, ...]) -> str:
    return " or ".join(str(c) for c in counts)


def _normalise(raw: dict, defaults: dict) -> dict:
    for key in REQUIRED:
        if key not in raw:
            raise _Bad("missing_field", f"no {key}")
    uri = _text(raw, "image_uri")
    if uri is None:
        raise _Bad("missing_field", "image_uri is empty")
    obj = _text(raw, "object")
    if obj is None:
        raise _Bad("empty_object", "the object name is empty")
    obj = " ".join(obj.split())
    context = " ".join((_text(raw, "context") or "").split())
    bbox, point = _numbers(raw, "bbox", (4,)), _numbers(raw, "point", (2, 3))
    scribble = _text(raw, "scribble_uri")
    given = [k for k, v in (("bbox", bbox), ("point", point), ("scribble_uri", scribble)) if v is not None]
    if len(given) > 1:
        raise _Bad("conflicting_guidance", f"give at most one of bbox, point, scribble_uri (got {', '.join(given)})")
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        if not (x0 < x1 and y0 < y1):
            raise _Bad("bad_guidance", f"bbox needs x0 < x1 and y0 < y1, got {bbox}")
        guidance = {"kind": "box", "bbox": bbox}
    elif point is not None:
        if len(point) == 3 and point[2] <= 0:
            raise _Bad("bad_guidance", f"point radius must be positive, got {point[2]}")
        guidance = {"kind": "point", "point": point}
    elif scribble is not None:
        guidance = {"kind": "scribble", "uri": scribble}
    else:
        guidance = {"kind": "none"}
    layout = _text(raw, "layout_from")
    if layout is not None:
        try:
            parse_layout_ref(layout)
        except LayoutError as e:
            raise _Bad("bad_layout_ref", str(e)) from None
    item = {"image_uri": uri, "object": obj, "context": context, "guidance": guidance,
            "n_suggestions": _int(raw, "n_suggestions", defaults["n_suggestions"], 1, defaults["max_n_suggestions"]),
            "seed": _int(raw, "seed", defaults["seed"], 0, SEED_MAX), "layout_from": layout}
    item["item_id"] = _text(raw, "item_id") or "i-" + _digest(item)[:16]
    return item


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def item_key(item: dict, config_hash: str) -> str:
    """32 hex digits over (the canonical item, the run's config hash, which covers the model version): what
    "this item, done this way" means for exactly-once."""
    return _digest({"item": item, "config": config_hash})[:32]


def reject_key(line: int, raw: dict | None, reason: str) -> str:
    """The key of a row rejected before it became an item: stable across reruns of the same catalog."""
    body = None if raw is None else json.dumps(raw, sort_keys=True, default=str)
    return _digest({"line": line, "raw": body, "reason": reason})[:32]


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]
