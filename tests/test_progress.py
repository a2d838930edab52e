"""Progress of long jobs: plain lines off a terminal, a live bar on one (also through `smartmask rebuild` in a pty)."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smartmask.config import SynthConfig
from smartmask.progress import Progress
from smartmask.synth import generate

REPO = Path(__file__).resolve().parents[1]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_off_a_terminal_carry_count_rate_eta_and_fields():
    out = io.StringIO()  # not a TTY: auto picks lines
    with Progress("rebuild w", total=4, unit="shards", stream=out, every_s=0) as p:
        for k in range(4):
            time.sleep(0.01)
            p.advance(1, rejected=k)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # one per update (every_s=0); closing adds nothing already said
    assert lines[0].startswith("rebuild w: 1/4 shards (25%), ") and "shards/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("rebuild w: 4/4 shards (100%), ") and "elapsed" in lines[-1]
    assert lines[-1].endswith("rejected=3")


def test_lines_are_throttled_and_the_last_state_is_always_printed():
    out = io.StringIO()
    with Progress("train", total=1000, unit="steps", stream=out, every_s=3600) as p:
        for _ in range(1000):
            p.advance(1, loss=0.5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("train: 1/1000") and lines[1].startswith("train: 1000/1000")


def test_a_bar_on_a_terminal_and_nothing_when_off(monkeypatch):
    tty = _Tty()
    with Progress("rebuild w", total=3, unit="shards", stream=tty) as p:
        p.advance(3, images=12)
    text = tty.getvalue()
    assert "rebuild w" in text and "3/3" in text and "━" in text and "images=12" in text
    off = io.StringIO()
    monkeypatch.setenv("SMARTMASK_PROGRESS", "off")
    with Progress("x", total=2, stream=off) as p:
        p.advance(2)
    assert off.getvalue() == ""


def test_a_resumed_job_counts_its_rate_from_what_it_does():
    out = io.StringIO()
    p = Progress("rebuild w", total=100, unit="shards", stream=out, every_s=0, initial=90)
    assert p.rate() == 0.0 and p.eta() is None  # nothing done by this run yet: no made-up rate from the 90
    time.sleep(0.05)
    p.advance(1)
    assert p.rate() < 1 / 0.05 * 1.01 and p.eta() > 9 * 0.04
    p.close()


def _read_pty(fd: int, proc: subprocess.Popen, timeout_s: float) -> str:
    chunks, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not data:
                break
            chunks.append(data.decode("utf-8", "replace"))
        elif proc.poll() is not None:
            break
    return "".join(chunks)


# slow: with the Prefect test harness it needs (started once per session, ~25 s) it costs more than 20 s.
@pytest.mark.slow
def test_rebuild_in_a_terminal_shows_a_live_bar(tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    world = tmp_path / "world"
    generate(world, 6, seed=2, config=SynthConfig.small(), workers=1)
    leader, follower = pty.openpty()
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "120"}
    env.pop("SMARTMASK_PROGRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows", "rebuild", "--source", f"cocoa:{world / 'annotations.json'}", "--images",
         str(world / "images"), "--name", "w", "--lake", str(tmp_path / "lake"), "--shard-size", "2", "--workers", "1"],
        cwd=REPO, env=env, stdin=follower, stdout=follower, stderr=follower, start_new_session=True)
    os.close(follower)
    try:
        text = _read_pty(leader, proc, 300)
        assert proc.wait(timeout=60) == 0, text[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "━" in plain and re.search(r"rebuild w .*3/3 shards", plain), plain[-2000:]
    assert "images=6" in plain
