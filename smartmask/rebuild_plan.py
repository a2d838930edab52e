"""What a rebuild will do, decided before any shard runs: the dataset version, its vocabulary and its shard jobs.

`smartmask.rebuild` makes a `Plan` and runs its jobs; `smartmask.publish` finishes it. Both import it from here,
so neither imports the other's module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smartmask.conditioning.vocabulary import Vocabulary
from smartmask.config import RebuildConfig
from smartmask.lake.paths import dataset_dir, staging_dir
from smartmask.sources import SourceImage


@dataclass(slots=True)
class ShardJob:
    """Everything one shard needs; small enough to pickle to a worker process."""

    index: int
    images: list[SourceImage]
    sha256: dict[str, str | None]
    label_ids: dict[str, int]
    images_root: Path
    staging: Path
    source: str
    config: RebuildConfig


@dataclass(slots=True)
class Plan:
    name: str
    version: str
    lake: Path
    source: str
    images_root: Path
    config: RebuildConfig
    vocabulary: Vocabulary
    counts_in: dict[str, int]
    parse_rejects: list[dict]
    captioner_id: str
    jobs: list[ShardJob] = field(default_factory=list)
    source_notes: tuple[str, ...] = ()  # ParsedSource.notes, for the card

    @property
    def published(self) -> bool:
        """Read from disk each time: another run may have published this version since the plan was made."""
        return (dataset_dir(self.lake, self.name, self.version) / "_manifest.json").exists()

    @property
    def lock_key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def staging(self) -> Path:
        return staging_dir(self.lake, self.name, self.version)

    def pending(self) -> list[ShardJob]:
        return [j for j in self.jobs if not (self.staging / "_done" / f"{j.index:05d}.json").exists()]
