"""Iterative design (paper §3.3, Fig. 7): a planner proposes where the next object goes, SmartMask draws it there,
its mask becomes the next layer; repeat, object by object.

    cfg = DesignConfig(objects=("tree", "house", "dog"), context="a park with a lake", canvas=(512, 384))
    designer = Designer.from_lake("lake", cfg)        # the pipeline and the planner, built once
    result = designer.design(cfg)                     # result.layout: a LayeredLayout, result.steps: what happened

Per object, the planner's boxes, best first, become box guidance for SmartMask (suggestions fitted to the box, as
`smartmask suggest --bbox` does) until one gives a non-empty mask; the best-ranked one is the new front layer. An
object that fails (no planner answer, only empty masks) is recorded and the design goes on: it never dies for one
object. From an empty canvas the background comes first (`smartmask.design.background`). Into a photo, its layout
is the start, and each placed object is then inpainted through the same pipeline, one pass per object on the
previous pass's output: outside the union of the passes' dilated masks the final image is the input, bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from smartmask.design.background import BackgroundPlan, StuffStats, plan_background
from smartmask.design.layered import DesignLayer, LayeredLayout
from smartmask.inference.errors import BadInput
from smartmask.inference.inpaint import ContentFiltered
from smartmask.inference.suggest import Control, SuggestConfig

SEED_STRIDE = 1000  # object i samples from seed + 1000·i: its suggestions (seed + j, j < n ≤ 64) never overlap
SEED_SPACE = 2**32 - SEED_STRIDE  # seeds stay inside numpy's / torch's 0..2**32-1 with the j added
CANVAS_MAX = 8192
ARTICLES = ("a ", "an ", "the ", "some ")


@dataclass(frozen=True, kw_only=True)
class DesignConfig:
    """One design request and what the `Designer` is built from. Built from: `model` (a version; None: the newest),
    `planner` ("prior", "prior:DATASET[@V]", "llava:SOURCE"), `segmenter` and `inpainter` (into a photo). The
    request: `objects` back to front, `context` the final scene's description, `canvas` (W, H) of an empty canvas
    OR `photo` (a path) with its layout from `layout_from` ("DATASET[@V]:IMAGE_ID[:K]") or the segmenter;
    `background` lays stuff first on an empty canvas; `seed`; `n_boxes` planner boxes per object; `steps`,
    `n_suggestions`, `scheduler`, `fit_box` the SmartMask sampling settings; `inpaint_steps` (None: the
    inpainter's default)."""

    objects: tuple[str, ...]
    context: str
    canvas: tuple[int, int] | None = None
    photo: str | None = None
    layout_from: str | None = None
    model: str | None = None
    planner: str = "prior"
    segmenter: str | None = None
    inpainter: str = "controlnet-sd15"
    inpaint_steps: int | None = None
    background: bool = True
    seed: int = 0
    n_boxes: int = 4
    steps: int = 20
    n_suggestions: int = 4
    scheduler: str = "dpm"
    fit_box: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(" ".join(str(o).split()) for o in self.objects))
        if not self.objects or not all(self.objects):
            raise BadInput("give at least one object, none of them empty", "objects")
        if self.photo is not None and self.canvas is not None:
            raise BadInput("give a canvas size or a photo, not both", "canvas")
        if self.canvas is not None and (len(self.canvas) != 2 or not all(16 <= v <= CANVAS_MAX for v in self.canvas)):
            raise BadInput(f"canvas must be W,H with each side 16..{CANVAS_MAX}, got {self.canvas}", "canvas")
        if self.layout_from and self.photo is None:
            raise BadInput("a layout reference needs the photo it belongs to", "layout")
        if self.n_boxes < 1:
            raise BadInput(f"the planner must propose at least 1 box, got {self.n_boxes}", "planner")
        self.suggest_config(0)  # the sampling settings' own checks (steps, n, scheduler), before any model loads

    @property
    def size(self) -> tuple[int, int]:
        return self.canvas or (640, 480)  # an empty canvas's (W, H) when none is given

    def suggest_config(self, seed: int) -> SuggestConfig:
        if self.scheduler not in ("dpm", "ddim"):
            raise BadInput(f"the scheduler must be dpm or ddim, got {self.scheduler!r}", "scheduler")
        return SuggestConfig(n=self.n_suggestions, steps=self.steps, scheduler=self.scheduler, seed=seed,
                             fit_box=self.fit_box)

    @classmethod
    def for_tests(cls, **changes) -> DesignConfig:
        """Six synthetic-world objects on a 160 × 120 canvas, 3 boxes, 2 suggestions of 4 steps."""
        base = dict(objects=("tree", "house", "person", "dog", "bench", "bird"), canvas=(160, 120),
                    context="a park with a lake: a house behind a tree, a person with a dog by a bench, a bird",
                    n_boxes=3, steps=4, n_suggestions=2, inpainter="synthetic")
        return cls(**(base | changes))


