"""Scene captions (T_context): the offline `template` captioner and InstructBLIP (paper §4), one interface.

`captioner_id(spec)` names a captioner exactly (model + revision, or `template@<version>`); every caption row
records it together with the prompt, and the id enters the dataset version hash.
"""

from __future__ import annotations

TEMPLATE_ID = "template@1"


def captioner_id(spec: str) -> str:
    """`template` → `template@1`; `instructblip:<dir or hub id>` → `instructblip:<source>@<revision>`."""
    if spec == "template":
        return TEMPLATE_ID
    kind, sep, model = spec.partition(":")
    if kind == "instructblip" and sep and model:
        from smartmask.pretrained import model_revision

        return f"instructblip:{model}@{model_revision(model)}"
    raise ValueError(f"unknown captioner {spec!r}: expected 'template' or 'instructblip:DIR_OR_HUB_ID'")
