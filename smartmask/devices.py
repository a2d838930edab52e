"""Which torch device a user may ask for, checked before anything loads onto it.

Accepted: `cpu`, `cuda`, `cuda:N` and `mps`, each only when this machine has it. Anything else used to reach torch
(`tpu` failed deep inside a model load with a traceback, `cuda` on a machine without a GPU after the photo had been
decoded and the model read), so front ends call `check_device` first and report `BadDevice` as bad input.

torch is imported only for the `cuda`/`mps` availability checks, so checking `cpu` (or nothing) costs nothing.
"""

from __future__ import annotations

import re

DEVICES = "cpu | cuda | cuda:N | mps"
_SPEC = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


class BadDevice(ValueError):
    """A device spec that is malformed or names a device this machine does not have. One line."""


def check_device(spec: str | None) -> str | None:
    """`spec` normalised (stripped, lower case), or None for "pick the default"; else `BadDevice`."""
    if spec is None:
        return None
    s = spec.strip().lower()
    m = _SPEC.match(s)
    if not m or (m.group(2) is not None and m.group(1) != "cuda"):
        raise BadDevice(f"unknown device {spec!r}; expected {DEVICES}")
    kind, index = m.group(1), m.group(2)
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BadDevice("no CUDA device on this machine (torch.cuda.is_available() is False); use cpu")
        n = torch.cuda.device_count()
        if index is not None and int(index) >= n:
            raise BadDevice(f"no CUDA device {index}: this machine has {n} (cuda:0 … cuda:{n - 1})")
    elif kind == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise BadDevice("no MPS device on this machine (torch.backends.mps.is_available() is False)")
    return s
