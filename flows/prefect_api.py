"""Start Prefect's temporary API server for a CLI flow run, one process at a time.

Without `PREFECT_API_URL`, every `smartmask rebuild|train|demo` process starts its own temporary Prefect server on
the shared SQLite database in `PREFECT_HOME`. Two starting at the same moment race on the database's migrations,
and the loser never becomes healthy: Prefect then fails the run with "Timed out while attempting to connect to
ephemeral Prefect API server" (seen with two concurrent rebuilds of one input). So the start is serialised with a
file lock in `PREFECT_HOME`, and given 120 s instead of 20 (a loaded 2-core machine needs more). Once started,
Prefect's own client reuses this server (it is a per-process singleton).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

STARTUP_TIMEOUT_S = "120"


class PrefectUnavailable(RuntimeError):
    """Prefect's API could not be started; one line."""


def ensure_api() -> None:
    """Start the temporary server now (serialised across processes) unless an API URL is configured."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", STARTUP_TIMEOUT_S)
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".smartmask-server-start.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        try:
            SubprocessASGIServer().start()
        except RuntimeError as e:
            raise PrefectUnavailable(f"could not start Prefect's temporary API server: {' '.join(str(e).split())[:300]}"
                                     f"; set PREFECT_API_URL to a running server") from None
