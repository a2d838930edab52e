"""Progress of a long job: a live bar on a terminal, plain log lines when the output is not one.

    with Progress("rebuild", total=12, unit="shards") as p:
        for job in jobs:
            ...
            p.advance(1, rejected=n_rejected)

`SMARTMASK_PROGRESS` picks the form: `auto` (default: a bar when stderr is a TTY, lines otherwise), `bar`,
`lines` or `off`. A bar is drawn with rich (already installed as a Prefect dependency, so the library adds
nothing); lines go to stderr at most every `every_s` seconds plus one at the end, so a CI log or a
`nohup` file gets a readable record instead of carriage-return noise.

The library reports; it never decides where the job runs. Ray workers report to the driver, and the driver owns
the `Progress` (see tasks/train.py), so a cluster job shows one bar, not one per worker.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

MODES = ("auto", "bar", "lines", "off")


def _mode(stream: IO[str], mode: str | None) -> str:
    mode = (mode or os.environ.get("SMARTMASK_PROGRESS") or "auto").strip().lower()
    if mode not in MODES:
        mode = "auto"
    if mode == "auto":
        isatty = getattr(stream, "isatty", None)
        mode = "bar" if isatty is not None and isatty() else "lines"
    return mode


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _fields(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


class Progress:
    """Counts `completed` of `total` (None: unknown) and shows rate, ETA and the latest `fields`."""

    def __init__(self, what: str, total: int | None = None, unit: str = "items", *, stream: IO[str] | None = None,
                 mode: str | None = None, every_s: float = 10.0, initial: int = 0):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.mode = _mode(self.stream, mode)
        self.every_s = every_s
        # A resumed job starts with `initial` done: the rate and ETA count only what this run does.
        self.completed = self._initial = initial
        self.fields: dict[str, Any] = {}
        self._t0 = time.monotonic()
        self._last_line = -float("inf")
        self._line_at: int | None = None  # `completed` when the last line was printed
        self._bar = self._task = None
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn(unit), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                     console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(what, total=total, completed=initial, rate="", info="")

    # ---- reporting -------------------------------------------------------------------------------------------
    def advance(self, n: int = 1, **fields: Any) -> None:
        self.update(self.completed + n, **fields)

    def update(self, completed: int, total: int | None = None, **fields: Any) -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=self.total, rate=self.rate_text(),
                             info=_fields(self.fields))
        elif self.mode == "lines" and time.monotonic() - self._last_line >= self.every_s:
            self._line()

    def rate(self) -> float:
        dt = time.monotonic() - self._t0
        return (self.completed - self._initial) / dt if dt > 0 else 0.0

    def rate_text(self) -> str:
        r = self.rate()
        return f"{r:.3g} {self.unit}/s" if r >= 1 or r == 0 else f"{1 / r:.3g} s/{self.unit.rstrip('s')}"

    def eta(self) -> float | None:
        r = self.rate()
        if self.total is None or r <= 0:
            return None
        return max(0.0, (self.total - self.completed) / r)

    def text(self) -> str:
        """One line: `what: 3/12 shards (25%), 1.5 shards/s, ETA 6s, rejected=4`."""
        done = f"{self.completed}/{self.total}" if self.total is not None else f"{self.completed}"
        pct = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.what}: {done} {self.unit}{pct}", self.rate_text()]
        eta = self.eta()
        if eta is not None and self.completed < (self.total or 0):
            parts.append(f"ETA {_duration(eta)}")
        else:
            parts.append(f"elapsed {_duration(time.monotonic() - self._t0)}")
        if self.fields:
            parts.append(_fields(self.fields))
        return ", ".join(parts)

    def _line(self) -> None:
        self._last_line, self._line_at = time.monotonic(), self.completed
        print(self.text(), file=self.stream, flush=True)

    # ---- lifetime ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.mode == "lines" and self._line_at != self.completed:
            self._line()
        self.mode = "off"  # closing twice prints nothing more

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
