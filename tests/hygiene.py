"""pytest plugin: a test session leaves no process of its own running and nothing new in the temp dir.

Loaded by tests/conftest.py (`pytest_plugins = ["hygiene"]`); `-p no:hygiene` turns it off for one run.

At session start it records the processes below pytest and the entries of the temp dir (`tempfile.gettempdir()`)
and of /tmp. At session end (`pytest_sessionfinish`, which pytest calls after every fixture, session-scoped ones
included, was torn down: Prefect's test harness and any Ray a fixture started are gone by then) it fails the
session (exit status 1) and prints a "hygiene" section when

- a process the session started is still running after `--hygiene-timeout` seconds (default 10: Ray's and
  Prefect's helpers take a moment to exit after their parent shut them down). "Started by the session" means: a
  descendant of pytest seen at the end or at any test boundary, or any process on the machine whose environment
  holds this session's SMARTMASK_TEST_SESSION id (set at configure time and inherited by everything the tests
  start, so a process orphaned by a killed parent, reparented away from pytest, is still found). Processes are
  identified by PID and creation time, so a reused PID is never mistaken for one of ours. Each is reported with
  its command line and the test that was running when it started; then it is ended (SIGTERM, then SIGKILL) unless
  `--hygiene-keep` leaves it for inspection. pytest's own multiprocessing resource tracker and forkserver, which
  exit with pytest, are not counted;
- an entry is in the temp dir or /tmp that was not there at the start, other than pytest's own base temp
  (`pytest-of-<user>`, which pytest manages and rotates) and this process's multiprocessing temp dir (removed at
  interpreter exit). Each is reported with its size and the test running when it was last modified. Entries are
  never deleted. The temp dir is shared with every other program on the machine: an entry that a live process
  outside this session works in, has open or names on its command line (a parallel session's, a pip install's)
  is listed as a note, not counted; one another program made and already left can still show up, and
  `--hygiene-ignore GLOB` (repeatable) skips such names.

`--hygiene-report PATH` also writes what leaked as JSON.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

MARKER = "SMARTMASK_TEST_SESSION"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hygiene", "leaked processes and temp files (tests/hygiene.py)")
    g.addoption("--hygiene-timeout", type=float, default=10.0,
                help="seconds the session's processes get to exit at the end (default 10)")
    g.addoption("--hygiene-ignore", action="append", default=[], metavar="GLOB",
                help="temp dir entry names not to report (repeatable)")
    g.addoption("--hygiene-keep", action="store_true", help="leave leaked processes running (default: end them)")
    g.addoption("--hygiene-report", default=None, metavar="PATH", help="also write what leaked as JSON to PATH")


def _key(p: psutil.Process) -> tuple[int, float]:
    return p.pid, p.create_time()


def _running(p: psutil.Process) -> bool:
    """Still running as the very process that was seen (same PID and creation time); a zombie has ended."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False


def _started(p: psutil.Process) -> float:
    """When `p` started, on the wall clock, to ~10 ms. psutil's create_time() adds the start tick to the boot time
    of /proc/stat, which is rounded to the second: too coarse to tell which test was running."""
    try:
        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, counted from after "(comm)"
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)
    except (OSError, ValueError, IndexError, AttributeError):
        return p.create_time()


