"""The SmartMask dashboard: one self-contained HTML page over a lake (`smartmask dashboard`).

    from dashboards import build_dashboard
    build_dashboard(lake, lake / "dashboard.html")     # → {"out", "panels", "bytes", "seconds", ...}

`sql/*.sql` hold the query behind every panel, plain SELECTs over the lake's views (`smartmask.lake.query`), runnable
with `smartmask query` where they take no `$parameter`; `build.py` runs them and writes the page (`template.html`,
`page.js`, `page.css`, plotly.js, all inlined); `gallery.py` and `images.py` draw the thumbnails; `serve.py` serves the
file on 127.0.0.1.
"""

from dashboards.build import build_dashboard

__all__ = ["build_dashboard"]
