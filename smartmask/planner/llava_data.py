"""Training pairs of the LLaVA planner, drawn by SmartMask's own sampler (`smartmask.training.samples`).

Both stages see exactly the (S_k, k+1) pairs SmartMask trains on: the same valid targets, the same draw from
(seed, i), the same layout painting on the same grid. The sampler runs with guidance kind "none" only, where
S~_k = S_k ⊙ (1 − α·0) + α·0 = S_k exactly, so the picture is the plain layout that inference paints for the
planner (`LlavaPlanner.paint`, through `layout_image`, bit-identical to the sampler's).

- stage `align` (Eq. 6): S_k → `labels: a, b, c`, the labels still visible in S_k (a layer covered by later
  ones is not named: the model can only learn to read what is painted), back to front;
- stage `instruct` (Eq. 7): S_k, T_obj, T_context → the target's box B_{k+1} (the lake's amodal bbox,
  normalised as the sampler gives it) as `[x0, y0, x1, y1]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from smartmask.planner.box_text import align_answer, align_prompt, format_box, instruct_prompt
from smartmask.training.samples import LayerIndex, SampleConfig, TrainingSampler

STAGES = ("align", "instruct")
NO_GUIDANCE = (1.0, 0.0, 0.0, 0.0)  # none / box / blob / scribble: S~_k = S_k


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannerExample:
    """One training pair: the layout picture, the prompt and the answer the model must learn to give."""

    image: Image.Image  # S_k, RGB, resolution × resolution
    prompt: str
    answer: str
    image_id: str
    k: int


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return stage


class PlannerPairs:
    """Deterministic random access: `example(i)` depends only on (seed, i) and the stage, like the sampler."""

    def __init__(self, sampler: TrainingSampler, stage: str):
        if tuple(sampler.cfg.guidance_mix) != NO_GUIDANCE:
            raise ValueError("planner pairs need the sampler without guidance (guidance_mix=(1, 0, 0, 0))")
        self.sampler, self.stage = sampler, check_stage(stage)

    @classmethod
    def from_lake(cls, lake: Path, name: str, version: str, stage: str, *, resolution: int, seed: int = 0,
                  split: str = "train", min_target_area: int = 16) -> PlannerPairs:
        cfg = SampleConfig(resolution=resolution, guidance_mix=NO_GUIDANCE, split=split,
                           min_target_area=min_target_area)
        index = LayerIndex.from_lake(Path(lake), name, version, split, min_target_area=min_target_area)
        return cls(TrainingSampler(index, cfg, seed=seed), stage)

    def __len__(self) -> int:
        return len(self.sampler)

    def visible_labels(self, image_id: str, k: int) -> list[str]:
        """Labels of layers 0..k-1 of the image that still show in S_k, back to front."""
        ix = self.sampler.index
        img = ix.image_pos(image_id)
        ids, _ = self.sampler.render(ix.layer(img, k))
        shown = set(np.unique(ids).tolist())
        lo = int(ix.layer_start[img])
        return [ix.label(t) for t in range(lo, lo + k) if int(ix.label_id[t]) in shown]

    def example(self, i: int) -> PlannerExample:
        s = self.sampler.sample(i)
        rgb = np.round(np.moveaxis(s["layout"], 0, -1) * 255.0).astype(np.uint8)  # exact: colours are r / 255
        if self.stage == "align":
            prompt, answer = align_prompt(), align_answer(self.visible_labels(s["image_id"], s["k"]))
        else:
            prompt, answer = instruct_prompt(s["obj"], s["context"]), format_box(s["box"].tolist())
        return PlannerExample(image=Image.fromarray(rgb), prompt=prompt, answer=answer,
                              image_id=s["image_id"], k=s["k"])

    def examples(self, indices) -> list[PlannerExample]:
        return [self.example(int(i)) for i in indices]