def _runtime_helpers() -> set[int]:
    """PIDs of this interpreter's own multiprocessing helpers (the resource tracker, the forkserver): started on
    first use of a spawn/forkserver pool, they live as long as pytest does and exit when it exits."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    pids = {getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None),
            getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)}
    return {p for p in pids if p}


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still running after up to `timeout` seconds. Polls rather than psutil.wait_procs: that one
    reaps pytest's own zombie children (behind their Popen objects' backs) and waits the whole timeout on an
    orphaned zombie whose new parent has not reaped it yet."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _running(p)]
    return alive


def _temp_dirs() -> list[Path]:
    out: list[Path] = []
    for d in (Path(tempfile.gettempdir()), Path("/tmp")):
        if d.is_dir() and all(not d.samefile(o) for o in out):
            out.append(d)
    return out


def _entries(d: Path) -> set[str]:
    try:
        return set(os.listdir(d))
    except OSError:
        return set()


def _size(path: Path) -> int:
    try:
        if path.is_symlink() or not path.is_dir():
            return path.lstat().st_size
        total = 0
        for root, _, files in os.walk(path):
            for f in files:
                with contextlib.suppress(OSError):
                    total += (Path(root) / f).lstat().st_size
        return total
    except OSError:
        return 0


@dataclass
class Hygiene:
    timeout: float
    ignore: list[str]
    keep: bool
    report_path: str | None
    basetemp: Path | None
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    me: psutil.Process = field(default_factory=psutil.Process)
    before_procs: set[tuple[int, float]] = field(default_factory=set)
    before_temp: dict[Path, set[str]] = field(default_factory=dict)
    seen: dict[tuple[int, float], psutil.Process] = field(default_factory=dict)
    tests: list[tuple[str, float, float]] = field(default_factory=list)  # (nodeid, start, end) wall clock
    leaked_procs: list[dict] = field(default_factory=list)
    leaked_temp: list[dict] = field(default_factory=list)
    foreign_temp: list[dict] = field(default_factory=list)  # new entries another live program is using

    # -- processes --

    def descendants(self) -> list[psutil.Process]:
        try:
            return self.me.children(recursive=True)
        except psutil.Error:
            return []

    def remember(self) -> None:
        for p in self.descendants():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.seen.setdefault(_key(p), p)

    def marked(self) -> list[psutil.Process]:
        """Every process on the machine started with this session's id in its environment."""
        out = []
        for p in psutil.process_iter():
            if p.pid == self.me.pid:
                continue
            try:
                if p.environ().get(MARKER) == self.session_id:
                    out.append(p)
            except (psutil.Error, OSError):  # gone, another user's, a kernel thread
                pass
        return out

    def test_at(self, t: float, slack: float = 0.05) -> str:
        """The test running at wall-clock time `t` (file times lag the clock by a few ms: `slack`)."""
        dist = [(max(start - t, t - end, 0.0), nodeid) for nodeid, start, end in self.tests]
        if dist and min(dist)[0] <= slack:
            return min(dist)[1]
        if self.tests and t < self.tests[0][1]:
            return "(before the first test: collection or plugin set-up)"
        return "(between tests or after the last one: fixture teardown)"

    def describe(self, p: psutil.Process) -> dict:
        d: dict = {"pid": p.pid}
        try:
            with p.oneshot():
                started = _started(p)
                d |= {"ppid": p.ppid(), "status": p.status(), "name": p.name(),
                      "cmdline": " ".join(p.cmdline()).strip(),
                      "started": time.strftime("%H:%M:%S", time.localtime(started)),
                      "age_s": round(time.time() - started, 1), "during": self.test_at(started)}
        except psutil.Error as e:
            d["error"] = type(e).__name__
        return d

    def check_processes(self) -> None:
        self.remember()
        candidates: dict[tuple[int, float], psutil.Process] = dict(self.seen)
        for p in self.marked():
            with contextlib.suppress(psutil.NoSuchProcess):
                candidates.setdefault(_key(p), p)
        runtime = _runtime_helpers()
        ours = [p for k, p in candidates.items() if k not in self.before_procs and p.pid not in runtime]
        left = _wait_gone(ours, self.timeout)
        self.leaked_procs = [self.describe(p) for p in left]
        if left and not self.keep:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                for p in left:
                    with contextlib.suppress(psutil.Error):  # psutil refuses a PID now another process's
                        p.send_signal(sig)
                left = _wait_gone(left, wait)
                if not left:
                    break
            for d in self.leaked_procs:
                d["ended_by_hygiene"] = d["pid"] not in {p.pid for p in left}

    # -- temp dir --

    def snapshot_temp(self) -> None:
        self.before_temp = {d: _entries(d) for d in _temp_dirs()}

    def allowed(self, d: Path, name: str) -> bool:
        import multiprocessing.process

        if name.startswith("pytest-of-"):  # pytest's basetemp root (`pytest-of-<user>`), numbered and rotated
            return True
        mp_tmp = multiprocessing.process.current_process()._config.get("tempdir")  # removed at exit
        if mp_tmp and Path(mp_tmp) == d / name:
            return True
        if self.basetemp is not None and self.basetemp.resolve() == (d / name).resolve():
            return True
        return any(fnmatch.fnmatch(name, g) for g in self.ignore)

    def check_temp(self) -> None:
        self.leaked_temp, self.foreign_temp = [], []
        new = [d / name for d, before in self.before_temp.items() for name in sorted(_entries(d) - before)
               if not self.allowed(d, name)]
        users = self.other_users(new) if new else {}
        for path in new:
            try:
                mtime = path.lstat().st_mtime
            except OSError:  # removed meanwhile
                continue
            entry = {"path": str(path), "kind": "dir" if path.is_dir() else "file", "bytes": _size(path),
                     "during": self.test_at(mtime)}
            if path in users:
                self.foreign_temp.append(entry | {"in_use_by": users[path]})
            else:
                self.leaked_temp.append(entry)

    def other_users(self, paths: list[Path]) -> dict[Path, str]:
        """Of `paths`, those a live process NOT of this session works in, has open, or names on its command line
        (a parallel session's or another program's entry, not this session's leak): path -> that process."""
        ours = {p.pid for p in self.marked()} | {p.pid for p in self.descendants()} | {self.me.pid}
        found: dict[Path, str] = {}
        for proc in psutil.process_iter():
            if proc.pid in ours:
                continue
            try:
                cmd = " ".join(proc.cmdline())
                used = [proc.cwd(), *(f.path for f in proc.open_files())]
            except (psutil.Error, OSError):
                continue
            for path in paths:
                s = str(path)
                if path not in found and (s in cmd or any(u == s or u.startswith(s + "/") for u in used)):
                    found[path] = f"pid {proc.pid}: {cmd}"[:200]
        return found

    # -- report --

    def failed(self) -> bool:
        return bool(self.leaked_procs or self.leaked_temp)

    def lines(self) -> list[str]:
        out = []
        if self.leaked_procs:
            out.append(f"{len(self.leaked_procs)} process(es) started by this session still running "
                       f"{self.timeout:g} s after it ended:")
            for d in self.leaked_procs:
                fate = "" if "ended_by_hygiene" not in d else (
                    " [ended now]" if d["ended_by_hygiene"] else " [could not be ended]")
                out.append(f"  pid {d['pid']} (parent {d.get('ppid')}, {d.get('status')}, age {d.get('age_s')} s)"
                           f"{fate}: {d.get('cmdline') or d.get('name') or d.get('error')}"[:400])
                out.append(f"    started during: {d.get('during')}")
        if self.leaked_temp:
            out.append(f"{len(self.leaked_temp)} new entr(y/ies) left in the temp dir:")
            for d in self.leaked_temp:
                out.append(f"  {d['path']} ({d['kind']}, {d['bytes']} bytes), last modified during: {d['during']}")
            out.append("  (the temp dir is shared: if another session ran meanwhile, it may own some of these; "
                       "--hygiene-ignore GLOB skips a name)")
        return out

    def foreign_lines(self) -> list[str]:
        if not self.foreign_temp:
            return []
        return [f"{len(self.foreign_temp)} new temp dir entr(y/ies) not counted: in use by a process outside this "
                "session", *(f"  {d['path']}: {d['in_use_by']}" for d in self.foreign_temp)]


