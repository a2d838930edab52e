"""Adapters from amodal-segmentation source formats to one record shape (`SourceImage` / `SourceRegion`).

`load_source("cocoa:FILE" | "kins:FILE" | "jsonl:FILE")` is the single entry point; see datasets/README.md.
"""

from smartmask.sources.base import ParsedSource, SourceError, SourceImage, SourceRegion
from smartmask.sources.load import load_source

__all__ = ["ParsedSource", "SourceError", "SourceImage", "SourceRegion", "load_source"]
