"""`smartmask planner-check`: a planner's top box on held-out scenes, against the class-mean box (location) and
against random boxes (placement plausibility), then the plausibility of layouts it designs from scratch against
random boxes (`smartmask.design.check`). See docs/planner.md.

    smartmask planner-check [--planner prior|prior:DS[@V]|llava:SOURCE] [--dataset DS[@V]] [--items N]
                            [--scenes N] [--seed S] [--lake DIR]

Read-only: prints the numbers and writes nothing. Exit 2 with one line naming the flag: a dataset that does not
resolve or has no held-out targets, a planner that cannot be loaded.
"""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli_app import SEED_MAX, LakeOpt, app, bad_input, lake_folder, one_line


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a is not None and b else "n/a"


def _rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


@app.command("planner-check")
def planner_check_cmd(
    planner: Annotated[str, typer.Option(
        "--planner", help="prior (fitted on --dataset's train split) | prior:DS[@V] | llava:SOURCE")] = "prior",
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="NAME[@VERSION] whose held-out (val) scenes are checked (default: the prior planner's "
                          "dataset, else the lake's only dataset or synth)")] = None,
    items: Annotated[int, typer.Option("--items", min=1, max=1_000_000, help="held-out targets at most")] = 200,
    seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="target choice, random boxes and the "
                                                                           "planner's seed")] = 0,
    scenes: Annotated[int, typer.Option("--scenes", min=1, max=100_000,
                                        help="held-out scenes whose object lists are designed from scratch")] = 20,
    lake: LakeOpt = None,
) -> None:
    """Check a planner on held-out scenes: mean IoU of its top box with the next object's box vs the class's mean
    box, and the placement plausibility of its top box vs random boxes (the class's mean shape in each)."""
    root = lake_folder(lake, must_exist=True)
    from smartmask.design.check import design_check
    from smartmask.planner.base import PlannerError
    from smartmask.planner.check import planner_check
    from smartmask.planner.load import load_planner
    from smartmask.planner.prior import default_dataset
    from smartmask.registry import NotFound, resolve_dataset

    kind, _, arg = planner.partition(":")
    from_planner = dataset is None and kind == "prior" and bool(arg)  # prior:DS@V names the dataset too
    try:
        name, version = resolve_dataset(root, dataset or (arg if from_planner else default_dataset(root)))
    except (NotFound, PlannerError) as e:
        raise bad_input(f"{'--planner' if from_planner else '--dataset'}: {e}") from None
    spec = f"prior:{name}@{version}" if planner == "prior" else planner  # a bare prior fits on what it is checked on
    try:
        p = load_planner(spec, root)
    except PlannerError as e:
        raise bad_input(f"--planner: {e}") from None
    from smartmask.evaluation.oracle import ClassShapes

    try:
        shapes = ClassShapes.fit(root, name, version, split="train", seed=seed)  # fitted once, for both checks
        r = planner_check(root, name, version, p, n_items=items, seed=seed, shapes=shapes)
    except ValueError as e:  # no held-out targets
        raise bad_input(f"--dataset: {one_line(e)}") from None
    typer.echo(f"{p.id} on {name}@{version} held-out, {r['items']} targets, seed {seed} "
               f"({r['ms_per_propose']:.1f} ms per proposal)")
    typer.echo(f"{p.id} top-box IoU {r['iou_planner']:.2f} vs class mean box {r['iou_class_mean']:.2f} "
               f"(n={r['items']})")
    typer.echo(f"plausibility {p.id} {_rate(r['plausibility_planner'])} vs random boxes "
               f"{_rate(r['plausibility_random'])} ({_ratio(r['plausibility_planner'], r['plausibility_random'])}; "
               f"judged {r['judged_planner']} and {r['judged_random']}); class mean box "
               f"{_rate(r['plausibility_class_mean'])}, ground-truth box {_rate(r['plausibility_ground_truth'])}")
    if r["planner_errors"]:
        typer.echo(f"the planner could not answer {r['planner_errors']} targets (counted IoU 0, implausible)")
    d = design_check(root, name, version, p, n_scenes=scenes, seed=seed, shapes=shapes)
    if not d["scenes"]:
        typer.echo("designed layouts: n/a (no held-out image holds two or more things)")
        return
    typer.echo(f"designed layouts ({d['scenes']} briefs from held-out scenes, {d['placements']} placements): "
               f"plausibility {p.id} {_rate(d['plausibility_planner'])} vs random boxes "
               f"{_rate(d['plausibility_random'])} ({_ratio(d['plausibility_planner'], d['plausibility_random'])})")
