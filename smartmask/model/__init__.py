"""The SmartMask network (paper §3.1-3.2): config, model, sampling.

`ModelConfig` is importable without torch; `SmartMask`, `sample_masks` and the rest load torch/diffusers on first
use (lazy attributes), so reading a config from the registry stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartmask.model.config import ModelConfig

if TYPE_CHECKING:
    from smartmask.model.network import LayoutEncoder, SmartMask, tiny_clip_tokenizer
    from smartmask.model.sampling import make_scheduler, sample_masks

_LAZY = {
    "SmartMask": "smartmask.model.network",
    "LayoutEncoder": "smartmask.model.network",
    "tiny_clip_tokenizer": "smartmask.model.network",
    "sample_masks": "smartmask.model.sampling",
    "make_scheduler": "smartmask.model.sampling",
}

__all__ = ["LayoutEncoder", "ModelConfig", "SmartMask", "make_scheduler", "sample_masks", "tiny_clip_tokenizer"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smartmask.model' has no attribute {name!r}")
