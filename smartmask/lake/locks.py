"""One writer at a time for a piece of lake work: a rebuild of one (dataset, version), later one training or bulk run.

    with lake_lock(lake, "rebuild", f"{name}@{version}", wait_s=0) as taken_over:
        ...  # only this process writes the version's staging and publishes it

The lock is an exclusive `flock` on `<lake>/_locks/<kind>/<key>.lock`. The kernel releases a flock when its
holder dies, however it dies (SIGKILL, OOM, a lost node's process), so a killed run never leaves a lock that
blocks the next one: the file it leaves behind still names it, the next run takes the lock over and says so
(`taken_over` is that holder's record). The file holds the holder's pid, host, start time and command line, so
a second run that finds the lock held can say who holds it (`LockHeld`, one line; the CLI exits 2).

flock is advisory and per host on some network filesystems (NFS before v4 without lockd): a lake shared by
several machines needs a filesystem with working locks (NFSv4, Lustre with `flock`, local disk).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LockHeld(RuntimeError):
    """Another live process holds the lock; `holder` is its record (pid, host, started, command)."""

    def __init__(self, what: str, holder: dict, path: Path):
        self.holder, self.path = holder, path
        who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
        since = f" since {holder['started']}" if holder.get("started") else ""
        super().__init__(f"{what} is locked by {who}{since} ({path}); wait for it to finish")


def lock_path(lake: Path, kind: str, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.@=" else "_" for c in key)
    return lake / "_locks" / kind / f"{safe}.lock"


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}


def _try_lock(path: Path) -> tuple[int | None, dict]:
    """(fd, previous holder record) when we got it; (None, holder record) when a live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        return None, holder
    # The file may have been unlinked by its previous holder between our open and our flock: then we hold a
    # lock on an orphaned inode that nobody else can see. Only a lock on the file now at `path` counts.
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _try_lock(path)
    return fd, _read_holder(fd)


@contextmanager
def lake_lock(lake: Path, kind: str, key: str, *, wait_s: float = 0.0, poll_s: float = 0.5,
              what: str | None = None) -> Iterator[dict]:
    """Hold the (kind, key) lock for the block. Waits up to `wait_s` for a live holder, then raises `LockHeld`.

    Yields the record of a dead holder whose lock was taken over ({} when the lock was free and clean).
    """
    path = lock_path(lake, kind, key)
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        fd, holder = _try_lock(path)
        if fd is not None:
            break
        if time.monotonic() >= deadline:
            raise LockHeld(what or f"{kind} {key}", holder, path)
        time.sleep(poll_s)
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield holder
    finally:
        # Unlink before unlocking: a waiter that opened the old file re-checks the inode and retries (_try_lock).
        path.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
