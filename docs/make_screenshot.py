"""Regenerate the README's picture of the dashboard (docs/img/dashboard.png).

    ./dev sh python docs/make_screenshot.py --lake LAKE            # e.g. a lake `smartmask demo --lake LAKE` made
    ./dev sh python docs/make_screenshot.py                        # the small synthetic lake of the page tests

Builds the dashboard of LAKE (`dashboards.build_dashboard`; nothing heavy runs here: the lake must already hold the
runs to show) into a work folder, serves it with the project's own server (`dashboards.serve`) on a free
127.0.0.1 port, opens it in Debian's headless chromium (Selenium, through tests/browser.py; `./dev test` installs
chromium and chromedriver) and saves the viewport, WIDTH×HEIGHT CSS pixels at scale 1, as a PNG. Without --lake it
draws the hostile synthetic lake of tests/test_dashboard.py. The work folder (--workdir, default a temporary one)
holds the page and chromium's profile; a temporary one is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):  # the dashboards package and the browser harness, however this is started
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lake", type=Path, default=None,
                    help="the lake to draw (default: build the page tests' small synthetic lake)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "dashboard.png", help="the PNG to write")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--gallery", type=int, default=24, help="gallery entries the page holds (build_dashboard)")
    ap.add_argument("--anchor", default=None, help="scroll to this element id first (e.g. panel-compare)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the page and chromium's profile go (default: a temporary folder, removed after)")
    return ap.parse_args(argv)


def screenshot(lake: Path | None, out: Path, workdir: Path, *, width: int = 1400, height: int = 1000,
               gallery: int = 24, anchor: str | None = None, timeout: float = 120.0) -> dict:
    """Build, serve and photograph the dashboard of `lake`; returns {"out", "bytes", "build": build summary}."""
    from browser import browser_paths, chromium_driver, page_probe, severe_console
    from selenium.webdriver.support.ui import WebDriverWait

    from dashboards.build import build_dashboard
    from dashboards.serve import make_server

    if browser_paths() is None:
        raise SystemExit("make_screenshot: needs Debian's chromium and chromedriver on PATH "
                         "(apt-get install chromium chromium-driver; `./dev test` installs them)")
    if lake is not None and not Path(lake).is_dir():
        raise SystemExit(f"make_screenshot: no lake at {lake}")
    workdir.mkdir(parents=True, exist_ok=True)
    if lake is None:
        from test_dashboard import make_lake

        lake = make_lake(workdir / "synthetic")["lake"]
    page = workdir / "dashboard.html"
    summary = build_dashboard(Path(lake), page, gallery=gallery)

    server = make_server(page, 0)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-server", daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with chromium_driver(workdir / "chromium", window=(width, height)) as driver:
            driver.get(url)
            WebDriverWait(driver, timeout).until(
                lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))
            if anchor:
                driver.execute_script("const e = document.getElementById(arguments[0]);"
                                      "if (e) e.scrollIntoView({block: 'start'});", anchor)
            # let plotly's responsive relayout and the last paint settle
            driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done, 300)));")
            problems = severe_console(driver.get_log("browser"))
            probe = page_probe(driver)
            if problems or probe["csp"] or probe["dialogs"] or probe["errors"]:
                print(f"make_screenshot: warning: the page logged {problems} {probe}", file=sys.stderr)
            png = driver.get_screenshot_as_png()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

    from smartmask.lake.io import write_bytes_atomic

    out = Path(out)
    write_bytes_atomic(png, out)
    return {"out": str(out), "bytes": len(png), "build": summary}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir
        if workdir is None:  # short, so chromium's socket path fits (tests/browser.py)
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smartmask-shot-")))
        done = screenshot(args.lake, args.out, workdir.resolve(), width=args.width, height=args.height,
                          gallery=args.gallery, anchor=args.anchor)
    print(f"wrote {done['out']} ({done['bytes']:,} bytes, {args.width}x{args.height}) of "
          f"{args.lake or 'the synthetic test lake'} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
