"""Adapters from amodal-segmentation source formats to one record shape (`SourceImage` / `SourceRegion`).

`load_source("KIND:FILE")` is the single entry point, KIND one of `auto`, `cocoa`, `kins`, `amodal-coco`, `jsonl`;
see datasets/README.md. Input limits (file size, JSON depth) live in `smartmask.sources.limits`.
"""

from smartmask.sources.base import ParsedSource, SourceError, SourceImage, SourceRegion
from smartmask.sources.load import load_source

__all__ = ["ParsedSource", "SourceError", "SourceImage", "SourceRegion", "load_source"]
