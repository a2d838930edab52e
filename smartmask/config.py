"""Frozen, typed configs of the data side. A run config is a Python value, not a pile of CLI flags; `for_tests()`
factories give test-size settings."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

WORLDS = ("classic", "context")


@dataclass(frozen=True, kw_only=True, slots=True)
class SynthConfig:
    """The synthetic amodal world (`smartmask synth`)."""

    width: int = 640
    height: int = 480
    # Things per scene are drawn uniformly from this range; with 2-3 stuff layers the default averages
    # ~22 instances per image, the paper's density (725,897 / 32,785).
    min_things: int = 14
    max_things: int = 25
    # Things whose visible share falls below this are dropped at generation: a fully hidden object has no
    # evidence in the image and would only teach the model to hallucinate.
    min_visible_fraction: float = 0.08
    outdoor_prob: float = 0.6
    # "classic": every class is its shape template wherever it stands (the class-mean shape fitted to a box is
    # then an oracle no layout can beat). "context": some shapes follow what lies beneath or beside them
    # (smartmask/synth/world.py, CONTEXT_RULES); the classic world stays the default, scene for scene the same.
    world: str = "classic"

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise ValueError(f"unknown synthetic world {self.world!r}: expected one of {', '.join(WORLDS)}")

    @classmethod
    def small(cls) -> SynthConfig:
        """160x120 scenes with few objects (`smartmask synth --small`)."""
        return cls(width=160, height=120, min_things=3, max_things=7)


@dataclass(frozen=True, kw_only=True, slots=True)
class RebuildConfig:
    """Ingest → validate → order → publish."""

    shard_size: int = 500
    # Regions smaller than this many pixels are rejected as `empty_mask`.
    min_area: int = 1
    # In the overlap of two amodal masks, a pair is ordered only when the visible evidence covers at
    # least this many pixels; below that it is noise from anti-aliased polygon edges.
    min_evidence_pixels: int = 4
    # Visible pixels outside the amodal mask but within this many pixels of it (Chebyshev distance: a square
    # structuring element) are boundary noise from tracing the two masks separately: they are clipped from the
    # visible mask and counted (layers.visible_clipped_pixels). Beyond the band they reject the region.
    visible_band_px: int = 2
    max_image_pixels: int = 100_000_000
    workers: int = 2
    # "template" (offline: labels + spatial relations) or "instructblip:<local dir or hub id>".
    captioner: str = "template"
    caption_prompt: str = "Describe this scene in one detailed sentence."
    caption_batch_size: int = 32
    caption_actors: int = 1  # Ray Data actors for a model captioner (one GPU each when GPUs exist)

    @classmethod
    def for_tests(cls) -> RebuildConfig:
        """Test-size settings (not the `tiny` preset: that is `smartmask.presets.tiny`)."""
        return cls(shard_size=4, workers=1, caption_batch_size=4)

    def content_hash(self) -> str:
        """Hash of what changes the output; how the work is split (workers, shards, batches) does not.

        The captioner enters as given here; the rebuild adds the resolved captioner id (model revision) itself.
        """
        d = dataclasses.asdict(self)
        for k in ("workers", "shard_size", "caption_batch_size", "caption_actors"):
            d.pop(k)
        if self.captioner == "template":
            d.pop("caption_prompt")  # the template takes no prompt
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
