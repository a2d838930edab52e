"""The dashboard in a real browser: Debian's headless chromium (tests/browser.py) opens the page the project's own
server (`dashboards.serve`) serves for the small hostile lake of tests/test_dashboard.py, finds the model versions
and their metrics, switches the two compared versions, takes a screenshot, and sees no console error, no CSP
violation, no request leaving the page, no dialog and no injected element, while the HTML payloads in labels,
captions, object names and file names show as text. Skipped where chromium / chromedriver are missing
(`./dev test` installs them).
"""

from __future__ import annotations

import io
import threading

import pyarrow.parquet as pq
import pytest
from browser import (
    chromium_driver,
    network_requests,
    no_open_dialog,
    page_probe,
    require_browser,
    severe_console,
)
from test_dashboard import EVAL_SET, IMG, M1, M2, PAYLOADS, SCRIPT, make_lake

# Slow tier: starting chromium and drawing the 5 MB page costs ~15-25 s on 2 cores; the fast tier checks the same
# page's HTML (tests/test_dashboard.py).
pytestmark = pytest.mark.slow
READY_TIMEOUT = 60  # seconds for the page to draw every panel (3-6 s on a 2-core machine)


def _label(version: str, ordinal: int) -> str:
    """How the page names a model version (page.js `label`): "v<ordinal> <version>" (16-hex ids shortened to 8)."""
    return f"v{ordinal} {version}"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The dashboard of the hostile lake, served by `dashboards.serve.make_server` on a free 127.0.0.1 port from a
    thread of this process (shut down and closed at the end)."""
    require_browser()  # skip before building anything
    from dashboards.build import build_dashboard
    from dashboards.serve import make_server

    root = tmp_path_factory.mktemp("dashboard-browser")
    made = make_lake(root)
    page = root / "dashboard.html"
    summary = build_dashboard(made["lake"], page)
    server = make_server(page, 0)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-server", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield {"url": f"http://{host}:{port}/", "page": page, "summary": summary, **made}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def dashboard(served, tmp_path_factory):
    """One chromium with the dashboard loaded and drawn; `load` holds what loading it logged (console, requests)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium_driver(tmp_path_factory.mktemp("chromium")) as driver:
        driver.get_log("browser")
        driver.get_log("performance")  # drop the browser's own start-up traffic (its new-tab page)
        driver.get(served["url"])
        try:
            WebDriverWait(driver, READY_TIMEOUT).until(
                lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))
        except TimeoutException:
            pytest.fail(f"the page never finished drawing: console {driver.get_log('browser')}, "
                        f"probe {page_probe(driver)}")
        load = {"console": driver.get_log("browser"), "requests": network_requests(driver.get_log("performance"))}
        yield {"driver": driver, "load": load, **served}


def _text(driver, selector: str) -> str:
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                                 selector)


def _table(driver, panel: str, name: str) -> list[list[str]]:
    """The cells' text of `table[data-table=name]` in #panel-<panel>, header row first."""
    return driver.execute_script(
        "const t = document.querySelector(arguments[0]);"
        "return t ? [...t.rows].map((r) => [...r.cells].map((c) => c.innerText)) : null;",
        f"#panel-{panel} table[data-table='{name}']")


def _assert_clean(driver, console: list[dict]) -> None:
    """No dialog open or ever opened, no console error, no CSP violation, no uncaught error."""
    no_open_dialog(driver)
    probe = page_probe(driver)
    assert probe["dialogs"] == [], probe["dialogs"]
    assert probe["csp"] == [], f"CSP violations: {probe['csp']}"
    assert probe["errors"] == [], f"errors: {probe['errors']}"
    assert severe_console(console) == [], console
    assert not [e for e in console if "Content Security Policy" in e.get("message", "")], console


def _assert_nothing_injected(driver) -> None:
    found = driver.execute_script("""
        return {
          scripts: document.scripts.length,
          ownScripts: [...document.scripts].every((s) => s.parentNode === document.body && !s.src),
          imgX: document.querySelectorAll('img[src="x"]').length,
          onerror: document.querySelectorAll("[onerror]").length,
          handlers: [...document.querySelectorAll("*")].filter((e) => [...e.attributes].some(
            (a) => a.name.startsWith("on"))).length,
          badImages: [...document.images].filter((i) => !i.getAttribute("src").startsWith("data:image/")).length,
          iframes: document.querySelectorAll("iframe, object, embed").length,
        };""")
    # the page's own three: the JSON data block, plotly.js, the page script
    assert found == {"scripts": 3, "ownScripts": True, "imgX": 0, "onerror": 0, "handlers": 0, "badImages": 0,
                     "iframes": 0}, found


