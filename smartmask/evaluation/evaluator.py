"""`Evaluator`: one eval item → the outputs of every method under every guidance type → rows (`scoring.py`).

Built once per worker from plain arguments (lake, eval set name, `EvalConfig`), like a bulk job's actors: the
SmartMask pipeline, the inpainters, the oracle's shapes, the Local-FID feature extractor and the CLIP scorer each
load once. Everything goes through the product path (`SmartMaskPipeline.suggest` / `insert`), so what is scored is
what `smartmask suggest` and `smartmask insert` return.

Determinism: the N suggestions of an item come from the item's own seed (frozen in the eval set), inpainting too, so
an item's rows do not depend on which worker ran it or in which batch; a rerun reproduces them.

A failure on one item (an unreadable image, a model error) makes failed rows with the reason for that item's
methods, never a dead run (in = ok + failed, per method and guidance).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from smartmask import masks
from smartmask.boxes import box_mask, mask_box
from smartmask.evaluation.config import Baseline, EvalConfig
from smartmask.evaluation.eval_set import EvalSet, load_eval_set
from smartmask.evaluation.scoring import Output, score_item
from smartmask.inference.inpaint import InpaintConfig
from smartmask.inference.suggest import Control, SuggestConfig


def guidance_inputs(item: dict, guidance: str) -> tuple[Control, np.ndarray | None]:
    """The item's control for `guidance` and its coarse region as a mask (None for mask-free)."""
    H, W = int(item["height"]), int(item["width"])
    if guidance == "box":
        b = tuple(float(v) for v in item["bbox"])
        return Control("box", box=b), box_mask(b, H, W)
    if guidance == "point":
        x, y, r = item["point"]
        yy, xx = np.mgrid[0:H, 0:W]
        disc = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= r * r
        return Control("point", point=(x, y, r)), disc
    if guidance == "scribble":
        s = masks.decode({"size": [H, W], "counts": item["scribble_rle"]}).astype(bool)
        return Control("scribble", scribble_HW=s), s
    return Control("none"), None


