"""Flow `evaluate`: score a model version (and baselines) on a frozen eval set, on Ray Data.

    resolve the model (newest by default) and the eval set (the model's dataset's default set, built on first use)
    → lock the run → run.json (eval set content hash + config hash) → Ray Data: every pending item through an
    `Evaluator` actor, rows committed per batch → every item in? → summary.parquet (intervals, paired differences
    against the baselines and against `compare` model versions evaluated on the same set) → report.md

The run name defaults to `<eval set>--<model version>--<config hash[:8]>`: evaluating the same version with the
same settings again finds the complete run and returns it; a killed run resumes with the items not yet committed.
`compare`: model versions to pair with (their runs on this eval set with the same settings are found, or run);
by default the previous model version evaluated on this set with these settings, if any.
`python -m flows.evaluate --model V [--eval-set NAME] [--lake DIR]`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.states import Failed

from smartmask.evaluation.config import EVAL_CODE_VERSION, EvalConfig, EvalConfigError
from smartmask.evaluation.eval_set import EvalSetError, ensure_default, load_eval_set
from smartmask.evaluation.store import (
    EvalIncomplete,
    EvalRefused,
    check_complete,
    default_run_name,
    eval_run_dir,
    start,
)
from smartmask.lake.locks import LockHeld, lake_lock
from smartmask.lake.paths import lake_root

#: `EvalConfig.model_version` placeholder: the newest registered model, resolved when the run starts (a `serve`
#: deployment evaluates each new model this way; a model already evaluated with the same settings is not redone).
NEWEST = "newest"


def resolve_job(root: Path, cfg: EvalConfig, eval_set: str | None) -> tuple[EvalConfig, str, dict]:
    """(config with the model version resolved, eval set name, model lineage); BadInput / EvalSetError (one line)."""
    from smartmask.inference.errors import BadInput
    from smartmask.lake.paths import model_dir
    from smartmask.registry import NotFound, resolve_model

    lineage: dict = {}
    if cfg.model_version is not None or eval_set is None:
        wanted = None if cfg.model_version == NEWEST else cfg.model_version
        try:
            cfg = dataclasses.replace(cfg, model_version=resolve_model(root, wanted))
        except NotFound as e:
            raise BadInput(str(e), "model") from None
        lineage = json.loads((model_dir(root, cfg.model_version) / "lineage.json").read_text())
    if eval_set is None:
        es = ensure_default(root, lineage["dataset"], lineage["dataset_version"])
    else:
        es = load_eval_set(root, eval_set)  # exists and unmodified
    return pin_specs(cfg, es), es.name, lineage


def pin_specs(cfg: EvalConfig, es) -> EvalConfig:
    """`auto` feature extractor / CLIP backbone decided on this machine before the config is hashed (every actor
    then loads the same ones), and every model source checked offline; EvalConfigError naming the setting otherwise."""
    from smartmask.evaluation.clip_score import ClipScorer
    from smartmask.evaluation.fid import resolve_extractor
    from smartmask.inference.inpaint import parse_spec
    from smartmask.pretrained import ModelNotFound, model_revision

    try:
        fid = resolve_extractor(cfg.fid_extractor)
    except (ValueError, ModelNotFound) as e:
        raise EvalConfigError(str(e), "fid-extractor") from None
    try:
        clip = ClipScorer.resolve(cfg.clip)
    except (ValueError, ModelNotFound) as e:
        raise EvalConfigError(str(e), "clip") from None
    inpainter = cfg.inpainter
    if inpainter == "auto":  # the world's renderer when every object is a synthetic-world class, else none
        from smartmask.inference.synthetic_inpaint import synthetic_class

        try:
            for it in es.items:
                synthetic_class(it["object"])
            inpainter = "synthetic"
        except ValueError:
            inpainter = "none"
    sources = []
    if inpainter != "none":
        try:
            parsed = parse_spec(inpainter)
        except ValueError as e:
            raise EvalConfigError(str(e), "inpainter") from None
        sources = [(parsed.base, "inpainter"), (parsed.controlnet, "inpainter")]
    for b in cfg.baseline_specs:
        if b.name == "inpaint-segment":
            sources.append((b.spec, "baselines"))  # the segmenter
        elif b.spec:
            try:
                sources.append((parse_spec(b.spec).base, "baselines"))
            except ValueError as e:
                raise EvalConfigError(str(e), "baselines") from None
    for source, field in sources:
        if source:
            try:
                model_revision(source)
            except ModelNotFound as e:
                raise EvalConfigError(str(e), field) from None
    return dataclasses.replace(cfg, fid_extractor=fid, clip=clip, inpainter=inpainter)


def previous_runs(root: Path, eval_set: str, cfg: EvalConfig,
                  versions: list[str] | None) -> list[tuple[str, EvalConfig, Path]]:
    """Complete runs on `eval_set` with `cfg`'s settings for the model `versions` (default: the newest other
    version registered before this one that has such a run)."""
    found = []
    if versions is None:  # the newest earlier version with a complete run of these settings on this set
        lineages = [json.loads(p.read_text()) for p in (root / "models").glob("version=*/lineage.json")]
        order = [m["version"] for m in sorted(lineages, key=lambda m: (m["created_at"], m["version"]))]  # oldest first
        mine = order.index(cfg.model_version) if cfg.model_version in order else len(order)
        for v in reversed(order[:mine]):
            other = dataclasses.replace(cfg, model_version=v)
            folder = eval_run_dir(root, default_run_name(eval_set, v, other.config_hash()))
            if (folder / "summary.parquet").exists():
                return [(v, other, folder)]
        return []
    for v in versions:
        other = dataclasses.replace(cfg, model_version=v)
        found.append((v, other, eval_run_dir(root, default_run_name(eval_set, v, other.config_hash()))))
    return found


@flow(name="evaluate")
def evaluate(config: EvalConfig, eval_set: str | None = None, lake: str | None = None, run: str | None = None,
             compare: list[str] | None = None, workers: int = 2, ray_address: str | None = None,
             lock_wait_s: float = 0.0) -> dict:
    """Returns the manifest with `report` (markdown) and `folder`. Expected failures (no such model or eval set,
    a run name taken by other settings, the run locked, items missing) fail the run with their one line."""
    from smartmask.inference.errors import BadInput

    root = lake_root(lake)
    try:
        cfg, eval_set, lineage = resolve_job(root, config, eval_set)
        others = []
        for _v, ocfg, folder in previous_runs(root, eval_set, cfg, compare) if cfg.model_version else []:
            if not (folder / "summary.parquet").exists():  # asked for explicitly and not evaluated yet: do it
                _run(root, ocfg, eval_set, None, [], {}, workers, ray_address, lock_wait_s)
            others.append(folder)
        return _run(root, cfg, eval_set, run, others, lineage, workers, ray_address, lock_wait_s)
    except (BadInput, EvalSetError, EvalConfigError, EvalRefused, EvalIncomplete, LockHeld) as e:
        return Failed(message=str(e), data=e)


def _run(root: Path, cfg: EvalConfig, eval_set: str, run: str | None, compare_to: list[Path], lineage: dict,
         workers: int, ray_address: str | None, lock_wait_s: float) -> dict:
    from flows.ray_runtime import ray_session
    from smartmask.evaluation.evaluator import expected_rows
    from tasks.evaluate import evaluate_task, summary_task

    es = load_eval_set(root, eval_set)
    run = run or default_run_name(eval_set, cfg.model_version, cfg.config_hash())
    folder = eval_run_dir(root, run)
    with lake_lock(root, "evaluate", run, wait_s=lock_wait_s, what=f"evaluation run {run}"):
        record = start(folder, {
            "run": run, "eval_set": eval_set, "eval_set_hash": es.meta["content_hash"], "dataset": es.dataset,
            "dataset_version": es.version, "model_version": cfg.model_version, "model_lineage": lineage,
            "config": cfg.to_dict(), "config_hash": cfg.config_hash(), "code_version": EVAL_CODE_VERSION,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        base = {"config_hash": record["config_hash"], "code_version": EVAL_CODE_VERSION}
        t0 = time.perf_counter()
        manifest_path = folder / "manifest.json"
        old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        stats = {"items": 0}
        if old.get("status") != "complete":
            with ray_session(address=ray_address):
                stats = evaluate_task(root, folder, eval_set, cfg, base, workers)
        rows_per_item = len(expected_rows(cfg))
        counts = check_complete(folder, {it["item_id"] for it in es.items}, rows_per_item, run)
        compare_key = sorted(str(p) for p in compare_to)
        if old.get("status") != "complete" or old.get("compared_with") != compare_key:
            out = summary_task(folder, record, counts, compare_to, cfg.n_boot)
        else:
            out = {"report": (folder / "report.md").read_text()}
        seconds = time.perf_counter() - t0
        manifest = record | counts | {"status": "complete", "compared_with": compare_key,
                                      "attempts": [*old.get("attempts", []),
                                                   stats | {"seconds": round(seconds, 3)}],
                                      "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        from smartmask.lake.io import write_json_atomic

        write_json_atomic(manifest, manifest_path)
    get_run_logger().info("evaluation run %s complete: %d items, %d rows", run, counts["items"], counts["rows"])
    from tasks.dashboard import dashboard_task

    return manifest | {"report": out["report"], "folder": str(folder), "dashboard": dashboard_task(root)}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model")
    ap.add_argument("--eval-set")
    ap.add_argument("--lake")
    a = ap.parse_args()
    print(evaluate(EvalConfig(model_version=a.model), a.eval_set, a.lake)["report"])
