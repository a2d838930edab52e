"""`EvalConfig`: everything that decides an evaluation run's numbers, hashed into its run name.

Methods scored side by side on the same items (`METHODS`):
  smartmask          the model version's rank-1 suggestion (and all N for best-of-N, diversity, plausibility),
                     inserted with the run's inpainter
  box                the coarse mask as the mask (the guidance region: the box, the point's disc, the scribble),
                     same inpainter: "inpaint the region the user gave"
  oracle             each class's mean amodal shape (train split) fitted to the guidance region's box: the ceiling
                     of a model that learned every class's shape but ignores the layout
  sd-inpaint:SPEC    plain inpainting pipelines with the coarse mask: their whole crop comes back (no paste-back)
  sdxl-inpaint:SPEC
  inpaint-segment:SEGMENTER  inpaint the coarse mask with the run's inpainter, then segment the output with a
                     panoptic segmenter: the object's class inside the box is the mask (the paper's
                     "inpaint + HQSAM" mask baseline, with a Mask2Former-style segmenter)
Baselines need a coarse region, so they have no rows under mask-free guidance (`none`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

GUIDANCE = ("none", "box", "point", "scribble")
BASELINES = ("box", "oracle", "sd-inpaint", "sdxl-inpaint", "inpaint-segment")
DEFAULT_BASELINES = ("box", "oracle")
EVAL_CODE_VERSION = "eval-1"


class EvalConfigError(ValueError):
    """Settings that cannot make an evaluation run (one line; `field` names the setting)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, kw_only=True, slots=True)
class Baseline:
    name: str  # one of BASELINES
    spec: str | None = None  # the inpainter (sd-inpaint / sdxl-inpaint) or segmenter (inpaint-segment)

    @property
    def label(self) -> str:
        return f"baseline:{self.name}"

    @classmethod
    def parse(cls, text: str) -> Baseline:
        name, _, spec = text.strip().partition(":")
        if name not in BASELINES:
            raise EvalConfigError(f"unknown baseline {text!r}: expected {', '.join(BASELINES)} "
                                  "(sd-inpaint:SPEC, sdxl-inpaint:SPEC, inpaint-segment:SEGMENTER)", "baselines")
        if name in ("box", "oracle") and spec:
            raise EvalConfigError(f"baseline {name!r} takes no model; got {text!r}", "baselines")
        if name == "inpaint-segment" and not spec:
            raise EvalConfigError("baseline inpaint-segment needs a segmenter: inpaint-segment:DIR_OR_ID", "baselines")
        if name in ("sd-inpaint", "sdxl-inpaint"):
            spec = f"{name}:{spec}" if spec else name  # an inpainter spec as `--inpainter` takes it
        return cls(name=name, spec=spec or None)


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalConfig:
    model_version: str | None = None  # None: baselines only
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    guidance: tuple[str, ...] = GUIDANCE
    n_suggestions: int = 4
    steps: int = 20
    scheduler: str = "dpm"
    # The inpainter of the smartmask, box, oracle and inpaint-segment rows: an inpainter spec, "none" (mask metrics
    # only), or "auto" (decided when the run starts: the synthetic world's renderer when every eval object is one of
    # its classes, else none — no generative inpainter is available offline).
    inpainter: str = "auto"
    inpaint_steps: int | None = None  # the generative inpainters' steps (None: InpaintConfig's default)
    fid_extractor: str = "auto"  # inception when its weights are present, else the offline random-conv:0
    clip: str = "auto"  # a CLIP directory or hub id; auto: openai/clip-vit-base-patch32 when cached, else tiny-random
    n_boot: int = 1000  # bootstrap resamples per interval (Local-FID: at most 200, it is a set statistic)
    device: str | None = None  # not hashed: the numbers must not depend on it beyond float noise

    def __post_init__(self) -> None:
        for g in self.guidance:
            if g not in GUIDANCE:
                raise EvalConfigError(f"unknown guidance {g!r}: expected {', '.join(GUIDANCE)}", "guidance")
        if not self.guidance:
            raise EvalConfigError("no guidance type to evaluate", "guidance")
        for b in self.baselines:
            Baseline.parse(b)
        if self.model_version is None and not self.baselines:
            raise EvalConfigError("nothing to evaluate: no model and no baseline", "model")
        if self.n_suggestions < 1 or self.steps < 1 or self.n_boot < 10 or (self.inpaint_steps or 1) < 1:
            raise EvalConfigError(f"n_suggestions and steps must be >= 1 and n_boot >= 10: {self}", "n")

    @property
    def baseline_specs(self) -> tuple[Baseline, ...]:
        return tuple(Baseline.parse(b) for b in self.baselines)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvalConfig:
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in data.items() if k in names}
        for k in ("baselines", "guidance"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def config_hash(self) -> str:
        """16 hex digits over every setting that changes a number (not the device) and the code version."""
        d = asdict(replace(self, device=None)) | {"code": EVAL_CODE_VERSION}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def for_tests(cls, **overrides) -> EvalConfig:
        """Test-size settings: 2 suggestions of 4 steps, 2 inpainting steps, 100 bootstrap resamples."""
        return cls(**({"n_suggestions": 2, "steps": 4, "inpaint_steps": 2, "n_boot": 100} | overrides))
