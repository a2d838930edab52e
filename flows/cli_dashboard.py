"""`smartmask dashboard`: write the lake's dashboard, one self-contained HTML file (dashboards/), and optionally serve
it on 127.0.0.1.

    smartmask dashboard [--out FILE] [--gallery N] [--serve [--port P]] [--lake DIR]

The file needs no network to view: every script, style and image is inlined. The last line of stdout is the path
written (with `--serve`, printed before serving starts; Ctrl-C stops the server). Exit 2 with one line naming the
flag: a lake that does not exist, an --out that is a folder, sits in a folder a lake protects or cannot be written,
a port that cannot be bound.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_app import LakeOpt, app, bad_input, lake_folder, one_line

DEFAULT_PORT = 8765
GALLERY_MAX = 500


def _out_file(out: Path | None, lake: Path) -> Path:
    """The file to write: `--out` (default <lake>/dashboard.html), refused where a lake's stage owns the folder."""
    from smartmask.lake.guard import PathRefused, check_output_dir

    path = (out or lake / "dashboard.html").expanduser().resolve()
    if path.is_dir():
        raise bad_input(f"--out: {path} is a folder; give a file name (e.g. {path / 'dashboard.html'})")
    if path.parent != lake:  # the lake's own top level may hold the page; its stages' folders may not
        try:
            check_output_dir(path.parent, lake)
        except PathRefused as e:
            raise bad_input(f"--out: {e}") from None
    elif not os.access(lake, os.W_OK | os.X_OK):
        raise bad_input(f"--out: {lake} is not writable")
    return path


@app.command("dashboard")
def dashboard(
    out: Annotated[Path | None, typer.Option("--out", help="the HTML file to write (default: <lake>/dashboard.html)")
                   ] = None,
    serve: Annotated[bool, typer.Option("--serve", help="serve the file on 127.0.0.1 after writing it (Ctrl-C stops)")
                     ] = False,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="--serve's port, 1..65535")] = DEFAULT_PORT,
    gallery: Annotated[int, typer.Option(
        "--gallery", min=0, max=GALLERY_MAX, help=f"eval items in the gallery, 0..{GALLERY_MAX}")] = 24,
    lake: LakeOpt = None,
) -> None:
    """Write the lake's dashboard: model versions on every eval metric, paired comparisons, breakdowns, trends, loss
    curves, lineage, dataset versions, bulk runs, benchmarks and a gallery, as one self-contained HTML file."""
    root = lake_folder(lake, must_exist=True)
    path = _out_file(out, root)
    server = None
    if serve:  # bind first: a port in use is bad input before any work
        from dashboards.serve import make_server

        try:
            server = make_server(path, port)
        except OSError as e:
            raise bad_input(f"--port: cannot listen on 127.0.0.1:{port}: {one_line(e.strerror or e)}") from None
    try:
        from dashboards.build import build_dashboard
        from smartmask.lake.catalog import CatalogError

        try:
            summary = build_dashboard(root, path, gallery=gallery)
        except (CatalogError, OSError) as e:  # a damaged lake or an unwritable file: a failure, not bad input
            typer.echo(f"error: {one_line(e)}", err=True)
            raise typer.Exit(1) from None
        for warning in summary["warnings"]:
            typer.echo(f"warning: {warning}", err=True)
        typer.echo(f"dashboard: {summary['bytes'] / 2**20:.1f} MiB in {summary['seconds']:.1f} s, "
                   f"{summary['gallery']} gallery items", err=True)
        if server is not None:
            host, bound = server.server_address[:2]
            typer.echo(f"serving at http://{host}:{bound}/ (Ctrl-C stops)", err=True)
        typer.echo(str(path))
        if server is not None:
            with contextlib.suppress(KeyboardInterrupt):
                server.serve_forever()
    finally:
        if server is not None:
            server.server_close()
