"""Prefect task: rewrite the lake's dashboard (`<lake>/dashboard.html`) at the end of a run that changed what it
shows (an evaluation, a bulk insertion run, the demo). A dashboard that cannot be built is a logged warning, never a
failed run: the run's own results are already committed."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE


@task(name="dashboard", cache_policy=NO_CACHE)
def dashboard_task(lake: Path) -> str | None:
    """The dashboard's path, or None when it could not be built (the reason is logged)."""
    out = Path(lake) / "dashboard.html"
    try:
        from dashboards.build import build_dashboard

        build_dashboard(Path(lake), out)
    except Exception as e:  # noqa: BLE001 — see the module docstring
        get_run_logger().warning("dashboard not rewritten: %s: %s", type(e).__name__, str(e).splitlines()[0][:300]
                                 if str(e) else "")
        return None
    return str(out)
