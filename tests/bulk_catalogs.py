"""Catalogs for the bulk insertion tests: good rows over the synthetic lake's held-out images, and bad rows of
every kind a catalog from outside brings, each with the reject reason it must get."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from smartmask.bulk.synthetic import heldout_rows

# max_image_pixels the tests run with: the synthetic images (160x120) pass, `big.png` (400x300) does not.
MAX_PIXELS = 100_000


def bad_rows(good: dict, root: Path, outside: Path) -> list[tuple[str, str | dict]]:
    """(expected reason, row) pairs; a str row is written to the JSONL file as is. `good` is a valid row to vary;
    `root` is an allowed folder (files are created in it), `outside` a folder that is not allowed."""
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    (root / "not-an-image.png").write_bytes(b"this is text, not a PNG")
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(root / "big.png")
    secret = outside / "secret.png"
    Image.fromarray(np.zeros((120, 160, 3), np.uint8)).save(secret)
    link = root / "link-out.png"
    if not link.exists():
        os.symlink(secret, link)
    W = 160
    return [
        ("malformed_row", '{"image_uri": "x.png", "object": '),
        ("malformed_row", "[1, 2, 3]"),
        ("empty_object", good | {"object": "   "}),
        ("missing_field", {k: v for k, v in good.items() if k != "image_uri"}),
        ("uri_not_allowed", good | {"image_uri": str(secret)}),
        ("uri_not_allowed", good | {"image_uri": str(link)}),
        ("uri_not_allowed", good | {"image_uri": f"file://{secret}"}),
        ("scheme_not_allowed", good | {"image_uri": "s3://bucket/image.png"}),
        ("image_unreadable", good | {"image_uri": str(root / "not-an-image.png")}),
        ("image_not_found", good | {"image_uri": str(root / "missing.png")}),
        ("image_too_large", good | {"image_uri": str(root / "big.png"), "layout_from": None}),
        ("box_outside_image", {k: v for k, v in good.items() if k != "point"} | {"bbox": [W - 5, 10, W + 40, 50]}),
        ("bad_guidance", {k: v for k, v in good.items() if k not in ("point", "bbox")} | {"bbox": "ten,20,30,40"}),
        ("bad_guidance", {k: v for k, v in good.items() if k not in ("point", "bbox")} | {"bbox": [30, 20, 10, 40]}),
        ("conflicting_guidance", good | {"bbox": [1, 1, 20, 20], "point": [5, 5]}),
        ("bad_layout_ref", good | {"layout_from": "no-colon-here"}),
        ("layout_failed", good | {"layout_from": good["layout_from"].rsplit(":", 2)[0] + ":no-such-image:1"}),
        ("bad_value", good | {"n_suggestions": 0}),
        ("bad_value", good | {"seed": -3}),
        ("insert_failed", good | {"object": "spaceship"}),  # the synthetic world has no spaceship to draw
    ]


def write_catalog(lake: Path, dataset_version: str, n_good: int, work: Path, *, n_bad: int = 0,
                  fmt: str = "jsonl", seed: int = 0) -> tuple[Path, dict[str, int]]:
    """A catalog of `n_good` good rows with `n_bad` bad ones spread among them (cycling through `bad_rows`, the
    last good row repeated once as a `duplicate_item` when n_bad > 0). Returns (path, expected rejects by reason)."""
    good = heldout_rows(lake, "synth", dataset_version, n_good, seed=seed, n_suggestions=1)
    bad = bad_rows(good[0], work / "allowed-extra", work / "outside") if n_bad else []
    rows: list[str | dict] = list(good)
    expected: dict[str, int] = {}
    if n_bad:
        rows.append(good[-1])  # a repeated row
        expected["duplicate_item"] = 1
        step = max(1, len(good) // n_bad)
        for i in range(n_bad - 1):
            reason, row = bad[i % len(bad)]
            if isinstance(row, dict):  # its own id: a repeat of the same bad row would be a duplicate_item
                row = row | {"item_id": f"bad-{i}"}
            rows.insert(min(len(rows), (i + 1) * step), row)
            expected[reason] = expected.get(reason, 0) + 1
    path = work / f"catalog.{fmt}"
    work.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        dicts = [r for r in rows if isinstance(r, dict)]
        cols = sorted({k for r in dicts for k in r})
        table = pa.table({c: [None if r.get(c) is None else json.dumps(r[c]) if isinstance(r[c], list)
                              else str(r[c]) for r in dicts] for c in cols})
        if fmt == "parquet":
            pq.write_table(table, path)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, path)
    return path, expected
