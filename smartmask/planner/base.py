"""The planner interface: (layout S_k, T_obj, T_context) → ranked candidate boxes with scores.

    planner = load_planner("prior", lake)     # smartmask.planner.load; or "prior:synth@VERSION", "llava:SOURCE"
    boxes = planner.propose(scene, "dog", "a dog on the grass in a park", n=4, seed=0)
    boxes[0].box                                              # (x0, y0, x1, y1) in the scene's pixels

A box becomes coarse guidance for SmartMask (`Control("box", box=...)`), whose best mask becomes the next layer
(`smartmask.design`). Every planner returns boxes inside the scene with x0 < x1 and y0 < y1, best first; a planner
that cannot propose anything raises `PlannerError` (one line) rather than returning nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from smartmask.inference.errors import BadInput
from smartmask.inference.layout import SceneLayout


class PlannerError(BadInput):
    """A planner that cannot be loaded or cannot answer. One line."""

    def __init__(self, message: str):
        super().__init__(message, "planner")


@dataclass(frozen=True, kw_only=True, slots=True)
class BoxProposal:
    """One candidate box in the scene's pixel coordinates (x0, y0, x1, y1), x0 < x1 and y0 < y1, inside the
    scene; `score` ranks the candidates (higher is better, comparable within one answer only)."""

    box: tuple[float, float, float, float]
    score: float
    planner: str

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box
        if not (x0 < x1 and y0 < y1):
            raise PlannerError(f"planner {self.planner}: empty box {self.box}")

    def record(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": float(self.score), "planner": self.planner}


@runtime_checkable
class Planner(Protocol):
    """What the design loop needs of a planner. `id` names it in stored layouts (e.g. "prior:synth@1a2b3c4d")."""

    id: str

    def propose(self, scene: SceneLayout, obj: str, context: str, *, n: int = 4,
                seed: int = 0) -> list[BoxProposal]: ...


def clip_box(box, width: int, height: int, min_side: float = 1.0) -> tuple[float, float, float, float]:
    """`box` clipped to the scene, each side at least `min_side` px (so a clipped box is never empty)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
    y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
    if x1 - x0 < min_side:
        x0 = min(max(0.0, (x0 + x1 - min_side) / 2), width - min_side)
        x1 = x0 + min_side
    if y1 - y0 < min_side:
        y0 = min(max(0.0, (y0 + y1 - min_side) / 2), height - min_side)
        y1 = y0 + min_side
    return x0, y0, x1, y1
