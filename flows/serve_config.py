"""The `smartmask serve` config file and the Prefect deployments built from it (no server needed here).

The config file (`smartmask.toml` by default; read with `tomllib`)::

    lake = "/data/lake"              # optional; `--lake` overrides it; else $SMARTMASK_LAKE, else ./lake
    max_concurrent_runs = 1          # optional; flow runs this serve process executes at once (default 1)

    [[rebuild]]                      # one table per dataset; deployment `rebuild_dataset/rebuild-<name>`
    name = "synth"                   # dataset name: letters, digits, '-' or '_'
    source = "cocoa:/data/synth/annotations.json"   # auto:FILE | cocoa:FILE | kins:FILE | amodal-coco:FILE | jsonl:FILE
    images = "/data/synth/images"    # directory the source's file names are relative to
    cron = "0 3 * * *"               # standard 5-field cron (minute hour day-of-month month day-of-week)
    timezone = "UTC"                 # optional IANA name (default UTC)
    captioner = "template"           # optional: "template" | "instructblip:DIR_OR_HUB_ID"
    # optional, any other `smartmask.config.RebuildConfig` field: caption_prompt, caption_batch_size,
    # caption_actors, workers, shard_size, min_area, min_evidence_pixels, max_image_pixels

Relative paths (`lake`, the source's FILE, `images`, an `instructblip:./DIR` that starts with `./` or `../`)
are resolved against the config file's directory. Files are not required to exist when serving starts (a
scheduled job may read a mount that appears later); a missing file fails that run, not the server.

    [[bulk_insert]]                  # a bulk insertion run, no schedule (see `flows.serve_bulk`); deployment
    name = "street"                  # `bulk_insert/bulk-<name>`, run from the Prefect UI or
    catalog = "street.parquet"       # `prefect deployment run bulk_insert/bulk-street`

    [[evaluate]]                     # evaluate each new model (see `flows.serve_eval`); deployment
    name = "street"                  # `evaluate/eval-<name>`, on demand, or polled with `cron` + `timezone`
    cron = "0 * * * *"               # optional: hourly, the newest model (an already evaluated one: no work)

Every mistake is a `ValueError` with one line naming the file, the entry and the key.

Later stages add their own deployments to the same serve with `register_section(...)` (a new `[[key]]`
table kind: a parser for one table and a builder of one deployment), from a module listed in
`SECTION_MODULES`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartmask.sources.load import KINDS

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEFAULT_CONFIG = "smartmask.toml"
SOURCE_KINDS = KINDS  # the annotation layouts smartmask.sources reads
# Modules imported by `load_serve_config` so that their `register_section(...)` calls run (later stages).
SECTION_MODULES: tuple[str, ...] = ("flows.serve_bulk", "flows.serve_eval")


# ---------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class Schedule:
    cron: str
    timezone: str = "UTC"

    def describe(self) -> str:
        return f"cron '{self.cron}' ({self.timezone})"


@dataclass(frozen=True, slots=True)
class RebuildSchedule:
    """One `[[rebuild]]` table: the `rebuild_dataset` flow's arguments plus its schedule."""

    name: str
    source: str  # kind:ABSOLUTE_PATH
    images: str  # absolute
    schedule: Schedule
    config: tuple[tuple[str, Any], ...] = ()  # RebuildConfig fields given in the file, sorted by key

    def config_dict(self) -> dict[str, Any]:
        return dict(self.config)


@dataclass(frozen=True, slots=True)
class Section:
    """A kind of `[[key]]` table: `parse(table, where, base_dir)` → an entry with `.name` and `.schedule`
    (a `Schedule`, or None: run on demand only; raise ValueError naming `where` and the key),
    `build(entry, cfg)` → its RunnerDeployment."""

    key: str
    parse: Callable[[Mapping[str, Any], str, Path], Any]
    build: Callable[[Any, ServeConfig], RunnerDeployment]


SECTIONS: dict[str, Section] = {}


