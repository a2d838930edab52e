"""`smartmask serve`: Prefect deployments with their schedules, from one TOML file.

The config file (`smartmask.toml` by default; read with `tomllib`)::

    lake = "/data/lake"              # optional; `--lake` overrides it; else $SMARTMASK_LAKE, else ./lake
    max_concurrent_runs = 1          # optional; flow runs this serve process executes at once (default 1)

    [[rebuild]]                      # one table per dataset; deployment `rebuild_dataset/rebuild-<name>`
    name = "synth"                   # dataset name: letters, digits, '-' or '_'
    source = "cocoa:/data/synth/annotations.json"   # cocoa:FILE | kins:FILE | jsonl:FILE
    images = "/data/synth/images"    # directory the source's file names are relative to
    cron = "0 3 * * *"               # standard 5-field cron (minute hour day-of-month month day-of-week)
    timezone = "UTC"                 # optional IANA name (default UTC)
    captioner = "template"           # optional: "template" | "instructblip:DIR_OR_HUB_ID"
    # optional, any other `smartmask.config.RebuildConfig` field: caption_prompt, caption_batch_size,
    # caption_actors, workers, shard_size, min_area, min_evidence_pixels, max_image_pixels

Relative paths (`lake`, the source's FILE, `images`, an `instructblip:./DIR` that starts with `./` or `../`)
are resolved against the config file's directory. Files are not required to exist when serving starts (a
scheduled job may read a mount that appears later); a missing file fails that run, not the server.

Every mistake is a `ValueError` with one line naming the file, the entry and the key.

`serve()` uses the Prefect server that `PREFECT_API_URL` names; when none is set it starts a local one on a
free loopback port (`local_server`) for as long as it runs, then `prefect.serve()`s the deployments: each flow
run executes in a subprocess of this process, picked up within `PREFECT_RUNNER_POLL_FREQUENCY` seconds.

Later stages add their own deployments to the same serve with `register_section(...)` (a new `[[key]]`
table kind: a parser for one table and a builder of one deployment), from a module listed in
`SECTION_MODULES`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEFAULT_CONFIG = "smartmask.toml"
SOURCE_KINDS = ("cocoa", "kins", "jsonl")
SERVER_STARTUP_TIMEOUT_S = 60.0
SERVER_STOP_GRACE_S = 10.0
# Modules imported by `load_serve_config` so that their `register_section(...)` calls run (later stages).
SECTION_MODULES: tuple[str, ...] = ()


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
    (raise ValueError naming `where` and the key), `build(entry, cfg)` → its RunnerDeployment."""

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
        raise ValueError(f"{where}: 'source' must look like cocoa:FILE, kins:FILE or jsonl:FILE, got {source!r}")
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
    from smartmask.lake.layout import lake_root

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


# ---------------------------------------------------------------------------------------------- the server


class ServerError(RuntimeError):
    """The local Prefect server did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _log_tail(path: Path, n: int = 1) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def _stop(proc: subprocess.Popen, grace: float = SERVER_STOP_GRACE_S) -> None:
    """SIGTERM the process group, then SIGKILL it after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    # the leader may be gone while children of its group linger
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _configured_api_url() -> str | None:
    from prefect.settings import get_current_settings

    return os.environ.get("PREFECT_API_URL") or get_current_settings().api.url


def _ui_url(api_url: str) -> str:
    from prefect.settings import get_current_settings

    s = get_current_settings()
    if s.api.url == api_url and s.ui_url:
        return s.ui_url.rstrip("/")
    return api_url.rstrip("/").removesuffix("/api")


@contextlib.contextmanager
def local_server(port: int | None = None, home: Path | None = None,
                 startup_timeout: float = SERVER_STARTUP_TIMEOUT_S) -> Iterator[str]:
    """Yield the Prefect UI URL; start a local server first when PREFECT_API_URL is not set.

    The server (`prefect server start --host 127.0.0.1 --port PORT`, its own process group, analytics off,
    PREFECT_HOME = `home` or the user's) lives for the `with` block; PREFECT_API_URL points at it meanwhile,
    both in os.environ (subprocesses) and in Prefect's settings (this process). On exit: SIGTERM, then SIGKILL.
    """
    existing = _configured_api_url()
    if existing:
        yield _ui_url(existing)
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if home is not None:
        env["PREFECT_HOME"] = str(Path(home).expanduser().resolve())
    # The server's output goes to PREFECT_HOME/smartmask-server-PORT.log, kept only when it failed.
    from prefect.settings import get_current_settings

    log_dir = Path(home).expanduser() if home is not None else Path(get_current_settings().home)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"smartmask-server-{port}.log"
    with log.open("wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    came_up = False
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(url):
            if proc.poll() is not None:
                raise ServerError(f"local Prefect server exited with code {proc.returncode} before becoming "
                                  f"healthy ({_log_tail(log) or 'no output'}; log: {log})")
            if time.monotonic() > deadline:
                raise ServerError(f"local Prefect server on {url} not healthy after {startup_timeout:.0f} s "
                                  f"(log: {log})")
            time.sleep(0.25)
        came_up = True
        old = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = f"{url}/api"
        try:
            with temporary_settings(updates={PREFECT_API_URL: f"{url}/api"}):
                yield url
        finally:
            if old is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = old
    finally:
        crashed = proc.poll() is not None  # it died under us
        _stop(proc)
        if came_up and not crashed:
            log.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- serve


def _raise_interrupt(signum, frame):  # until Prefect's runner installs its own SIGTERM handler
    raise KeyboardInterrupt


def serve(config_path: str | os.PathLike | ServeConfig = DEFAULT_CONFIG, lake: str | os.PathLike | None = None,
          echo: Callable[[str], None] = print) -> None:
    """Load the config, start or use the server, print the UI URL and one line per deployment, serve (blocks).

    `config_path` may also be an already loaded ServeConfig.
    Lake: `lake` (the `--lake` option), else the file's `lake`, else $SMARTMASK_LAKE, else ./lake.
    Returns after Ctrl-C / SIGTERM, having stopped the local server (when it started one).
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from smartmask.lake.layout import lake_root

    cfg = config_path if isinstance(config_path, ServeConfig) else load_serve_config(config_path)
    cfg = dataclasses.replace(cfg, lake=lake_root(lake) if lake else (cfg.lake or lake_root(None)))
    deployments = build_deployments(cfg)
    entries = [e for _, es in cfg.sections for e in es]
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        with local_server() as ui:
            import prefect

            echo(f"Prefect UI: {ui}")
            echo(f"lake: {cfg.lake}")
            for d, e in zip(deployments, entries, strict=True):
                echo(f"deployment {d.flow_name}/{d.name}: {e.schedule.describe()}")
            prefect.serve(*deployments, limit=cfg.max_concurrent_runs, print_starting_message=False)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    echo("stopped")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--lake")
    a = ap.parse_args()
    serve(a.config, a.lake)