@dataclass(frozen=True, kw_only=True)
class DesignStep:
    """What happened to one object. `status` "placed" or "failed" (`reason`: planner_error | empty_masks |
    suggest_error); `proposals` the planner's boxes; `tried` one record per box tried; `box`, `mask_seed`,
    `score` of the chosen mask; `plausibility` the synthetic world's verdict where its rules cover the object;
    `inserted` (into a photo) whether its inpainting pass ran, `planner_stats` what the planner said about its
    answer (e.g. malformed answers), when it says anything."""

    index: int
    object: str
    seed: int
    status: str
    reason: str | None = None
    detail: str = ""
    proposals: tuple[dict, ...] = ()
    tried: tuple[dict, ...] = ()
    box: tuple[float, float, float, float] | None = None
    mask_seed: int | None = None
    score: float | None = None
    area: int = 0
    plausibility: dict | None = None
    inserted: bool | None = None
    planner_stats: dict | None = None
    seconds: float = 0.0

    @property
    def placed(self) -> bool:
        return self.status == "placed"

    def record(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return out | {"box": None if self.box is None else [round(float(v), 2) for v in self.box],
                      "proposals": list(self.proposals), "tried": list(self.tried), "seconds": round(self.seconds, 3)}

    def line(self) -> str:
        """One line for a terminal."""
        if not self.placed:
            return f"{self.index + 1}. {self.object}: FAILED ({self.reason}: {self.detail})"
        plaus = ""
        if self.plausibility is not None:
            plaus = f", {'plausible' if self.plausibility['plausible'] else 'implausible'} placement"
        box = ",".join(f"{v:.0f}" for v in self.box)
        ins = "" if self.inserted is None else (", inserted" if self.inserted else f", NOT inserted ({self.detail})")
        return (f"{self.index + 1}. {self.object}: box {box} (try {len(self.tried)}/{len(self.proposals)}), "
                f"seed {self.mask_seed}, score {self.score:.3f}, {self.area} px{plaus}{ins}")


@dataclass(frozen=True, eq=False)
class DesignResult:
    """The designed (unstored) layout, one step per object, the background plan, and into a photo: the input,
    the final image and `changed_HW`, the union of the passes' dilated masks (outside it, image == input)."""

    layout: LayeredLayout
    steps: tuple[DesignStep, ...]
    background: BackgroundPlan | None = None
    input_image: np.ndarray | None = None
    image: np.ndarray | None = None
    changed_HW: np.ndarray | None = None
    record_extra: dict = field(default_factory=dict)

    @property
    def placed(self) -> tuple[str, ...]:
        return tuple(s.object for s in self.steps if s.placed)

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(s.object for s in self.steps if not s.placed)

    def record(self) -> dict:
        return self.record_extra | {
            "width": self.layout.width, "height": self.layout.height, "context": self.layout.context,
            "background": None if self.background is None else self.background.describe(),
            "placed": list(self.placed), "failed": list(self.failed), "steps": [s.record() for s in self.steps]}


def resolve_object(name: str, vocab_labels) -> str:
    """The vocabulary label for an object name ("a dog", "dogs", "Dog" → "dog"); BadInput naming it otherwise."""
    from smartmask.inference.synonyms import map_label

    text = " ".join(name.split()).lower()
    for art in ARTICLES:
        text = text.removeprefix(art)
    labels = [v for v in vocab_labels if v]
    found = map_label(text, labels)
    if found is None:
        shown = ", ".join(labels[:30]) + (", ..." if len(labels) > 30 else "")
        raise BadInput(f"object {name!r} is not in the model's vocabulary ({shown})", "objects")
    return found


class Designer:
    """A SmartMask pipeline and a planner, built once; `design(cfg)` per request. `stuff` are the background
    statistics (None: the documented rule)."""

    def __init__(self, pipe, planner, *, stuff: StuffStats | None = None):
        self.pipe = pipe
        self.planner = planner
        self.stuff = stuff

    @classmethod
    def from_lake(cls, lake, cfg: DesignConfig, *, device: str | None = None) -> Designer:
        """The pipeline (cfg.model, and cfg.segmenter / cfg.inpainter when designing into a photo), the planner
        (`load_planner(cfg.planner, lake)`) and the stuff statistics of the model's dataset version."""
        from pathlib import Path

        from smartmask.inference.inpaint import InpaintConfig
        from smartmask.inference.pipeline import SmartMaskPipeline
        from smartmask.planner.load import load_planner

        inpaint = InpaintConfig() if cfg.inpaint_steps is None else InpaintConfig(steps=cfg.inpaint_steps)
        photo = cfg.photo is not None
        pipe = SmartMaskPipeline.from_lake(lake, cfg.model, segmenter=cfg.segmenter if photo else None,
                                           inpainter=cfg.inpainter if photo else None, inpaint_config=inpaint,
                                           device=device)
        ds, dv = pipe.lineage.get("dataset"), pipe.lineage.get("dataset_version")
        spec = cfg.planner
        if spec == "prior" and ds and dv and (Path(lake) / "datasets" / f"name={ds}" / f"version={dv}").is_dir():
            spec = f"prior:{ds}@{dv}"  # a bare prior learns from the data the model learned from
        planner = load_planner(spec, lake, device=device)
        try:
            stuff = StuffStats.from_lake(Path(lake), ds, dv) if ds and dv else None
        except (OSError, ValueError):  # the dataset is not in this lake (a copied model): the rule instead
            stuff = None
        return cls(pipe, planner, stuff=stuff)

    # -- the loop ------------------------------------------------------------------------------------------------
    def design(self, cfg: DesignConfig, *, image: np.ndarray | None = None) -> DesignResult:
        """Design `cfg.objects` in order (module doc). `image` overrides `cfg.photo` (pixels already decoded)."""
        t0 = time.perf_counter()
        labels = [resolve_object(o, self.pipe.vocab.labels) for o in cfg.objects]
        if image is None and cfg.photo is not None:
            from smartmask.inference.images import load_image

            image = load_image(cfg.photo)
        plan = None
        if image is not None:
            layout = self._photo_layout(image, cfg)
        else:
            W, H = cfg.size
            layout = LayeredLayout(width=W, height=H, context=cfg.context)
            if cfg.background:
                plan = plan_background(cfg.context, labels, self.pipe.vocab.labels, seed=cfg.seed,
                                       stats=self.stuff)
                if plan is not None:
                    layout = layout.with_layers(plan.layers(W, H, cfg.seed), note=f"background {plan.describe()}")
        steps = []
        for i, label in enumerate(labels):
            step, layer = self._place(layout, i, label, cfg)
            steps.append(step)
            if layer is not None:
                layout = layout.with_layers((*layout.layers, layer))
        result = DesignResult(layout, tuple(steps), plan, record_extra={
            "planner": self.planner.id, "model_version": self.pipe.version, "seed": cfg.seed,
            "objects": list(cfg.objects), "n_boxes": cfg.n_boxes, "steps_per_mask": cfg.steps,
            "n_suggestions": cfg.n_suggestions, "photo": cfg.photo, "layout_from": cfg.layout_from})
        if image is not None:
            result = self._insert_all(result, np.asarray(image), getattr(image, "alpha", None), cfg)
        result.record_extra["seconds"] = round(time.perf_counter() - t0, 3)
        return result

    def _photo_layout(self, image: np.ndarray, cfg: DesignConfig) -> LayeredLayout:
        scene = self.pipe.layout(np.asarray(image), cfg.layout_from)
        layers = [DesignLayer(label=r.label, mask_HW=r.mask_HW, is_stuff=r.is_stuff, origin="photo")
                  for r in scene.regions]
        return LayeredLayout(width=scene.width, height=scene.height, context=cfg.context, layers=layers,
                             note=f"photo layout {scene.source}")

    def _place(self, layout: LayeredLayout, i: int, label: str, cfg: DesignConfig
               ) -> tuple[DesignStep, DesignLayer | None]:
        """One object: planner boxes → SmartMask with each box, best first, until a mask is not empty."""
        from smartmask.planner.base import PlannerError

        t0 = time.perf_counter()
        seed = (cfg.seed + SEED_STRIDE * i) % SEED_SPACE
        scene = layout.scene()

        def failed(reason: str, detail: str, **more) -> tuple[DesignStep, None]:
            return DesignStep(index=i, object=label, seed=seed, status="failed", reason=reason, detail=detail,
                              planner_stats=_planner_stats(self.planner), seconds=time.perf_counter() - t0,
                              **more), None

        try:
            proposals = self.planner.propose(scene, label, cfg.context, n=cfg.n_boxes, seed=seed)
        except (PlannerError, BadInput, ValueError, RuntimeError) as e:  # one object's failure, not the run's
            return failed("planner_error", _line(e))
        if not proposals:
            return failed("planner_error", "the planner proposed no box")
        records, tried = tuple(p.record() for p in proposals), []
        for p, rec in zip(proposals, records, strict=True):
            try:
                found = self.pipe.suggest(label, cfg.context, scene=scene, control=Control("box", box=p.box),
                                          config=cfg.suggest_config(seed)).result.suggestions
            except BadInput as e:
                tried.append({"box": rec["box"], "error": _line(e)})
                continue
            best = next((s for s in found if not s.empty), None)
            tried.append({"box": rec["box"], "suggestions": len(found), "empty": sum(s.empty for s in found)})
            if best is None:
                continue
            box = tuple(float(v) for v in p.box)
            step = DesignStep(index=i, object=label, seed=seed, status="placed", proposals=records,
                              tried=tuple(tried), box=box, mask_seed=best.seed, score=float(best.score),
                              area=int(best.mask_HW.sum()), planner_stats=_planner_stats(self.planner),
                              plausibility=_plausibility(best.mask_HW, label, scene, self.pipe.vocab.labels),
                              seconds=time.perf_counter() - t0)
            stuff = bool(self.pipe.vocab.is_stuff[self.pipe.vocab.ids[label]])  # e.g. "water" as an object
            return step, DesignLayer(label=label, mask_HW=best.mask_HW, is_stuff=stuff, origin="design", box=box,
                                     seed=best.seed, planner=self.planner.id, score=float(best.score))
        errors = [t["error"] for t in tried if "error" in t]
        if len(errors) == len(tried):
            return failed("suggest_error", errors[-1], proposals=records, tried=tuple(tried))
        return failed("empty_masks", f"every suggestion was empty for the {len(tried)} box(es) tried",
                      proposals=records, tried=tuple(tried))

    def _insert_all(self, result: DesignResult, image: np.ndarray, alpha, cfg: DesignConfig) -> DesignResult:
        """One inpainting pass per placed object, back to front, each on the previous pass's output."""
        current, changed = image, np.zeros(image.shape[:2], bool)
        designed = iter(lay for lay in result.layout.layers if lay.origin == "design")
        steps = []
        for step in result.steps:
            if not step.placed:
                steps.append(step)
                continue
            layer = next(designed)  # placed steps and designed layers are in the same order
            try:
                done = self.pipe.insert(layer.label, cfg.context, image=current, mask=layer.mask_HW,
                                        mask_source=f"design:{self.planner.id}", seed=step.seed, alpha=alpha)
            except (BadInput, ContentFiltered) as e:  # e.g. an inpainter that cannot paint this class, or a
                # safety-checker hit: the layer stays, unpainted, and the design goes on
                steps.append(replace(step, inserted=False, detail=_line(e)))
                continue
            current, alpha = done.image, done.alpha
            changed |= done.dilated
            steps.append(replace(step, inserted=True))
        return replace(result, steps=tuple(steps), input_image=image, image=current, changed_HW=changed)


def _line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _planner_stats(planner) -> dict | None:
    """What a planner reports about its last answer (`last_stats`, e.g. how many answers were malformed)."""
    stats = getattr(planner, "last_stats", None)
    return dict(stats) if isinstance(stats, dict) else None


def _plausibility(mask_HW: np.ndarray, label: str, scene, vocab_labels) -> dict | None:
    """The synthetic world's placement verdict, where its rules apply: the object has a rule and the model's
    vocabulary has every support the rule names (so the world's labels are the model's)."""
    from smartmask.evaluation.plausibility import placement_check
    from smartmask.synth.world import SUPPORT

    supports = SUPPORT.get(label)
    if not supports or not set(supports) <= set(vocab_labels):
        return None
    v = placement_check(mask_HW, label, scene)
    return None if v is None else {"plausible": v.plausible, "relation": v.relation,
                                   "support_share": round(v.support_share, 4), "reason": v.reason}