def register_section(key: str, parse: Callable[[Mapping[str, Any], str, Path], Any],
                     build: Callable[[Any, ServeConfig], RunnerDeployment]) -> None:
    if key in _TOP_LEVEL_KEYS:
        raise ValueError(f"{key!r} is a top-level setting, not a section")
    SECTIONS[key] = Section(key, parse, build)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    path: Path  # the config file, absolute
    lake: Path | None  # None: `--lake`, else $SMARTMASK_LAKE, else ./lake, decided by `serve`
    max_concurrent_runs: int = 1
    sections: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (section key, its entries), registry order

    def section(self, key: str) -> tuple[Any, ...]:
        return dict(self.sections).get(key, ())

    @property
    def rebuild(self) -> tuple[RebuildSchedule, ...]:
        return self.section("rebuild")

    @property
    def bulk_insert(self) -> tuple[Any, ...]:  # flows.serve_bulk.BulkEntry
        return self.section("bulk_insert")


_TOP_LEVEL_KEYS = {"lake": str, "max_concurrent_runs": int}
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def _resolve(base: Path, p: str) -> Path:
    return (base / Path(p).expanduser()).resolve()


def require(table: Mapping[str, Any], key: str, where: str, kind: type = str) -> Any:
    """A required key of `kind` (non-empty when a string)."""
    if key not in table:
        raise ValueError(f"{where}: missing key '{key}'")
    return optional(table, key, where, kind)


def optional(table: Mapping[str, Any], key: str, where: str, kind: type = str, default: Any = None) -> Any:
    if key not in table:
        return default
    v = table[key]
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if kind is float:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
    if not ok:
        want = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}.get(kind, kind.__name__)
        raise ValueError(f"{where}: '{key}' must be {want}, got {_type_name(v)} {v!r}")
    if kind is str and not v.strip():
        raise ValueError(f"{where}: '{key}' must not be empty")
    return v


def check_keys(table: Mapping[str, Any], allowed: set[str] | dict, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(k) for k in unknown)} (allowed: {', '.join(sorted(allowed))})")


def parse_name(table: Mapping[str, Any], where: str) -> str:
    name = require(table, "name", where)
    if not set(name) <= _NAME_CHARS:
        raise ValueError(f"{where}: 'name' must be letters, digits, '-' or '_', got {name!r}")
    return name


def parse_schedule(table: Mapping[str, Any], where: str) -> Schedule:
    """`cron` (5 fields, required) and `timezone` (IANA, optional), validated as Prefect validates them."""
    cron = " ".join(require(table, "cron", where).split())
    tz = optional(table, "timezone", where, default="UTC")
    if len(cron.split()) != 5:
        raise ValueError(f"{where}: 'cron' must have 5 fields (minute hour day-of-month month day-of-week), "
                         f"got {cron!r}")
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError:
        raise ValueError(f"{where}: 'cron' is not a valid cron expression: {cron!r}") from None
    try:
        CronSchedule(cron=cron, timezone=tz)
    except ValidationError:
        raise ValueError(f"{where}: 'timezone' is not an IANA time zone name (e.g. Europe/Paris): {tz!r}") from None
    return Schedule(cron, tz)


def _rebuild_fields() -> dict[str, tuple[type, int | None]]:
    """RebuildConfig's fields settable from the file: name → (type, minimum)."""
    from smartmask.config import RebuildConfig

    kinds = {"int": int, "str": str, "float": float, "bool": bool}
    out = {}
    for f in dataclasses.fields(RebuildConfig):
        kind = kinds.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""), object)
        minimum = None
        if kind is int:
            minimum = 1 if f.name in ("workers", "shard_size", "caption_batch_size", "caption_actors",
                                      "max_image_pixels") else 0
        out[f.name] = (kind, minimum)
    return out


_REBUILD_KEYS = {"name", "source", "images", "cron", "timezone"}


