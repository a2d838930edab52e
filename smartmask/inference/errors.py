"""The product path's one error type for unusable input, in the library's words.

`field` says which part of the request was wrong (one of `FIELDS`), so each front end can point at its own name
for it: the CLI maps "box" to `--bbox`, a bulk job to the catalog column `bbox`.
"""

from __future__ import annotations

FIELDS = ("image", "object", "box", "point", "scribble", "control", "layout", "n", "steps", "scheduler", "mask",
          "pick", "segmenter", "inpainter", "model", "dedupe", "planner", "objects", "canvas", "renderer")


class BadInput(ValueError):
    """Unusable input; the message is one line. `field`: the request field it concerns, or None."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        if field is not None and field not in FIELDS:
            raise ValueError(f"unknown field {field!r}")
        self.field = field