def test_page_shows_versions_and_metrics_and_loads_nothing(dashboard):
    driver, url = dashboard["driver"], dashboard["url"]
    assert driver.title == "SmartMask dashboard"
    csp = driver.execute_script(
        "const m = document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]'); return m && m.content;")
    assert csp and "default-src 'none'" in csp and "connect-src 'none'" in csp, csp
    for panel in ("models", "compare", "breakdown", "trends", "training", "lineage", "datasets", "bulk", "bench",
                  "gallery"):
        assert driver.find_element("id", f"panel-{panel}").is_displayed(), panel
        assert driver.execute_script(
            "return document.querySelector(arguments[0]).querySelector('[data-empty]') === null", f"#panel-{panel}"), \
            f"panel {panel} shows an empty-state message: {_text(driver, f'#panel-{panel}')[:300]}"

    models = _table(driver, "models", "models")
    assert models is not None and len(models) == 3, models
    header = models[0]
    rows = {r[header.index("version")]: r for r in models[1:]}
    assert set(rows) == {M1, M2}
    assert rows[M1][header.index("#")] == "1" and rows[M2][header.index("#")] == "2"
    assert rows[M2][header.index("train run")] == SCRIPT  # a payload, as text

    # the selects offer both versions and the baselines; A is the newest version, B the one before it
    from selenium.webdriver.support.ui import Select

    a, b = Select(driver.find_element("id", "version-a")), Select(driver.find_element("id", "version-b"))
    values = [o.get_attribute("value") for o in a.options]
    assert {M1, M2, "baseline:box", "baseline:oracle"} <= set(values), values
    assert a.first_selected_option.get_attribute("value") == M2
    assert b.first_selected_option.get_attribute("value") == M1

    # a metric chart per metric, and the deltas table of version A carries the stored aggregate of every metric
    charts = driver.execute_script(
        "return [...document.querySelectorAll('#panel-models [data-chart^=metric-]')]"
        ".map((d) => [d.dataset.chart, d.querySelectorAll('svg .bars .point, svg .point').length])")
    assert dict(charts).get("metric-iou", 0) >= 4, charts  # M1, M2 and both baselines
    summary = pq.read_table(dashboard["lake"] / "runs" / "kind=eval" / f"run={EVAL_SET}--{M2}--cfg2" /
                            "summary.parquet").to_pylist()
    stored = {r["metric"]: r for r in summary
              if r["stat"] == "aggregate" and r["model_version"] == M2 and r["guidance"] == "box"
              and r["class"] == "*" and r["size_bin"] == "*"}
    assert {"iou", "boundary_f", "clip_score"} <= set(stored)
    deltas = _table(driver, "models", "deltas")
    assert deltas is not None, _text(driver, "#panel-models")[:2000]
    shown = {r[0].removesuffix(" (lower is better)"): r for r in deltas[1:]}
    for metric in ("iou", "boundary_f", "best_of_n_iou", "clip_score"):
        r = stored[metric]
        assert shown[metric][1] == f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]", (metric, shown[metric], r)
        assert shown[metric][2] == str(r["n"])

    # nothing but the page itself left the page: no resource fetched, no request other than the document and data:
    assert driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)") == []
    requests = dashboard["load"]["requests"]
    assert (url, url) in requests  # the page itself
    # every request the page made (its own document's) is the page or a data: image, and nothing at all, from any
    # document (the browser's own new-tab page included), went to the network but the page
    mine = [u for u, doc in requests if doc == url and u != url and not u.startswith("data:image/")]
    assert mine == [], mine
    out = [u for u, _ in requests if u.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp") and u != url]
    assert out == [], out
    _assert_clean(driver, dashboard["load"]["console"] + driver.get_log("browser"))


def test_payloads_show_as_text(dashboard):
    driver = dashboard["driver"]
    _assert_clean(driver, driver.get_log("browser"))
    _assert_nothing_injected(driver)
    body = driver.execute_script("return document.body.innerText")
    for payload in PAYLOADS:
        assert payload in body
    # where each kind of string lands: a train run id (models), a reject reason (datasets), an object name and a
    # file name (gallery cards), an object name and a context (bulk samples), a label (the class chart's axis)
    rejects = _table(driver, "datasets", "rejects")
    assert rejects is not None and IMG in [r[rejects[0].index("reason")] for r in rejects[1:]], rejects
    cards = driver.execute_script(
        "return [...document.querySelectorAll('#panel-gallery [data-item]')]"
        ".map((c) => [c.dataset.class, c.querySelector('.card-head').innerText])")
    objects = {cls for cls, _ in cards}
    assert {SCRIPT, IMG} <= objects, objects
    assert any(f"object: {SCRIPT}" in head for _, head in cards)
    assert any(f"{IMG}.png" in head for _, head in cards)  # the file name
    samples = _text(driver, "#panel-bulk [data-samples]")
    assert samples is not None and SCRIPT in samples and IMG in samples, samples
    ticks = driver.execute_script(
        "return [...document.querySelectorAll('#panel-datasets [data-chart=classes] .xtick text')]"
        ".map((t) => t.textContent)")
    assert SCRIPT in ticks and IMG in ticks, ticks
    # the captions travel only inside the dataset card text (a collapsed <details>)
    card = driver.execute_script("const p = document.querySelector('#panel-datasets details pre');"
                                 "return p ? p.textContent : null;")
    assert card is not None and SCRIPT in card, card


def test_switching_versions_redraws_the_comparison(dashboard, tmp_path):
    from selenium.webdriver.support.ui import Select

    driver = dashboard["driver"]
    a, b = Select(driver.find_element("id", "version-a")), Select(driver.find_element("id", "version-b"))
    compare_head = "#panel-compare .body > p"
    before = _text(driver, compare_head)
    assert f"A = {_label(M2, 2)}" in before and f"B = {_label(M1, 1)}" in before, before
    means_before = _compare_means(driver)
    assert means_before
    try:
        a.select_by_value(M1)  # A = B for a moment: the panel says so
        assert "Choose two different versions" in _text(driver, "#panel-compare")
        b.select_by_value(M2)
        after = _text(driver, compare_head)
        assert f"A = {_label(M1, 1)}" in after and f"B = {_label(M2, 2)}" in after, after
        assert driver.find_element("css selector", "#panel-models .slot-a").text == _label(M1, 1)
        # the same pairs, the other way round: every mean difference changes sign
        means_after = _compare_means(driver)
        assert set(means_after) == set(means_before)
        for key, m in means_before.items():
            assert abs(m + means_after[key]) < 1.5e-3, (key, m, means_after[key])
        # the gallery's version tiles follow
        gallery = _text(driver, "#panel-gallery")
        assert f"A {_label(M1, 1)}" in gallery and f"B {_label(M2, 2)}" in gallery
        b.select_by_value("baseline:box")
        assert "B = baseline:box" in _text(driver, compare_head)
        _assert_clean(driver, driver.get_log("browser"))
        _assert_nothing_injected(driver)

        shot = tmp_path / "dash.png"
        assert driver.save_screenshot(str(shot))
        from PIL import Image

        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, len(data)
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (1400, 1000)
            colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 50  # drawn, not a blank page
    finally:  # back to the page's own choice, for any test after this one
        a.select_by_value(M2)
        b.select_by_value(M1)


def _compare_means(driver) -> dict[tuple[str, str], float]:
    """(metric, guidance) → "mean A − B" of the comparison table."""
    t = _table(driver, "compare", "compare")
    assert t is not None, _text(driver, "#panel-compare")
    head = t[0]
    i, g, m = head.index("metric"), head.index("guidance"), head.index("mean A − B")
    return {(r[i], r[g]): float(r[m].replace("−", "-")) for r in t[1:] if r[m] not in ("–", "")}


def test_harness_catches_an_unsafe_page(tmp_path, tmp_path_factory):
    """The checks above are not vacuous. A page that draws a payload as markup opens a dialog, gains an `<img src=x>`
    with an `onerror` attribute and fetches `x`; the same page under a CSP like the dashboard's gets CSP violations
    and console errors instead. The harness sees each."""
    require_browser()
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from dashboards.serve import make_server

    draw = f"document.getElementById('x').innerHTML = {IMG!r};"
    page = tmp_path / "unsafe.html"
    page.write_text(f"<!DOCTYPE html><title>unsafe</title><body><div id=x></div><script>{draw}</script></body>")
    server = make_server(page, 0)  # reads the file per request: rewriting it serves the next page
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with chromium_driver(tmp_path_factory.mktemp("chromium")) as driver:
            driver.get(url)
            # the image's error handler runs once its request (a 404) fails
            WebDriverWait(driver, 10).until(expected_conditions.alert_is_present())
            with pytest.raises(AssertionError, match="a dialog is open"):
                no_open_dialog(driver)  # ... and dismisses it
            with pytest.raises(AssertionError):
                _assert_nothing_injected(driver)
            assert page_probe(driver)["dialogs"] == [["alert", "1"]]
            assert severe_console(driver.get_log("browser"))  # the 404 of "x"
            fetched = driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
            assert url + "x" in fetched, fetched

            page.write_text(f"<!DOCTYPE html><meta http-equiv=\"Content-Security-Policy\" content=\"default-src "
                            f"'none'; script-src 'nonce-n0nce'\"><title>csp</title><body><div id=x></div>"
                            f"<script nonce=n0nce>{draw}</script></body>")
            driver.get(url)
            WebDriverWait(driver, 10).until(lambda d: len(page_probe(d)["csp"]) >= 2)
            with pytest.raises(AssertionError, match="CSP violations"):
                _assert_clean(driver, driver.get_log("browser"))
            directives = {c[0] for c in page_probe(driver)["csp"]}
            assert {"img-src", "script-src-attr"} <= directives, page_probe(driver)["csp"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
