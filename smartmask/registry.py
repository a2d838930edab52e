"""The model registry: `<lake>/models/version=<id>/` holds everything a trained SmartMask needs to run.

    model.safetensors + config.json   the released weights (the EMA of training) and the model config
    training.json                     model / sample / train configs as run
    vocabulary.parquet                label → id → colour of the dataset it learned (layouts must use it)
    lineage.json                      dataset name@version, run id, code version, steps, metrics
    model.parquet                     one row for the `models` view
A version id is a content hash of the weights and their lineage; registering is atomic (staging, then rename).
Dataset and model references resolve "newest" by `created_at`, so `--model` and `NAME` without `@VERSION` work.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from smartmask import DATA_CODE_VERSION
from smartmask.lake.io import rows_to_table, utc_stamp, write_json_atomic, write_parquet_atomic
from smartmask.lake.paths import dataset_dir, model_dir
from smartmask.lake.schemas import MODELS
from smartmask.model.config import ModelConfig
from smartmask.model.network import SmartMask


class NotFound(ValueError):
    """A dataset or model reference that does not resolve; the message is one line."""


def resolve_dataset(lake: Path, ref: str) -> tuple[str, str]:
    """`NAME` (newest version) or `NAME@VERSION` → (name, version)."""
    name, _, version = ref.partition("@")
    root = lake / "datasets" / f"name={name}"
    if version:
        path = dataset_dir(lake, name, version) / "_manifest.json"
        if not path.exists():
            raise NotFound(f"dataset {name}@{version} not found in {lake}")
        if json.loads(path.read_text()).get("status") == "no_accepted_records":
            raise NotFound(f"dataset {name}@{version} holds only rejects: no record of its source was accepted")
        return name, version
    # A version that holds only rejects (every record refused) is kept for its rejects, never trained on.
    manifests = [m for p in root.glob("version=*/_manifest.json")
                 if (m := json.loads(p.read_text())).get("status") != "no_accepted_records"]
    if not manifests:
        raise NotFound(f"dataset {name!r} has no published version in {lake}")
    return name, max(manifests, key=lambda m: (m["created_at"], m["version"]))["version"]


def resolve_model(lake: Path, version: str | None = None) -> str:
    """A model version id, or the newest registered one when `version` is None."""
    if version:
        if not (model_dir(lake, version) / "lineage.json").exists():
            raise NotFound(f"model version {version} not found in {lake}")
        return version
    lineages = [json.loads(p.read_text()) for p in (lake / "models").glob("version=*/lineage.json")]
    if not lineages:
        raise NotFound(f"no model is registered in {lake}; run `smartmask train` first")
    return max(lineages, key=lambda m: (m["created_at"], m["version"]))["version"]


def load_model(lake: Path, version: str | None = None, device: str | None = None) -> tuple[SmartMask, dict]:
    v = resolve_model(lake, version)
    d = model_dir(lake, v)
    return SmartMask.load(d, device=device), json.loads((d / "lineage.json").read_text())


def register(lake: Path, checkpoint: Path, model_cfg: ModelConfig, training: dict, dataset: str,
             dataset_version: str, run_id: str, metrics: dict) -> str:
    """Release the EMA weights of `checkpoint` as a new model version; returns its id."""
    model = SmartMask.build(model_cfg)
    ema = load_file(checkpoint / "ema.safetensors")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(ema[n])
    staging = lake / "_staging" / "models" / f"run={run_id}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save(staging)
    h = hashlib.sha256()
    for f in sorted(staging.glob("*.safetensors")):
        h.update(f.read_bytes())
    h.update(json.dumps([dataset, dataset_version, run_id], sort_keys=True).encode())
    version = h.hexdigest()[:16]
    final = model_dir(lake, version)
    if final.exists():  # the same weights from the same run: already registered
        shutil.rmtree(staging)
        return version
    write_json_atomic(training, staging / "training.json")
    vocab = pq.read_table(dataset_dir(lake, dataset, dataset_version) / "vocabulary")
    write_parquet_atomic(vocab, staging / "vocabulary.parquet")
    created = utc_stamp()
    lineage = {"version": version, "preset": model_cfg.preset, "dataset": dataset, "dataset_version": dataset_version,
               "run_id": run_id, "steps": int(metrics.get("step", 0)), "metrics": metrics, "created_at": created,
               "code_version": DATA_CODE_VERSION, "base_model": model_cfg.base_model}
    write_json_atomic(lineage, staging / "lineage.json")
    row = {"preset": model_cfg.preset, "dataset": dataset, "dataset_version": dataset_version, "run_id": run_id,
           "steps": lineage["steps"], "final_loss": metrics.get("loss"), "val_loss": metrics.get("val_loss"),
           "created_at": created, "code_version": DATA_CODE_VERSION, "path": str(final)}
    write_parquet_atomic(rows_to_table([row], MODELS), staging / "model.parquet")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final)
    return version
