"""Starting Ray for a flow: local by default, an existing cluster with `address` (`--ray-address`).

    with ray_session(address=args.ray_address):
        ds.map_batches(...)

If Ray is already initialised (a caller started it, or a test did), the session is reused and left running.
Otherwise Ray starts quietly (no dashboard, no usage stats, worker logs not echoed to the driver) with its
session files in a short, fresh temp dir (Ray's unix socket paths must stay under ~107 characters) that is
removed again at exit, and is shut down at exit.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# <temp_dir>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store must fit a unix socket path (107 bytes).
_MAX_TEMP_DIR = 48


def _short_temp_dir() -> str:
    base = tempfile.gettempdir()
    if len(base) + len("/smartmask-ray-xxxxxxxx") > _MAX_TEMP_DIR and os.path.isdir("/tmp"):
        base = "/tmp"
    return tempfile.mkdtemp(prefix="smartmask-ray-", dir=base)


@contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, temp_dir: str | None = None
) -> Iterator[None]:
    """Ray initialised for the block; shut down at exit only if this call started it.

    `address`: None starts a local Ray (with `num_cpus`, default: all cores); "auto", "HOST:PORT" or
    "ray://HOST:PORT" joins an existing cluster (then `num_cpus` and `temp_dir` belong to the cluster and are
    not passed).
    """
    import ray

    if ray.is_initialized():
        yield
        return

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    kwargs: dict = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": True,
        "logging_level": logging.WARNING,
    }
    made_temp = None
    old_ray_tmp = os.environ.get("RAY_TMPDIR")
    if address is None:
        if temp_dir is None:
            temp_dir = made_temp = _short_temp_dir()
        kwargs["_temp_dir"] = temp_dir
        # Ray Train's lock files (`_ray_lockfiles`) go to RAY_TMPDIR, /tmp by default, and are never removed:
        # keep them in the session dir, removed at exit.
        os.environ["RAY_TMPDIR"] = temp_dir
        if num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
    try:
        ray.init(address=address, **kwargs)
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        if address is None:  # restore, so a later session does not put its locks in this removed dir
            if old_ray_tmp is None:
                os.environ.pop("RAY_TMPDIR", None)
            else:
                os.environ["RAY_TMPDIR"] = old_ray_tmp
        if made_temp is not None:
            shutil.rmtree(made_temp, ignore_errors=True)
