"""`[[evaluate]]` tables of the `smartmask serve` config: evaluate every newly registered model version.

    [[evaluate]]                     # one table per evaluation job; deployment `evaluate/eval-<name>`
    name = "street"                  # letters, digits, '-' or '_'
    model = "m-1a2b"                 # optional; absent: the newest registered model when the run starts
    eval_set = "street-v1"           # optional; absent: the model's dataset version's default set (built on first use)
    baselines = ["box", "oracle"]    # optional (default box, oracle; [] for none): box | oracle | sd-inpaint[:SPEC]
                                     #   | sdxl-inpaint[:SPEC] | inpaint-segment:SEGMENTER
    guidance = ["box", "point"]      # optional (default all): none | box | point | scribble
    n_suggestions = 4                # optional, 1..64 suggestions per item
    steps = 20                       # optional, 1..1000 sampling steps
    inpaint_steps = 30               # optional, 1..1000 steps of a generative inpainter
    inpainter = "synthetic"          # optional: auto (default: synthetic on the synthetic world, else none) | none |
                                     #   when every eval object is a synthetic-world class, else none: mask metrics)
    workers = 2                      # optional, 1..1024 evaluator actors (the CLI's --workers)
    ray_address = "auto"             # optional: join this Ray cluster (default: a local Ray)
    cron = "0 * * * *"               # optional: poll on this 5-field cron (e.g. hourly); absent: on demand only
    timezone = "UTC"                 # optional IANA name (default UTC), only with `cron`

The run is named `<eval set>--<model version>--<config hash>`, so a trigger after a new model is registered
evaluates that model, and a trigger with no new model finds that model's complete run and returns at once (a
killed run resumes). With `cron` the deployment polls: each tick evaluates whatever model is newest then. Without
it nothing runs on a timer: trigger a run from the Prefect UI or `prefect deployment run evaluate/eval-<name>`.
Relative sources (an inpainter or a baseline's model written `./…`, `../…` or `~…`) are resolved against the
config file's directory; neither the model, the eval set nor those sources have to exist when serving starts (a
missing one fails that run, with its one line, not the server).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.serve_bulk import _inpainter, _local, _strings
from flows.serve_config import (
    Schedule,
    ServeConfig,
    _prefect_schedule,
    check_keys,
    optional,
    parse_name,
    parse_schedule,
    register_section,
)

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

NEWEST = "newest"  # = flows.evaluate.NEWEST (not imported here: parsing the file must not load Prefect flows)
# EvalConfig integer fields settable from the file: name → (minimum, maximum), the CLI's bounds
INT_FIELDS = {"n_suggestions": (1, 64), "steps": (1, 1000), "inpaint_steps": (1, 1000)}
EVAL_KEYS = {"name", "model", "eval_set", "baselines", "guidance", "inpainter", "workers", "ray_address", "cron",
             "timezone", *INT_FIELDS}
_EVAL_SET_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True, slots=True)
class EvalEntry:
    """One `[[evaluate]]` table: the `evaluate` flow's arguments; `schedule` None: on demand only."""

    name: str
    config: tuple[tuple[str, Any], ...]  # EvalConfig fields, sorted by key; model_version may be NEWEST
    eval_set: str | None = None  # None: the model's dataset version's default set
    workers: int | None = None
    ray_address: str | None = None
    schedule: Schedule | None = None

    def config_dict(self) -> dict[str, Any]:
        """Plain JSON (arrays as lists); Prefect validates it into an EvalConfig."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.config}


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _baseline(text: str, where: str, base: Path) -> str:
    """A baseline as `Baseline.parse` takes it, its inpainter spec checked and a relative source resolved."""
    from smartmask.evaluation.config import Baseline, EvalConfigError

    try:
        b = Baseline.parse(text)
    except EvalConfigError as e:
        raise ValueError(f"{where}: 'baselines': {_one_line(e)}") from None
    if b.name in ("box", "oracle"):
        return b.name
    if b.name == "inpaint-segment":
        return f"{b.name}:{_local(base, b.spec.strip())}"
    _, _, src = b.spec.partition(":")  # sd-inpaint / sdxl-inpaint, with an optional BASE
    from smartmask.inference.inpaint import parse_spec

    try:
        parse_spec(b.spec)
    except ValueError as e:
        raise ValueError(f"{where}: 'baselines': {_one_line(e)}") from None
    return f"{b.name}:{_local(base, src.strip())}" if src.strip() else b.name


def _unique(values: list[str], key: str, where: str) -> None:
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise ValueError(f"{where}: '{key}' lists {dup[0]!r} more than once")


def parse_eval(table: Mapping[str, Any], where: str, base: Path) -> EvalEntry:
    from smartmask.evaluation.config import GUIDANCE, EvalConfig, EvalConfigError

    check_keys(table, EVAL_KEYS, where)
    name = parse_name(table, where)
    if not name[0].isalnum() or len(name) > 128:
        raise ValueError(f"{where}: 'name' must start with a letter or digit and have at most 128 characters, "
                         f"got {name!r}")
    model = optional(table, "model", where)
    config: dict[str, Any] = {"model_version": model.strip() if model else NEWEST}
    eval_set = optional(table, "eval_set", where)
    if eval_set is not None:
        eval_set = eval_set.strip()
        if not set(eval_set) <= _EVAL_SET_CHARS or eval_set.startswith("."):
            raise ValueError(f"{where}: 'eval_set' must be an eval set name (letters, digits, '-', '_', '.'), "
                             f"got {eval_set!r}")
    baselines = _strings(table, "baselines", where)  # [] is allowed: no baselines
    if baselines is not None:
        baselines = [_baseline(b, where, base) for b in baselines]
        _unique(baselines, "baselines", where)
        config["baselines"] = tuple(baselines)
    guidance = _strings(table, "guidance", where)
    if guidance is not None:
        guidance = [g.strip() for g in guidance]
        bad = [g for g in guidance if g not in GUIDANCE]
        if bad:
            raise ValueError(f"{where}: 'guidance' must be among {', '.join(GUIDANCE)}, got {bad[0]!r}")
        if not guidance:
            raise ValueError(f"{where}: 'guidance' must list at least one of {', '.join(GUIDANCE)}")
        _unique(guidance, "guidance", where)
        config["guidance"] = tuple(guidance)
    for key, (lo, hi) in INT_FIELDS.items():
        v = optional(table, key, where, int)
        if v is None:
            continue
        if not lo <= v <= hi:
            raise ValueError(f"{where}: '{key}' must be {lo}..{hi}, got {v}")
        config[key] = v
    inpainter = optional(table, "inpainter", where)
    if inpainter is not None:
        # auto / none as the CLI takes them (auto: the synthetic renderer on the synthetic world, else none)
        config["inpainter"] = inpainter.strip() if inpainter.strip() in ("auto", "none") else \
            _inpainter(inpainter, where, base)
    try:  # what the flow will build from the deployment's parameters
        EvalConfig.from_dict(config)
    except EvalConfigError as e:
        raise ValueError(f"{where}: '{e.field}': {_one_line(e)}") from None
    workers = optional(table, "workers", where, int)
    if workers is not None and not 1 <= workers <= 1024:
        raise ValueError(f"{where}: 'workers' must be 1..1024, got {workers}")
    ray_address = optional(table, "ray_address", where)
    if "cron" in table:
        schedule = parse_schedule(table, where)
    elif "timezone" in table:
        raise ValueError(f"{where}: 'timezone' needs 'cron' (without a cron the deployment runs on demand only)")
    else:
        schedule = None
    return EvalEntry(name=name, config=tuple(sorted(config.items())), eval_set=eval_set, workers=workers,
                     ray_address=ray_address.strip() if ray_address else None, schedule=schedule)


def build_eval(entry: EvalEntry, cfg: ServeConfig) -> RunnerDeployment:
    from prefect.deployments.runner import EntrypointType

    from flows.evaluate import evaluate
    from smartmask.lake.paths import lake_root

    model = dict(entry.config)["model_version"]
    # No `run`: the flow names it `<eval set>--<model version>--<config hash>` once the newest model is resolved,
    # so each new model gets its own run and an already evaluated one returns at once.
    params: dict[str, Any] = {"config": entry.config_dict(), "lake": str(cfg.lake or lake_root(None))}
    if entry.eval_set:
        params["eval_set"] = entry.eval_set
    if entry.workers is not None:
        params["workers"] = entry.workers
    if entry.ray_address:
        params["ray_address"] = entry.ray_address
    what = (f"Evaluate model {'the newest registered when the run starts' if model == NEWEST else model} on "
            f"{repr(entry.eval_set) if entry.eval_set else 'its dataset version default eval set'}")
    when = (f"polled on {entry.schedule.describe()}; an already evaluated model returns at once"
            if entry.schedule else
            f"no schedule: run it from the Prefect UI or `prefect deployment run evaluate/eval-{entry.name}`")
    extra = {"schedule": _prefect_schedule(entry.schedule)} if entry.schedule else {}
    return evaluate.to_deployment(
        name=f"eval-{entry.name}",
        parameters=params,
        tags=["smartmask", "evaluate"],
        description=f"{what} ({when}).",
        entrypoint_type=EntrypointType.MODULE_PATH,  # `flows.evaluate.evaluate`: cwd-independent
        **extra,
    )


register_section("evaluate", parse_eval, build_eval)
