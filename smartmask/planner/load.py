"""`load_planner(spec, lake)`: a planner from its spec string (the CLI's `--planner`). Apart from `base` so that
the planners' modules, which import the interface, are not imported back by it."""

from __future__ import annotations

from pathlib import Path

from smartmask.planner.base import Planner, PlannerError


def load_planner(spec: str, lake: str | Path | None = None, *, device: str | None = None) -> Planner:
    """A planner from its spec:

    - `prior` / `prior:DATASET[@VERSION]`: the statistical planner fitted on a dataset version of `lake` (default:
      the newest version of the only dataset, or of `synth`);
    - `llava:SOURCE`: the LLaVA planner from a registered planner version in `lake`, a local directory or a hub id.
    """
    kind, _, arg = (spec or "").partition(":")
    if kind == "prior":
        from smartmask.planner.prior import PriorPlanner

        if lake is None:
            raise PlannerError("the prior planner needs a lake to fit on")
        return PriorPlanner.from_lake(Path(lake), arg or None)
    if kind == "llava":
        from smartmask.planner.llava import LlavaPlanner

        if not arg:
            raise PlannerError("llava planner needs a source: llava:VERSION, llava:DIR or llava:ORG/NAME")
        return LlavaPlanner.load(arg, lake=None if lake is None else Path(lake), device=device)
    raise PlannerError(f"unknown planner {spec!r}: expected prior, prior:DATASET[@VERSION] or llava:SOURCE")
