"""Serve one built dashboard file on 127.0.0.1 (`smartmask dashboard --serve`).

Only that file is served, at `/` (and `/index.html`, `/dashboard.html`); every other path is 404, so nothing else
on the disk is reachable. The page's Content-Security-Policy is sent as a header too, with the directives a
`<meta>` tag cannot carry (`frame-ancestors`). Ctrl-C stops the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.1"
ROUTES = ("/", "/index.html", "/dashboard.html")
_CSP_META = re.compile(rb'<meta http-equiv="Content-Security-Policy" content="([^"]*)">')


def _handler(page: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "smartmask-dashboard"
        sys_version = ""

        def _send(self, head_only: bool) -> None:
            if self.path.split("?", 1)[0] not in ROUTES:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            try:
                body = page.read_bytes()  # read per request: a rebuilt page is served without a restart
            except OSError:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            m = _CSP_META.search(body[:4096])
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            if m:
                self.send_header("Content-Security-Policy", m.group(1).decode("ascii") + "; frame-ancestors 'none'")
            self.end_headers()
            if not head_only:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._send(False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._send(True)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
            pass

    return Handler


def make_server(page: Path, port: int) -> ThreadingHTTPServer:
    """A server for `page` bound to 127.0.0.1:`port` (0: any free port; `server.server_address` says which)."""
    return ThreadingHTTPServer((HOST, port), _handler(Path(page).resolve()))


def serve(page: Path, port: int, *, echo: Callable[[str], None] = print) -> None:
    """Serve `page` until Ctrl-C."""
    server = make_server(page, port)
    host, bound = server.server_address[:2]
    echo(f"serving {page} at http://{host}:{bound}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
