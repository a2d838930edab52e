"""A small Selenium harness for the dashboard's page tests: Debian's headless chromium, driven through its own
chromedriver (never Selenium Manager, which would try to download a browser and fails offline).

    with chromium_driver(tmp_path_factory.mktemp("chromium")) as driver:   # pytest.skip()s without chromium
        driver.get(url)
        ...

or the `chromium` fixture (`from browser import chromium` in a test module). The folder must be short (a
`tmp_path_factory.mktemp` one is; a test's own `tmp_path` may not be): chromium puts a unix socket under it.

`./dev test` installs both (apt-get) on a fresh machine. Everything chromium writes (its profile, its temp files)
stays under the folder it is given, and both processes are ended on exit, so a test leaves nothing behind.

The page is instrumented before any of its own scripts run (`Page.addScriptToEvaluateOnNewDocument`, which the
page's CSP does not apply to): every `alert`/`confirm`/`prompt` call and every CSP violation is recorded in
`window.__probe`, read back with `page_probe(driver)`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

WINDOW = (1400, 1000)

# Runs in every document before the page's own scripts.
_PROBE_JS = r"""
(() => {
  const probe = {dialogs: [], csp: [], errors: []};
  Object.defineProperty(window, "__probe", {value: probe});
  for (const name of ["alert", "confirm", "prompt"]) {
    const orig = window[name];
    window[name] = function (...args) {
      probe.dialogs.push([name, String(args[0])]);
      return orig.apply(this, args);
    };
  }
  document.addEventListener("securitypolicyviolation", (e) => {
    probe.csp.push([e.violatedDirective, e.blockedURI, e.sourceFile || "", e.lineNumber || 0]);
  }, true);
  window.addEventListener("error", (e) => {
    probe.errors.push(String(e.message || (e.target && (e.target.outerHTML || e.target.src)) || e.type));
  }, true);
})();
"""


def browser_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) executables, or None when either is missing."""
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.access("/usr/bin/chromedriver", os.X_OK) else None
    )
    return (chromium, driver) if chromium and driver else None


def require_browser() -> tuple[str, str]:
    paths = browser_paths()
    if paths is None:
        pytest.skip("needs Debian's chromium and chromedriver on PATH (`./dev test` installs them: "
                    "apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("needs selenium (the project's dev extra: pip install -e '.[dev]')")
    return paths


@contextlib.contextmanager
def chromium_driver(workdir: Path, *, window: tuple[int, int] = WINDOW) -> Iterator:
    """A headless chromium WebDriver whose viewport is exactly `window` (CSS pixels, scale 1), with its profile and
    temp files under `workdir`, browser console logs kept (`driver.get_log("browser")`) and network events kept
    (`driver.get_log("performance")`). Quits the browser and stops chromedriver on exit."""
    chromium, chromedriver = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    workdir = Path(workdir).resolve()
    profile, tmp = workdir / "profile", workdir / "tmp"
    profile.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    # chromium binds its process-singleton socket at $TMPDIR/org.chromium.Chromium.XXXXXX/SingletonSocket and dies
    # ("Socket path too long") when that passes the 107 bytes a unix socket path may have
    if len(str(tmp)) + len("/org.chromium.Chromium.XXXXXX/SingletonSocket") > 107:
        raise ValueError(f"chromium_driver: {workdir} is too long a path for chromium's temp files (at most "
                         f"{107 - 50} characters; pass a folder from tmp_path_factory.mktemp)")

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={window[0]},{window[1]}", f"--user-data-dir={profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--metrics-recording-only", "--disable-default-apps", "--mute-audio"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # chromedriver and the chromium it starts put their temp files under TMPDIR: keep them out of /tmp.
    env = {**os.environ, "TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)}
    service = Service(executable_path=chromedriver, env=env, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False})
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _PROBE_JS})
        yield driver
    finally:
        driver.quit()  # ends chromium and stops the chromedriver service it started


@pytest.fixture
def chromium(tmp_path_factory):
    """pytest fixture: a `chromium_driver` in a fresh short folder of pytest's base temp."""
    with chromium_driver(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


def page_probe(driver) -> dict:
    """What the instrumentation saw: {"dialogs": [[kind, message]...], "csp": [[directive, blocked, file, line]...],
    "errors": [...]}. Raises AssertionError when the page has no probe (so its checks cannot pass vacuously)."""
    probe = driver.execute_script("return window.__probe || null;")
    assert probe is not None, "the page was not instrumented (window.__probe missing)"
    return probe


def no_open_dialog(driver) -> bool:
    """True when no alert/confirm/prompt is open."""
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
        text = alert.text
    except NoAlertPresentException:
        return True
    alert.dismiss()
    raise AssertionError(f"a dialog is open: {text!r}")


def severe_console(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e.get("level") == "SEVERE"]


def network_requests(perf_log: list[dict]) -> list[tuple[str, str]]:
    """(url, document url) of every request made (Network.requestWillBeSent in the performance log), the browser's
    own included (its new-tab page fetches chrome:// resources): filter by the document url."""
    import json

    out = []
    for entry in perf_log:
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            out.append((msg["params"]["request"]["url"], msg["params"].get("documentURL", "")))
    return out
