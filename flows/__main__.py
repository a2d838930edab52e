"""`python -m flows ...` is the `smartmask` CLI (handy where the console script is not on PATH)."""

from flows.cli import app

app(prog_name="smartmask")
