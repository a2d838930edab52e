"""A bulk insertion job's settings: what every item is run with (hashed into its key) and how the stages are
placed on workers (not hashed: moving a job to a bigger cluster does not redo its items).

    cfg = BulkConfig(model_version="m-1a2b", inpainter="controlnet-sd15", segmenter="facebook/mask2former-...")
    cfg.config_hash()        # 16 hex digits over what changes an output
    cfg.stage("suggest")     # StageResources(concurrency=1, batch_size=4, num_cpus=..., num_gpus=None)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field

from smartmask.inference.images import MAX_PIXELS
from smartmask.inference.inpaint import InpaintConfig

#: The stages a catalog row goes through, in order. `read` is one task (it also drops keys already written and
#: rejects repeated rows); `decode` and `write` are stateless tasks; the model stages are actor pools.
STAGES = ("read", "decode", "layout", "suggest", "insert", "write")
MODEL_STAGES = ("layout", "suggest", "insert")
# Placements: `staged` runs each stage as its own tasks/actors (each model stage scales on its own: e.g. more
# inpainter actors than segmenter ones on a GPU cluster); `fused` runs decode → ... → write in one actor per
# pipeline replica (`fused` stage settings), which on CPUs avoids moving every image between five processes and
# time-slicing them on the same cores (docs/bulk_insert.md, "Placement"). `auto`: fused without GPUs, else staged.
PLACEMENTS = ("auto", "fused", "staged")
STAGE_SETTINGS = (*STAGES[1:], "fused")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True, kw_only=True, slots=True)
class StageResources:
    """Where one stage runs. `concurrency`: tasks (decode, write) or actors (model stages) at once; `batch_size`:
    items per call; `num_cpus` per task/actor (fractions let five stages share two cores); `num_gpus` per actor,
    None = one GPU per actor when the cluster has GPUs, else none."""

    concurrency: int = 1
    batch_size: int = 8
    num_cpus: float = 0.4
    num_gpus: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.batch_size < 1:
            raise ValueError(f"stage concurrency and batch size must be >= 1, got {self.concurrency}, "
                             f"{self.batch_size}")
        if self.num_cpus <= 0 or (self.num_gpus is not None and self.num_gpus < 0):
            raise ValueError(f"num_cpus must be > 0 and num_gpus >= 0, got {self.num_cpus}, {self.num_gpus}")


def default_stages(workers: int = 1) -> dict[str, StageResources]:
    """Defaults for a 2-core machine and one GPU per model actor on a cluster, each stage `workers` wide. Staged: the
    three actors 0.4 CPU each and the two task stages 0.2, 1.7 CPUs with the reader at `workers=1`, so every stage
    fits on 2 cores. Fused: 0.9 CPU per replica, so `--workers 2` fits 2 cores with the reader (Ray's CPUs are
    logical: a model actor uses the threads it is given, see `threads_for`)."""
    return {
        "decode": StageResources(concurrency=workers, batch_size=8, num_cpus=0.2),
        "layout": StageResources(concurrency=workers, batch_size=8, num_cpus=0.4),
        "suggest": StageResources(concurrency=workers, batch_size=4, num_cpus=0.4),
        "insert": StageResources(concurrency=workers, batch_size=4, num_cpus=0.4),
        "write": StageResources(concurrency=workers, batch_size=8, num_cpus=0.2),
        "fused": StageResources(concurrency=workers, batch_size=4, num_cpus=0.9),
    }


def threads_for(num_cpus: float) -> int:
    """torch threads for an actor granted `num_cpus` logical CPUs: at least one, never the whole machine each (five
    actors each spawning a thread per core on two cores run slower than one thread each)."""
    return max(1, int(num_cpus))


@dataclass(frozen=True, kw_only=True)
class BulkConfig:
    """Everything a bulk run needs besides the catalog and the lake. Per-item values (n_suggestions, seed) come
    from the catalog row, with `n_suggestions`/`seed` here as the defaults for rows that leave them empty."""

    # resolved (the CLI turns --model or "newest" into a version before building this); the `bulk_insert` flow
    # also takes the literal "newest" (flows.bulk_insert.NEWEST, what `smartmask serve` deployments without a
    # `model` pass) and resolves it to the newest registered model when the run starts
    model_version: str
    segmenter: str | None = None  # Mask2Former dir or hub id; rows with layout_from need none
    inpainter: str = "controlnet-sd15"
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)
    n_suggestions: int = 4
    seed: int = 0
    steps: int = 20
    scheduler: str = "dpm"
    fit_box: bool = True
    max_image_pixels: int = MAX_PIXELS
    max_n_suggestions: int = 64
    allow_roots: tuple[str, ...] = ()  # absolute, resolved directories local paths must lie in
    allow_schemes: tuple[str, ...] = ()  # fsspec protocols besides local files, e.g. ("s3", "gs")
    device: str | None = None
    placement: str = "auto"
    stages: dict[str, StageResources] = field(default_factory=default_stages)
    commit_every: int = 256  # rows per Parquet part the driver commits (also every `commit_every_s`)
    commit_every_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.model_version:
            raise ValueError("a bulk run needs a model version")
        if not 1 <= self.n_suggestions <= self.max_n_suggestions:
            raise ValueError(f"n_suggestions must be 1..{self.max_n_suggestions}, got {self.n_suggestions}")
        if self.steps < 1 or self.scheduler not in ("dpm", "ddim"):
            raise ValueError(f"steps must be >= 1 and scheduler dpm or ddim, got {self.steps}, {self.scheduler!r}")
        unknown = set(self.stages) - set(STAGE_SETTINGS)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGE_SETTINGS)}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.commit_every < 1:
            raise ValueError("commit_every must be >= 1")

    def stage(self, name: str) -> StageResources:
        return self.stages.get(name) or default_stages()[name]

    def output_settings(self) -> dict:
        """What changes an item's output: model, segmenter, inpainter and every sampling/inpainting setting.
        Not placement, not the allowed roots, not the device."""
        return {"model_version": self.model_version, "segmenter": self.segmenter, "inpainter": self.inpainter,
                "inpaint": dataclasses.asdict(self.inpaint), "n_suggestions": self.n_suggestions,
                "seed": self.seed, "steps": self.steps, "scheduler": self.scheduler, "fit_box": self.fit_box,
                "max_image_pixels": self.max_image_pixels}

    def config_hash(self) -> str:
        blob = json.dumps(self.output_settings(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """JSON-safe, for the run manifest and for shipping to Ray workers as plain data."""
        d = self.output_settings() | {"allow_roots": list(self.allow_roots), "allow_schemes": list(self.allow_schemes),
                                      "device": self.device, "placement": self.placement,
                                      "commit_every": self.commit_every,
                                      "commit_every_s": self.commit_every_s, "max_n_suggestions": self.max_n_suggestions}
        d["stages"] = {k: dataclasses.asdict(v) for k, v in self.stages.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BulkConfig:
        d = dict(d)
        d["inpaint"] = InpaintConfig(**d.get("inpaint", {}))
        d["stages"] = {k: StageResources(**v) for k, v in d.get("stages", {}).items()}
        d["allow_roots"] = tuple(d.get("allow_roots", ()))
        d["allow_schemes"] = tuple(d.get("allow_schemes", ()))
        return cls(**d)

    @classmethod
    def for_tests(cls, model_version: str, **overrides) -> BulkConfig:
        """Test-size settings: the synthetic inpainter, 2 suggestions, 4 DPM steps, small batches."""
        base = {"inpainter": "synthetic", "n_suggestions": 2, "steps": 4, "inpaint": InpaintConfig.for_tests(),
                "commit_every": 64}
        return cls(model_version=model_version, **(base | overrides))
