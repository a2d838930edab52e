"""Registered LLaVA planners: `<lake>/planners/version=<id>/` holds everything `load_planner("llava:<id>",
lake)` needs, loadable with plain transformers (`LlavaForConditionalGeneration.from_pretrained(folder)`).

    config.json, generation_config.json, model.safetensors   the weights (LoRA adapters already merged)
    processor / tokenizer files                              the base model's processor, unchanged
    vocabulary.parquet                                       the colours S_k was painted in (the dataset's)
    planner.json                                             how to paint S_k for it (resolution)
    lineage.json                                             base, dataset name@version, stages, steps, losses

A version id hashes the weights' fingerprint with the dataset version and the run id. Registering is atomic:
the folder is written under `<lake>/_staging/planners/` and renamed into place, so a reader never sees half a
planner and a killed registration leaves nothing under `planners/`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from smartmask import DATA_CODE_VERSION
from smartmask.lake.io import utc_stamp, write_json_atomic, write_parquet_atomic
from smartmask.lake.paths import dataset_dir
from smartmask.planner.base import PlannerError
from smartmask.pretrained import model_revision

PLANNERS = "planners"


def planner_dir(lake: Path, version: str) -> Path:
    return Path(lake) / PLANNERS / f"version={version}"


def resolve_planner(lake: Path, version: str | None = None) -> str:
    """A registered planner version, or the newest one (by `created_at`) when `version` is None."""
    if version:
        if not (planner_dir(lake, version) / "lineage.json").is_file():
            raise PlannerError(f"planner version {version} not found in {lake}")
        return version
    lineages = [json.loads(p.read_text()) for p in (Path(lake) / PLANNERS).glob("version=*/lineage.json")]
    if not lineages:
        raise PlannerError(f"no planner is registered in {lake}; run `smartmask train-planner` first")
    return max(lineages, key=lambda m: (m["created_at"], m["version"]))["version"]


def read_planner_meta(folder: Path) -> dict:
    """`planner.json` of a registered planner folder; {} for any other model folder."""
    path = Path(folder) / "planner.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def read_lineage(lake: Path, version: str) -> dict:
    return json.loads((planner_dir(lake, resolve_planner(lake, version)) / "lineage.json").read_text())


def register_planner(lake: Path, *, model, processor, base: str, dataset: str, dataset_version: str,
                     run_id: str, stages: list[dict], resolution: int, lora: bool) -> str:
    """Release `model` (a plain `LlavaForConditionalGeneration`) with `processor` as a new planner version.

    `stages`: one dict per stage run, in order (`stage`, `steps`, `losses` as [step, loss] pairs, `run`).
    Returns the version id; registering the same weights from the same run again returns the same id."""
    lake = Path(lake)
    staging = lake / "_staging" / PLANNERS / f"run={run_id}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        key = json.dumps([model_revision(staging), dataset, dataset_version, run_id], sort_keys=True)
        version = hashlib.sha256(key.encode()).hexdigest()[:16]
        final = planner_dir(lake, version)
        if final.exists():  # the same weights from the same run: already registered
            shutil.rmtree(staging)
            return version
        vocab = pq.read_table(dataset_dir(lake, dataset, dataset_version) / "vocabulary")
        write_parquet_atomic(vocab, staging / "vocabulary.parquet")
        write_json_atomic({"kind": "llava", "resolution": int(resolution), "prompt_format": 1},
                          staging / "planner.json")
        lineage = {
            "version": version, "kind": "llava", "base": str(base), "base_revision": _revision(base),
            "dataset": dataset, "dataset_version": dataset_version,
            "dataset_ref": f"{dataset}@{dataset_version}",
            "run_id": run_id, "stages": [s["stage"] for s in stages],
            "steps": {s["stage"]: int(s["steps"]) for s in stages},
            "losses": {s["stage"]: s.get("losses", []) for s in stages},
            "final_loss": {s["stage"]: (s["losses"][-1][1] if s.get("losses") else None) for s in stages},
            "lora": bool(lora), "resolution": int(resolution), "created_at": utc_stamp(),
            "code_version": DATA_CODE_VERSION,
        }
        write_json_atomic(lineage, staging / "lineage.json")  # last: a folder with lineage.json is complete
        final.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version


def _revision(base: str) -> str | None:
    try:
        return model_revision(base)
    except Exception:  # a base that was loadable for training but is gone now: the lineage still names it
        return None
