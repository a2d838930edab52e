"""The Typer app every `smartmask` command registers on, and what all commands share: `--lake`, the one-line
exit-2 error, the checks of folders the user names, the offline defaults. Command modules import this; `flows.cli`
imports the command modules.

The contract: exit 0 done; exit 2 bad input with exactly one line `error: [FLAG: ]what is wrong` on stderr, given
before any work starts (before any model loads); anything else a failure. Click's own usage errors (an unknown or
missing option, a value that is not an int or out of its range) would print a six-line box: `OneLineGroup` turns
them into the same one line. It does so in `main`, the method both the console script (`flows.cli:app`) and
`CliRunner` call, so tests see exactly what users see.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # Typer >= 0.24 parses with its own copy of Click: its exceptions are not the `click` package's
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - an older Typer on plain Click
    from click import exceptions as click_errors


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", None) == "argument"


def _hint(param: Any) -> str | None:
    """The name the user typed for a Click parameter: its long option (`--n`), or an argument's name (`IMAGE`)."""
    if param is None:
        return None
    if _is_argument(param):
        return (param.name or "argument").upper()
    opts = list(getattr(param, "opts", None) or [])
    return next((o for o in opts if o.startswith("--")), opts[0] if opts else param.name)


def usage_line(e: click_errors.ClickException) -> str:
    """A Click error as the CLI's one line (without the `error: ` prefix)."""
    if isinstance(e, click_errors.MissingParameter):
        what = "argument" if _is_argument(e.param) else "option"
        hint = _hint(e.param) or e.param_hint
        return f"{hint}: missing; this {what} is required" if hint else e.format_message()
    if isinstance(e, click_errors.BadParameter):
        hint = _hint(e.param) or (e.param_hint if isinstance(e.param_hint, str) else None)
        message = e.message.removeprefix("Value error, ")  # pydantic's prefix on a Choice error: noise to a user
        message = message[:1].lower() + message[1:]  # "--n: input should be …" reads as one sentence
        return f"{hint}: {message}" if hint else e.format_message()
    if isinstance(e, click_errors.NoSuchOption):
        near = f" (did you mean {', '.join(e.possibilities)}?)" if e.possibilities else ""
        return f"{e.option_name}: no such option{near}"
    if isinstance(e, click_errors.BadOptionUsage):
        return f"{e.option_name}: {'needs a value' if 'requires an argument' in e.message else e.message}"
    return e.format_message()


def one_line(msg: object) -> str:
    return " ".join(str(msg).split())


class OneLineGroup(TyperGroup):
    """Typer's group with Click's usage errors as one `error: …` line (exit 2) instead of a help box.

    Runs Typer's `main` in non-standalone mode, so the errors come back as exceptions, and then ends the way the
    caller asked: `sys.exit(code)` when standalone (the console script, `CliRunner`), else returns the exit code.
    `--help` and a bare `smartmask` (help on stderr, exit 2, as Click does) are unchanged."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        code: Any = 0
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as e:  # a bare `smartmask`: its help, exit 2, as before
            if e.format_message().strip():  # Typer's rich help has printed itself already; plain Click's has not
                e.show()
            code = e.exit_code
        except click_errors.ClickException as e:
            typer.echo(f"error: {one_line(usage_line(e))}", err=True)
            code = 2 if isinstance(e, click_errors.UsageError) else e.exit_code
        except (typer.Abort, getattr(click_errors, "Abort", typer.Abort)):  # Typer 0.29 keeps Abort in typer.exceptions
            typer.echo("Aborted!", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SmartMask pipeline: amodal layer data, training, mask suggestion, insertion. Exit codes: "
                       "0 done, 2 bad input (one line on stderr), anything else a failure.")


SEED_MAX = 2**32 - 1  # numpy's and torch's generators take seeds in 0..2**32-1 (numpy refuses negative ones)


def _check_lake(value: str | None) -> str | None:
    """`--lake` callback: a file is refused while the options are parsed, before any command body runs."""
    from smartmask.lake.guard import PathRefused, check_lake_folder
    from smartmask.lake.paths import lake_root

    try:
        check_lake_folder(lake_root(value))
    except PathRefused as e:
        source = "" if value is not None or not os.environ.get("SMARTMASK_LAKE") else " (from $SMARTMASK_LAKE)"
        raise typer.BadParameter(f"{e}{source}") from None
    return value


def _check_explicit_lake(value: str | None) -> str | None:
    """`--lake` callback where the default is not ours to judge (serve takes the lake from its config file)."""
    return _check_lake(value) if value is not None else None


LakeOpt = Annotated[str | None, typer.Option(
    "--lake", callback=_check_lake, help="Lake directory (default $SMARTMASK_LAKE or ./lake)")]
ExplicitLakeOpt = Annotated[str | None, typer.Option(
    "--lake", callback=_check_explicit_lake, help="Lake directory (default: the config's, else $SMARTMASK_LAKE, "
                                                  "else ./lake)")]


class Format(StrEnum):
    """`--format` of the listing commands (rendered by `smartmask.lake.render.render`)."""

    table = "table"
    csv = "csv"
    json = "json"


FormatOpt = Annotated[Format, typer.Option(
    "--format", help="table (for people) | csv | json (for programs: every row, nothing else on stdout)")]


def bad_input(msg: str) -> typer.Exit:
    typer.echo(f"error: {one_line(msg)}", err=True)
    return typer.Exit(2)


def lake_folder(lake: str | None, *, must_exist: bool = False, writes: bool = False) -> Path:
    """The lake a command uses, checked for what the command does with it; exit 2 naming --lake otherwise."""
    from smartmask.lake.guard import PathRefused, check_lake_folder
    from smartmask.lake.paths import lake_root

    try:
        return check_lake_folder(lake_root(lake), must_exist=must_exist, writes=writes)
    except PathRefused as e:
        raise bad_input(f"--lake: {e}") from None


def output_folder(out: Path, flag: str = "--out", lake: Path | None = None, kind: str | None = None) -> Path:
    """`out` resolved when the command may write there (not a lake's protected folder, not a file, writable)."""
    from smartmask.lake.guard import PathRefused, check_output_dir

    try:
        return check_output_dir(out, lake, kind)
    except PathRefused as e:
        raise bad_input(f"{flag}: {e}") from None


def device_option(device: str | None) -> str | None:
    """`--device` checked against this machine (cpu | cuda | cuda:N | mps) before anything loads onto it."""
    from smartmask.devices import BadDevice, check_device

    try:
        return check_device(device)
    except BadDevice as e:
        raise bad_input(f"--device: {e}") from None


def start_prefect() -> None:
    """Prefect's temporary API, started one process at a time (flows/prefect_api.py); exit 1 in one line if not."""
    from flows.prefect_api import PrefectUnavailable, ensure_api

    try:
        ensure_api()
    except PrefectUnavailable as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


def offline_defaults() -> None:
    # Nothing here may phone home: no hub downloads, no Prefect analytics.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client-side telemetry (the line above is the server's)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
