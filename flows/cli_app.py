"""The Typer app every `smartmask` command registers on, and what all commands share: `--lake`, the one-line
exit-2 error, the offline defaults. Command modules import this; `flows.cli` imports the command modules."""

from __future__ import annotations

import os
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SmartMask pipeline: amodal layer data, training, mask suggestion, insertion.")

LakeOpt = Annotated[str | None, typer.Option("--lake", help="Lake directory (default $SMARTMASK_LAKE or ./lake)")]


def bad_input(msg: str) -> typer.Exit:
    typer.echo(f"error: {' '.join(str(msg).split())}", err=True)
    return typer.Exit(2)


def offline_defaults() -> None:
    # Nothing here may phone home: no hub downloads, no Prefect analytics.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