def plain_inpaint(image: np.ndarray, mask: np.ndarray, obj: str, context: str, inpainter, cfg, seed: int) -> np.ndarray:
    """A plain inpainting pipeline's answer: the crop `insert_object` would inpaint, returned whole (the pipeline
    re-encodes every pixel of it), without the paste-back that keeps SmartMask's background exact."""
    from PIL import Image

    from smartmask.inference import paste
    from smartmask.inference.insert import build_prompt, inpaint_crop

    H, W = mask.shape
    native = int(inpainter.native)
    crop, _ = inpaint_crop(mask, cfg, native)
    gen = inpainter(paste.image_to_native(paste.extract(image, crop), native),
                    paste.mask_to_native(paste.extract(mask, crop), native), build_prompt(obj, context),
                    cfg.negative_prompt, int(seed), obj=obj)
    back = np.asarray(Image.fromarray(gen).resize((crop.side, crop.side), Image.Resampling.BICUBIC))
    x0, y0, x1, y1 = crop.box
    out = image.copy()
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    out[cy0:cy1, cx0:cx1] = back[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return out


def expected_rows(cfg: EvalConfig) -> list[tuple[str, str, str]]:
    """(method, model_version, guidance) of every row an item makes under `cfg`."""
    out = []
    for g in cfg.guidance:
        if cfg.model_version:
            out.append(("smartmask", cfg.model_version, g))
        if g != "none":
            out += [(b.name, b.label, g) for b in cfg.baseline_specs]
    return out


class Evaluator:
    """Scores eval items (see module doc). `evaluate(item) -> rows`."""

    def __init__(self, lake: str | Path, eval_set: str | EvalSet, cfg: EvalConfig, *, base: dict | None = None):
        from smartmask.evaluation.clip_score import ClipScorer
        from smartmask.evaluation.fid import load_extractor
        from smartmask.inference.pipeline import SmartMaskPipeline

        self.lake = Path(lake)
        self.set = eval_set if isinstance(eval_set, EvalSet) else load_eval_set(self.lake, eval_set)
        self.cfg = cfg
        self.base = base or {}
        if cfg.inpainter == "auto":
            raise ValueError("EvalConfig.inpainter 'auto' must be decided before the evaluator starts "
                             "(flows.evaluate.pin_specs)")
        self.inserts = cfg.inpainter != "none"  # "none": mask metrics only
        painter = cfg.inpainter if self.inserts else None
        self.inpaint_config = InpaintConfig() if cfg.inpaint_steps is None else InpaintConfig(steps=cfg.inpaint_steps)
        kw = {"inpainter": painter, "inpaint_config": self.inpaint_config, "device": cfg.device}
        if cfg.model_version:
            self.pipe = SmartMaskPipeline.from_lake(self.lake, cfg.model_version, **kw)
        else:
            self.pipe = SmartMaskPipeline.from_lake(self.lake, with_model=False, **kw)
        self.baselines = cfg.baseline_specs
        self._plain: dict[str, SmartMaskPipeline] = {}
        self._segmenters: dict[str, object] = {}
        self.extractor = load_extractor(cfg.fid_extractor, device=cfg.device or "cpu")
        self.clip = ClipScorer.load(cfg.clip, device=cfg.device or "cpu")
        self.suggest_cfg = SuggestConfig(n=cfg.n_suggestions, steps=cfg.steps, scheduler=cfg.scheduler,
                                         dedupe_iou=None)

    # -- methods -------------------------------------------------------------------------------------------------
    def _smartmask(self, item, image, scene, guidance) -> Output:
        t0 = time.perf_counter()
        control, _ = guidance_inputs(item, guidance)
        cfg = dataclasses.replace(self.suggest_cfg, seed=int(item["seed"]))
        found = self.pipe.suggest(item["object"], item["context"], scene=scene, control=control, config=cfg)
        ranked = found.masks
        out = None
        if ranked[0].any() and self.inserts:
            out = self.pipe.insert(item["object"], item["context"], image=image, mask=ranked[0],
                                   mask_source=f"smartmask:{self.cfg.model_version}", seed=int(item["seed"])).image
        return Output("smartmask", self.cfg.model_version, guidance, ranked, out, time.perf_counter() - t0)

    def _baseline(self, b: Baseline, item, image, guidance) -> Output:
        t0 = time.perf_counter()
        _, coarse = guidance_inputs(item, guidance)
        obj, ctx, seed = item["object"], item["context"], int(item["seed"])
        if b.name == "oracle":
            mask = self.set.shapes.fit_to_box(obj, mask_box(coarse), *coarse.shape)
            if mask is None:
                raise ValueError(f"the oracle has no shape for class {obj!r} (not in the train split)")
        else:
            mask = coarse
        if b.name in ("sd-inpaint", "sdxl-inpaint"):
            pipe = self._plain_pipe(b.spec)
            out = plain_inpaint(image, mask, obj, ctx, pipe.inpainter, pipe.inpaint_config, seed)
            return Output(b.name, b.label, guidance, [mask], out, time.perf_counter() - t0)
        if b.name == "inpaint-segment" and not self.inserts:
            raise ValueError("inpaint-segment needs an inpainter (the run's inpainter is none)")
        out = self.pipe.insert(obj, ctx, image=image, mask=mask, mask_source=b.label, seed=seed).image \
            if mask.any() and self.inserts else None
        if b.name == "inpaint-segment":
            seg = self._segmenter(b.spec).segment(out, self._vocab())
            found = np.zeros_like(mask)
            for r in seg.regions:
                if r.label == obj:
                    found |= r.mask_HW
            mask = found & box_mask(mask_box(coarse), *coarse.shape)
        return Output(b.name, b.label, guidance, [mask], out, time.perf_counter() - t0)

    def _plain_pipe(self, spec: str):
        from smartmask.inference.pipeline import SmartMaskPipeline

        if spec not in self._plain:
            self._plain[spec] = SmartMaskPipeline.from_lake(self.lake, with_model=False, inpainter=spec,
                                                            inpaint_config=self.inpaint_config, device=self.cfg.device)
        return self._plain[spec]

    def _segmenter(self, spec: str):
        if spec not in self._segmenters:
            from smartmask.inference.segment import PanopticSegmenter

            self._segmenters[spec] = PanopticSegmenter.load(spec, device=self.cfg.device)
        return self._segmenters[spec]

    def _vocab(self):
        if self.pipe.vocab is not None:
            return self.pipe.vocab
        from smartmask.conditioning.vocabulary import Vocabulary
        from smartmask.lake.paths import dataset_dir

        return Vocabulary.read(dataset_dir(self.lake, self.set.dataset, self.set.version) / "vocabulary")

    # -- per item ------------------------------------------------------------------------------------------------
    def expected(self) -> list[tuple[str, str, str]]:
        return expected_rows(self.cfg)

    def evaluate(self, item: dict) -> list[dict]:
        from smartmask.inference.images import load_image

        base = self.base | {"eval_set": self.set.name, "dataset_version": self.set.version}
        try:
            image = np.asarray(load_image(item["image_uri"]))
            if image.shape[:2] != (item["height"], item["width"]):
                raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, the eval set says "
                                 f"{item['width']}x{item['height']}")
            scene = self.pipe.layout(layout_from=item["layout_from"]) if self.pipe.vocab is not None else None
        except Exception as e:  # the whole item fails: one failed row per method and guidance
            outs = [Output(m, v, g, [], None, 0.0, error=f"{type(e).__name__}: {e}") for m, v, g in self.expected()]
            return [_failed(item, o, base) for o in outs]
        outputs = []
        for g in self.cfg.guidance:
            if self.cfg.model_version:
                outputs.append(self._run(lambda g=g: self._smartmask(item, image, scene, g),
                                         "smartmask", self.cfg.model_version, g))
            if g == "none":
                continue
            for b in self.baselines:
                outputs.append(self._run(lambda b=b, g=g: self._baseline(b, item, image, g), b.name, b.label, g))
        return score_item(item, image, outputs, extractor=self.extractor, clip=self.clip, scene=scene, base=base)

    @staticmethod
    def _run(fn, method: str, version: str, guidance: str) -> Output:
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as e:  # one method failing on one item is a failed row, not a failed run
            return Output(method, version, guidance, [], None, time.perf_counter() - t0,
                          error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _failed(item: dict, o: Output, base: dict) -> dict:
    return base | {"item_id": item["item_id"], "image_id": item["image_id"], "object": item["object"],
                   "size_bin": item["size_bin"], "area_frac": item["area_frac"], "guidance": o.guidance,
                   "method": o.method, "model_version": o.model_version, "status": "failed", "error": o.error[:500],
                   "seconds_inference": 0.0, "seconds_metrics": 0.0}
