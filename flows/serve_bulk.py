"""`[[bulk_insert]]` tables of the `smartmask serve` config: a bulk insertion run served on demand, no schedule.

    [[bulk_insert]]                  # one table per run; deployment `bulk_insert/bulk-<name>`
    name = "street-2024"             # the run name (rerun = resume): letters, digits, '-' or '_'
    catalog = "catalogs/street.parquet"   # .parquet | .csv | .jsonl, one row per item
    model = "m-1a2b"                 # optional; absent: the newest registered model when the run starts
    inpainter = "controlnet-sd15"    # optional (default controlnet-sd15): KIND[:BASE[+CONTROLNET]] | synthetic | DIR
    segmenter = "./models/m2f"       # optional: Mask2Former directory or hub id
    allow_roots = ["images"]         # optional: folders images may be read from (default: the catalog's folder)
    allow_schemes = ["s3"]           # optional: fsspec schemes images may be read from
    n_suggestions = 4                # optional, 1..64, for rows that leave it empty
    seed = 0                         # optional, 0..2**32-1, for rows that leave it empty
    steps = 20                       # optional, 1..1000 sampling steps
    workers = 2                      # optional, 1..1024: tasks/actors per stage (the CLI's --workers)
    placement = "auto"               # optional: auto | fused | staged (the CLI's --placement)
    ray_address = "auto"             # optional: join this Ray cluster (default: a local Ray)

Nothing runs on a timer: trigger a run from the Prefect UI or `prefect deployment run bulk_insert/bulk-<name>`.
Relative paths (`catalog`, `allow_roots`, and an inpainter / segmenter source written `./…`, `../…` or `~…`)
are resolved against the config file's directory; none has to exist when serving starts (a missing one fails
that run, with its one line, not the server).

A run name keeps the catalog and settings of its first start, and a later trigger resumes that run. With `model`
given the run is `<name>`; without it, `<name>-<model version>` (the newest model when the run starts), so a
trigger after a new model is registered starts that model's own run instead of being refused. A table whose
catalog changed needs a new `name`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.serve_config import (
    ServeConfig,
    _resolve,
    _type_name,
    check_keys,
    optional,
    parse_name,
    register_section,
    require,
)

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

NEWEST = "newest"  # = flows.bulk_insert.NEWEST (not imported here: parsing the file must not load Prefect flows)
# BulkConfig integer fields settable from the file: name → (minimum, maximum), the CLI's bounds
INT_FIELDS = {"n_suggestions": (1, 64), "seed": (0, 2**32 - 1), "steps": (1, 1000)}
BULK_KEYS = {"name", "catalog", "model", "inpainter", "segmenter", "allow_roots", "allow_schemes", "ray_address",
             "workers", "placement", *INT_FIELDS}
_PATH_PREFIXES = ("./", "../", "~")
_SCHEME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789+-.")


@dataclass(frozen=True, slots=True)
class BulkEntry:
    """One `[[bulk_insert]]` table: the `bulk_insert` flow's arguments; served on demand (`schedule` is None)."""

    name: str
    catalog: str  # absolute
    config: tuple[tuple[str, Any], ...]  # BulkConfig fields, sorted by key; model_version may be NEWEST
    ray_address: str | None = None
    schedule: None = None

    def config_dict(self) -> dict[str, Any]:
        """Plain JSON (arrays as lists); Prefect validates it into a BulkConfig."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.config}


def _strings(table: Mapping[str, Any], key: str, where: str) -> list[str] | None:
    if key not in table:
        return None
    v = table[key]
    if not isinstance(v, list) or not all(isinstance(s, str) and s.strip() for s in v):
        raise ValueError(f"{where}: '{key}' must be an array of non-empty strings, got {_type_name(v)} {v!r}")
    return v


def _local(base: Path, source: str) -> str:
    """A source written as a relative (`./`, `../`) or home (`~`) path, resolved; anything else as written."""
    return str(_resolve(base, source)) if source.startswith(_PATH_PREFIXES) else source


def _inpainter(spec: str, where: str, base: Path) -> str:
    """`KIND[:BASE[+CONTROLNET]]` (its syntax checked, relative sources resolved), `synthetic`, or a directory."""
    from smartmask.inference.inpaint import DIFFUSERS_KINDS, KINDS, parse_spec

    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    if kind not in KINDS:
        if spec.startswith((*_PATH_PREFIXES, "/")):
            return _local(base, spec)  # a saved pipeline directory (read when the run starts)
        raise ValueError(f"{where}: 'inpainter' must be KIND[:BASE[+CONTROLNET]] with KIND one of "
                         f"{', '.join(KINDS)}, or a pipeline directory (/…, ./… or ../…), got {spec!r}")
    try:
        parse_spec(spec)
    except ValueError as e:
        raise ValueError(f"{where}: 'inpainter': {' '.join(str(e).split())}") from None
    if kind not in DIFFUSERS_KINDS or not rest:
        return spec
    src, plus, cn = rest.rpartition("+") if "+" in rest else (rest, "", "")
    return f"{kind}{sep}{_local(base, src.strip())}{plus}{_local(base, cn.strip()) if plus else ''}"


def parse_bulk(table: Mapping[str, Any], where: str, base: Path) -> BulkEntry:
    check_keys(table, BULK_KEYS, where)
    name = parse_name(table, where)
    if not name[0].isalnum() or len(name) > 128:
        raise ValueError(f"{where}: 'name' must start with a letter or digit and have at most 128 characters, "
                         f"got {name!r}")
    catalog = _resolve(base, require(table, "catalog", where))
    model = optional(table, "model", where)
    config: dict[str, Any] = {"model_version": model.strip() if model else NEWEST,
                              "inpainter": _inpainter(optional(table, "inpainter", where, default="controlnet-sd15"),
                                                      where, base)}
    segmenter = optional(table, "segmenter", where)
    if segmenter is not None:
        config["segmenter"] = _local(base, segmenter.strip())
    roots = _strings(table, "allow_roots", where)
    if roots is not None:
        config["allow_roots"] = tuple(str(_resolve(base, r)) for r in roots)
    schemes = _strings(table, "allow_schemes", where)
    if schemes is not None:
        schemes = [s.strip().lower().removesuffix("://") for s in schemes]
        bad = [s for s in schemes if not s or not s[0].isalpha() or not set(s) <= _SCHEME_CHARS]
        if bad:
            raise ValueError(f"{where}: 'allow_schemes' must be URL schemes such as 's3' or 'gs', got {bad[0]!r}")
        config["allow_schemes"] = tuple(schemes)
    for key, (lo, hi) in INT_FIELDS.items():
        v = optional(table, key, where, int)
        if v is None:
            continue
        if not lo <= v <= hi:
            raise ValueError(f"{where}: '{key}' must be {lo}..{hi}, got {v}")
        config[key] = v
    workers = optional(table, "workers", where, int)
    if workers is not None:
        if not 1 <= workers <= 1024:
            raise ValueError(f"{where}: 'workers' must be 1..1024, got {workers}")
        import dataclasses

        from smartmask.bulk.config import default_stages

        config["stages"] = {k: dataclasses.asdict(r) for k, r in default_stages(workers).items()}
    placement = optional(table, "placement", where)
    if placement is not None:
        if placement not in ("auto", "fused", "staged"):
            raise ValueError(f"{where}: 'placement' must be auto, fused or staged, got {placement!r}")
        config["placement"] = placement
    ray_address = optional(table, "ray_address", where)
    return BulkEntry(name=name, catalog=str(catalog), config=tuple(sorted(config.items())),
                     ray_address=ray_address.strip() if ray_address else None)


def build_bulk(entry: BulkEntry, cfg: ServeConfig) -> RunnerDeployment:
    from prefect.deployments.runner import EntrypointType

    from flows.bulk_insert import bulk_insert
    from smartmask.lake.paths import lake_root

    model = dict(entry.config)["model_version"]
    # With the newest model, each model version gets its own run (`{model}` is filled in when the run starts):
    # a run name is fixed to the config it started with, and a trigger after a new model must not be refused.
    run = f"{entry.name}-{{model}}" if model == NEWEST else entry.name
    params: dict[str, Any] = {"catalog": entry.catalog, "run": run, "config": entry.config_dict(),
                              "lake": str(cfg.lake or lake_root(None))}
    if entry.ray_address:
        params["ray_address"] = entry.ray_address
    return bulk_insert.to_deployment(
        name=f"bulk-{entry.name}",
        parameters=params,
        tags=["smartmask", "bulk_insert"],
        description=(f"Bulk insertion run {entry.name!r} over {entry.catalog}, model "
                     f"{'the newest registered when the run starts' if model == NEWEST else model}. No schedule: "
                     f"run it from the Prefect UI or `prefect deployment run bulk_insert/bulk-{entry.name}`; "
                     f"rerunning resumes it."),
        entrypoint_type=EntrypointType.MODULE_PATH,  # `flows.bulk_insert.bulk_insert`: cwd-independent
    )


register_section("bulk_insert", parse_bulk, build_bulk)