_KEY = pytest.StashKey[Hygiene]()


def pytest_configure(config: pytest.Config) -> None:
    bt = config.getoption("basetemp", None)
    h = Hygiene(timeout=config.getoption("hygiene_timeout"), ignore=list(config.getoption("hygiene_ignore")),
                keep=config.getoption("hygiene_keep"), report_path=config.getoption("hygiene_report"),
                basetemp=Path(bt) if bt else None)
    os.environ[MARKER] = h.session_id  # inherited by every process the tests start
    config.stash[_KEY] = h


def pytest_sessionstart(session: pytest.Session) -> None:
    h = session.config.stash[_KEY]
    h.before_procs = {_key(p) for p in h.descendants() if _running(p)}
    h.snapshot_temp()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    h = item.config.stash[_KEY]
    start = time.time()
    try:
        return (yield)
    finally:
        h.tests.append((item.nodeid, start, time.time()))
        h.remember()  # descendants alive now, before a later kill of their parent could orphan them


@pytest.hookimpl(trylast=True)  # after other plugins' own session teardown
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    h = session.config.stash.get(_KEY, None)
    if h is None:
        return
    h.check_processes()
    h.check_temp()
    if h.report_path:
        Path(h.report_path).write_text(json.dumps({"processes": h.leaked_procs, "temp": h.leaked_temp,
                                                   "temp_not_counted": h.foreign_temp}, indent=2))
    if h.failed() and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    h = config.stash.get(_KEY, None)
    if h is None:
        return
    if h.failed():
        terminalreporter.write_sep("=", "hygiene: the session leaked (exit status 1)", red=True, bold=True)
        for line in h.lines():
            terminalreporter.write_line(line)
    if h.foreign_temp:
        terminalreporter.write_sep("-", "hygiene: notes")
        for line in h.foreign_lines():
            terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    h = config.stash.get(_KEY, None)
    if h is not None and os.environ.get(MARKER) == h.session_id:
        del os.environ[MARKER]