def parse_rebuild(table: Mapping[str, Any], where: str, base: Path) -> RebuildSchedule:
    fields = _rebuild_fields()
    check_keys(table, _REBUILD_KEYS | set(fields), where)
    name = parse_name(table, where)
    source = require(table, "source", where)
    kind, sep, file = source.partition(":")
    if not sep or not file.strip():
        raise ValueError(f"{where}: 'source' must look like KIND:FILE with KIND one of {', '.join(SOURCE_KINDS)}, got {source!r}")
    if kind not in SOURCE_KINDS:
        raise ValueError(f"{where}: 'source' has unknown kind {kind!r} (expected {', '.join(SOURCE_KINDS)})")
    images = _resolve(base, require(table, "images", where))
    schedule = parse_schedule(table, where)
    config: dict[str, Any] = {}
    for key, (kind_t, minimum) in fields.items():
        if key not in table:
            continue
        v = table[key] if kind_t is object else optional(table, key, where, kind_t)
        if minimum is not None and v < minimum:
            raise ValueError(f"{where}: '{key}' must be >= {minimum}, got {v}")
        config[key] = v
    cap = config.get("captioner")
    if cap is not None:
        if cap != "template" and not (cap.startswith("instructblip:") and cap.partition(":")[2].strip()):
            raise ValueError(f"{where}: 'captioner' must be 'template' or 'instructblip:DIR_OR_HUB_ID', got {cap!r}")
        model = cap.partition(":")[2]
        if model.startswith(("./", "../", "~")):
            config["captioner"] = f"instructblip:{_resolve(base, model)}"
    return RebuildSchedule(name=name, source=f"{kind}:{_resolve(base, file)}", images=str(images),
                           schedule=schedule, config=tuple(sorted(config.items())))


def build_rebuild(entry: RebuildSchedule, cfg: ServeConfig) -> RunnerDeployment:
    from prefect.deployments.runner import EntrypointType

    from flows.rebuild_dataset import rebuild_dataset
    from smartmask.lake.paths import lake_root

    params: dict[str, Any] = {"source": entry.source, "images": entry.images, "name": entry.name,
                              "lake": str(cfg.lake or lake_root(None))}
    if entry.config:
        params["config"] = entry.config_dict()  # plain JSON; Prefect validates it into a RebuildConfig
    return rebuild_dataset.to_deployment(
        name=f"rebuild-{entry.name}",
        schedule=_prefect_schedule(entry.schedule),
        parameters=params,
        tags=["smartmask", "rebuild"],
        description=f"Rebuild dataset {entry.name!r} from {entry.source} ({entry.schedule.describe()}).",
        entrypoint_type=EntrypointType.MODULE_PATH,  # `flows.rebuild_dataset.rebuild_dataset`: cwd-independent
    )


def _prefect_schedule(s: Schedule):
    from prefect.schedules import Cron

    return Cron(s.cron, timezone=s.timezone)


register_section("rebuild", parse_rebuild, build_rebuild)


def load_serve_config(path: str | os.PathLike) -> ServeConfig:
    """Read and validate the serve config. Raises ValueError with one line naming the file, entry and key."""
    import importlib

    for mod in SECTION_MODULES:
        importlib.import_module(mod)
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise ValueError(f"serve config not found: {p}")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid TOML: {' '.join(str(e).split())}") from None
    base = p.parent
    check_keys(doc, set(_TOP_LEVEL_KEYS) | set(SECTIONS), str(p))
    lake = optional(doc, "lake", str(p))
    limit = optional(doc, "max_concurrent_runs", str(p), int, default=1)
    if limit < 1:
        raise ValueError(f"{p}: 'max_concurrent_runs' must be >= 1, got {limit}")
    sections = []
    for key, sec in SECTIONS.items():
        tables = doc.get(key, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise ValueError(f"{p}: '{key}' must be an array of tables ([[{key}]]), got {_type_name(tables)}")
        entries, seen = [], {}
        for i, t in enumerate(tables):
            where = f"{p}: [[{key}]] #{i + 1}" + (f" ({t['name']!r})" if isinstance(t.get("name"), str) else "")
            e = sec.parse(t, where, base)
            if e.name in seen:
                raise ValueError(f"{where}: duplicate name {e.name!r} (also [[{key}]] #{seen[e.name] + 1})")
            seen[e.name] = i
            entries.append(e)
        if entries:
            sections.append((key, tuple(entries)))
    if not sections:
        raise ValueError(f"{p}: nothing to serve: add at least one "
                         f"{' or '.join(f'[[{k}]]' for k in SECTIONS)} table")
    return ServeConfig(path=p, lake=_resolve(base, lake) if lake else None, max_concurrent_runs=limit,
                       sections=tuple(sections))


def build_deployments(cfg: ServeConfig) -> list[RunnerDeployment]:
    """One RunnerDeployment per entry of every section, named `<section>-<name>`; no server needed."""
    out = []
    for key, entries in cfg.sections:
        out.extend(SECTIONS[key].build(e, cfg) for e in entries)
    return out
