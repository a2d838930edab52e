"""What a lake holds, one row per published dataset version and per registered model version.

    list_datasets(lake)   name, version, created_at, source, images/instances/classes accepted and rejected, ...
    list_models(lake)     version, created_at, preset, dataset@version, run_id, steps, final_loss, val_loss, ...

Both read the small JSON manifests each version is published with (`_manifest.json` of a dataset version,
`lineage.json` of a model version) plus, for class counts, the version's vocabulary table. Those files are what
`registry.resolve_dataset` / `resolve_model` read too, so a row's `newest` flag is exactly the version that a
reference without `@VERSION` (or a missing `--model`) resolves to. A version folder without its manifest is not
published (publishing writes the manifest before the rename that makes the folder appear), so it is not listed.

Counts, from the manifest's `counts` (every input record is either accepted or rejected with a reason code):
images = records of kind `image`; instances = records of kind `region` (one amodal layer each); classes = labels in
the version's vocabulary with at least one accepted instance, and, as rejected, labels the source used whose every
instance was rejected (the vocabulary is built from all parsed labels, `instances` counts the accepted ones).

Rows come back as a pyarrow Table so that the same renderers as `smartmask query` print them
(`smartmask.lake.render.render`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATASETS = pa.schema([
    ("name", pa.string()), ("version", pa.string()), ("newest", pa.bool_()), ("status", pa.string()),
    ("created_at", pa.string()), ("images_accepted", pa.int64()), ("images_rejected", pa.int64()),
    ("instances_accepted", pa.int64()), ("instances_rejected", pa.int64()),
    ("classes_accepted", pa.int64()), ("classes_rejected", pa.int64()),
    ("captioner", pa.string()), ("source", pa.string()),
])

MODELS = pa.schema([
    ("version", pa.string()), ("newest", pa.bool_()), ("created_at", pa.string()), ("preset", pa.string()),
    ("dataset", pa.string()), ("run_id", pa.string()), ("steps", pa.int64()), ("final_loss", pa.float64()),
    ("val_loss", pa.float64()), ("code_version", pa.string()),
])


class CatalogError(ValueError):
    """A manifest that exists but cannot be read: the lake is damaged. One line naming the file."""


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CatalogError(f"cannot read {path}: {' '.join(str(e).split())}") from None
    if not isinstance(doc, dict):
        raise CatalogError(f"cannot read {path}: not a JSON object")
    return doc


def _count(counts: dict, kind: str, which: str) -> int | None:
    value = (counts.get(kind) or {}).get(which)
    return int(value) if isinstance(value, (int, float)) else None


def _classes(version_dir: Path) -> tuple[int | None, int | None]:
    """(labels with an accepted instance, labels whose every instance was rejected) from the vocabulary table."""
    try:
        instances = pq.read_table(version_dir / "vocabulary", columns=["instances"]).column("instances").to_pylist()
    except (OSError, KeyError, pa.ArrowException):  # an older version without the column: unknown, not zero
        return None, None
    return sum(1 for n in instances if n), sum(1 for n in instances if not n)


def _newest(rows: list[dict], group: str | None) -> None:
    """Mark the row a version-less reference resolves to (per `group`): max (created_at, version), as the registry."""
    best: dict = {}
    for r in rows:
        if r.get("status") == "no_accepted_records":  # holds only rejects: never resolved (registry.resolve_dataset)
            continue
        key = r[group] if group else None
        if key not in best or (r["created_at"] or "", r["version"]) > (best[key]["created_at"] or "",
                                                                        best[key]["version"]):
            best[key] = r
    for r in rows:
        r["newest"] = best.get(r[group] if group else None) is r


def list_datasets(lake: Path) -> pa.Table:
    """One row per published dataset version, by name, newest version first."""
    rows = []
    for manifest in sorted(Path(lake).glob("datasets/name=*/version=*/_manifest.json")):
        m = _read_json(manifest)
        folder = manifest.parent
        counts = m.get("counts") or {}
        classes_ok, classes_rejected = _classes(folder)
        rows.append({
            "name": m.get("name") or folder.parent.name.removeprefix("name="),
            "version": m.get("version") or folder.name.removeprefix("version="),
            "status": m.get("status") or "published", "created_at": m.get("created_at"),
            "images_accepted": _count(counts, "image", "accepted"),
            "images_rejected": _count(counts, "image", "rejected"),
            "instances_accepted": _count(counts, "region", "accepted"),
            "instances_rejected": _count(counts, "region", "rejected"),
            "classes_accepted": classes_ok, "classes_rejected": classes_rejected,
            "captioner": m.get("captioner"), "source": m.get("source"),
        })
    _newest(rows, "name")
    rows.sort(key=lambda r: (r["name"], r["created_at"] or "", r["version"]), reverse=True)
    rows.sort(key=lambda r: r["name"])  # stable: names ascending, each name's versions newest first
    return pa.Table.from_pylist(rows, schema=DATASETS)


def _float(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def list_models(lake: Path) -> pa.Table:
    """One row per registered model version, newest first; `dataset` is the lineage as NAME@VERSION."""
    rows = []
    for lineage in sorted(Path(lake).glob("models/version=*/lineage.json")):
        m = _read_json(lineage)
        metrics = m.get("metrics") or {}
        dataset = f"{m['dataset']}@{m['dataset_version']}" if m.get("dataset") and m.get("dataset_version") else None
        steps = m.get("steps", metrics.get("step"))
        rows.append({
            "version": m.get("version") or lineage.parent.name.removeprefix("version="),
            "created_at": m.get("created_at"), "preset": m.get("preset"), "dataset": dataset,
            "run_id": m.get("run_id"), "steps": int(steps) if isinstance(steps, (int, float)) else None,
            "final_loss": _float(metrics.get("loss")), "val_loss": _float(metrics.get("val_loss")),
            "code_version": m.get("code_version"),
        })
    _newest(rows, None)
    rows.sort(key=lambda r: (r["created_at"] or "", r["version"]), reverse=True)
    return pa.Table.from_pylist(rows, schema=MODELS)
