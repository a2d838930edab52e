"""`smartmask serve`: Prefect deployments with their schedules (or none: run on demand), from one TOML file (see
`flows.serve_config`).

`serve()` uses the Prefect server that `PREFECT_API_URL` names; when none is set it starts a local one on a
free loopback port (`local_server`) for as long as it runs, then `prefect.serve()`s the deployments: each flow
run executes in a subprocess of this process, picked up within `PREFECT_RUNNER_POLL_FREQUENCY` seconds.
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
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from flows.serve_config import DEFAULT_CONFIG, ServeConfig, build_deployments, load_serve_config

SERVER_STARTUP_TIMEOUT_S = 60.0
SERVER_STOP_GRACE_S = 10.0

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
    env["DO_NOT_TRACK"] = "1"
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
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from smartmask.lake.paths import lake_root

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
                echo(f"deployment {d.flow_name}/{d.name}: {describe_schedule(e, d)}")
            prefect.serve(*deployments, limit=cfg.max_concurrent_runs, print_starting_message=False)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    echo("stopped")


def describe_schedule(entry, deployment) -> str:
    """The entry's schedule in words; entries without one (`schedule = None`) run only when triggered."""
    if entry.schedule is None:
        return (f"no schedule (run it from the Prefect UI or "
                f"`prefect deployment run {deployment.flow_name}/{deployment.name}`)")
    return entry.schedule.describe()


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
