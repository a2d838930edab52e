"""`SmartMaskPipeline`: the product path, layout → SmartMask suggestions → insertion, as one object.

Built once (from a lake and a model version, plus an optional segmenter and inpainter), then called per request,
like a diffusers pipeline. `smartmask suggest` / `insert`, the demo and the held-out checks call it; a job that
fans out over Ray actors builds one inside each actor from plain arguments (`from_lake(lake, version,
segmenter=..., inpainter=...)`), so nothing heavy is pickled. Each model loads once, on first use, and is kept.

    pipe = SmartMaskPipeline.from_lake("lake", segmenter="facebook/mask2former-swin-large-coco-panoptic",
                                       inpainter="controlnet-sd15")
    result = pipe.suggest("a woman", "a woman beside the river", image=pixels_HWC,
                          control=Control("box", box=(x0, y0, x1, y1)))
    inserted = pipe.insert("a woman", "a woman beside the river", image=pixels_HWC, suggestions=result)

Errors from bad input are `BadInput` (one line, `field` names the request part); nothing here knows CLI flags.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smartmask.conditioning.guidance import ALPHA
from smartmask.conditioning.vocabulary import Vocabulary
from smartmask.inference.errors import BadInput
from smartmask.inference.images import save_png
from smartmask.inference.inpaint import InpaintConfig, Inpainter, load_inpainter
from smartmask.inference.insert import InsertResult, insert_object
from smartmask.inference.layout import SceneLayout, layout_from_lake, layout_image, parse_layout_ref
from smartmask.inference.suggest import Control, SuggestConfig, SuggestResult, overlay_preview, suggest
from smartmask.lake.io import write_json_atomic
from smartmask.lake.paths import model_dir
from smartmask.pretrained import ModelNotFound


@dataclass(frozen=True, eq=False)
class Suggestions:
    """One suggest request's answer: ranked masks at the image's size, the layout the model read, and a JSON-safe
    record of the request (model version, layout source, control, sampling settings)."""

    result: SuggestResult
    scene: SceneLayout
    request: dict

    @property
    def masks(self) -> list[np.ndarray]:
        return [s.mask_HW for s in self.result.suggestions]

    def write(self, out_dir: Path, image_HWC: np.ndarray | None = None) -> dict:
        """mask-<rank>.png, suggestion-<rank>.json, layout.png, suggest.json (and overlay.png given the image),
        each written atomically; returns the summary record."""
        out_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for s in self.result.suggestions:
            save_png(out_dir / f"mask-{s.rank}.png", s.mask_HW)
            rec = s.record() | {"mask": f"mask-{s.rank}.png"}
            write_json_atomic(self.request | rec, out_dir / f"suggestion-{s.rank}.json")
            records.append(rec)
        if image_HWC is not None:
            save_png(out_dir / "overlay.png", overlay_preview(image_HWC, self.masks))
        save_png(out_dir / "layout.png", np.clip(np.rint(self.result.layout_R3 * 255), 0, 255).astype(np.uint8))
        summary = self.request | {"suggestions": records, "duplicates_dropped": self.result.duplicates,
                                  "seconds": round(self.result.seconds, 3)}
        write_json_atomic(summary, out_dir / "suggest.json")
        return summary


@dataclass(frozen=True, eq=False)
class Insertion:
    """One insert request's answer: the output image (bit-identical to the input outside `dilated`), the mask it
    used and where that mask came from, and the suggestions when SmartMask drew it. When the input had an alpha
    channel, `alpha` is the output's (the input's outside the mask, 255 on it) and inserted.png is RGBA."""

    result: InsertResult
    mask_HW: np.ndarray
    mask_source: str
    suggestions: Suggestions | None = None
    record: dict = field(default_factory=dict)

    @property
    def image(self) -> np.ndarray:
        return self.result.image

    @property
    def alpha(self) -> np.ndarray | None:
        return self.result.alpha

    @property
    def dilated(self) -> np.ndarray:
        return self.result.dilated

    def write(self, out_dir: Path) -> dict:
        """inserted.png (RGBA when the input had an alpha channel), mask.png, dilated-mask.png, insert.json
        (atomic each); returns the JSON record."""
        save_png(out_dir / "inserted.png", self.result.rgba)
        save_png(out_dir / "mask.png", self.mask_HW)
        save_png(out_dir / "dilated-mask.png", self.result.dilated)
        rec = self.record | self.result.record()
        write_json_atomic(rec, out_dir / "insert.json")
        return rec


class SmartMaskPipeline:
    """A registered SmartMask model with its vocabulary and α, and optionally a segmenter and an inpainter."""

    def __init__(self, model=None, *, version: str | None = None, lineage: dict | None = None,
                 vocab: Vocabulary | None = None, alpha: float = ALPHA, lake: Path | None = None,
                 segmenter: str | None = None, inpainter: str | None = None,
                 inpaint_config: InpaintConfig | None = None, device: str | None = None):
        self.model = model
        self.version = version
        self.lineage = lineage or {}
        self.vocab = vocab
        self.alpha = alpha
        self.lake = lake
        self.segmenter_spec = segmenter
        self.inpainter_spec = inpainter
        self.inpaint_config = inpaint_config or InpaintConfig()
        self.device = device
        self._segmenter = None
        self._inpainter: Inpainter | None = None

    @classmethod
    def from_lake(cls, lake: str | Path, version: str | None = None, *, segmenter: str | None = None,
                  inpainter: str | None = None, inpaint_config: InpaintConfig | None = None,
                  device: str | None = None, with_model: bool = True,
                  layout_only: bool = False) -> SmartMaskPipeline:
        """The registered model `version` (the newest when None) and the vocabulary and α it was trained with.
        `with_model=False` builds an inpainting-only pipeline (the box baseline, a mask from a file);
        `layout_only=True` one that reads layouts in the model's vocabulary without loading the model (a bulk
        job's segmenter actor)."""
        from smartmask.registry import NotFound, load_model, resolve_model

        lake = Path(lake)
        if not with_model:
            return cls(lake=lake, segmenter=segmenter, inpainter=inpainter, inpaint_config=inpaint_config,
                       device=device)
        try:
            v = resolve_model(lake, version)
        except NotFound as e:
            raise BadInput(str(e), "model") from None
        d = model_dir(lake, v)
        if layout_only:
            return cls(version=v, vocab=Vocabulary.read(d / "vocabulary.parquet"), lake=lake, segmenter=segmenter,
                       device=device)
        model, lineage = load_model(lake, v, device=device)
        training = json.loads((d / "training.json").read_text()) if (d / "training.json").exists() else {}
        alpha = float(training.get("sample", {}).get("alpha", ALPHA))
        return cls(model.eval(), version=v, lineage=lineage, vocab=Vocabulary.read(d / "vocabulary.parquet"),
                   alpha=alpha, lake=lake, segmenter=segmenter, inpainter=inpainter,
                   inpaint_config=inpaint_config, device=device)

    # -- components, loaded once ---------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self._need_model().config.resolution

    def _need_model(self):
        if self.model is None:
            raise BadInput("this pipeline has no SmartMask model (built with with_model=False)", "model")
        return self.model

    @property
    def inpainter(self) -> Inpainter:
        if self._inpainter is None:
            if not self.inpainter_spec:
                raise BadInput("no inpainter: build the pipeline with inpainter=SPEC", "inpainter")
            try:
                self._inpainter = load_inpainter(self.inpainter_spec, device=self.device, config=self.inpaint_config)
            except ModelNotFound as e:
                raise BadInput(str(e), "inpainter") from None
        return self._inpainter

    def _segment(self, image_HWC: np.ndarray) -> SceneLayout:
        if not self.segmenter_spec:
            raise BadInput("no layout: give a panoptic segmenter (a Mask2Former directory or hub id) or a "
                           "ground-truth layout reference DATASET:IMAGE_ID[:K]", "layout")
        if self._segmenter is None:
            from smartmask.inference.segment import PanopticSegmenter

            try:
                self._segmenter = PanopticSegmenter.load(self.segmenter_spec, device=self.device)
            except ModelNotFound as e:
                raise BadInput(str(e), "segmenter") from None
        return self._segmenter.segment(image_HWC, self.vocab)

    # -- per request ---------------------------------------------------------------------------------------------
    def layout(self, image_HWC: np.ndarray | None = None, layout_from: str | None = None) -> SceneLayout:
        """S_I in the model's vocabulary: an annotated image's first K layers (`DATASET:IMAGE_ID[:K]`, no segmenter)
        or the segmenter's regions on `image_HWC`."""
        if self.vocab is None:
            raise BadInput("this pipeline has no model vocabulary to read layouts in (built with with_model=False)",
                           "model")
        if layout_from:
            if self.lake is None:
                raise BadInput("a ground-truth layout needs a pipeline built from a lake", "layout")
            ds, image_id, k = parse_layout_ref(layout_from)
            scene, _ = layout_from_lake(self.lake, ds, image_id, k)
            if image_HWC is not None and (scene.height, scene.width) != image_HWC.shape[:2]:
                H, W = image_HWC.shape[:2]
                raise BadInput(f"layout {layout_from}: that image is {scene.width}x{scene.height}, the input is "
                               f"{W}x{H}", "layout")
            return scene.restricted_to(self.vocab)
        if image_HWC is None:
            raise BadInput("no layout: give an image to segment or a layout reference", "layout")
        return self._segment(image_HWC)

    def suggest(self, obj: str, context: str, *, image: np.ndarray | None = None, scene: SceneLayout | None = None,
                layout_from: str | None = None, control: Control | None = None,
                config: SuggestConfig | None = None) -> Suggestions:
        """N ranked, de-duplicated masks for inserting `obj`. The layout is `scene` when given, else
        `layout(image, layout_from)`; masks come back at the layout's size."""
        model = self._need_model()
        if not obj or not obj.strip():
            raise BadInput("the object name is empty", "object")
        control = control or Control()
        config = config or SuggestConfig()
        if scene is None:
            scene = self.layout(image, layout_from)
        H, W = scene.height, scene.width
        R = model.config.resolution
        result = suggest(model, lambda window: layout_image(scene, self.vocab, R, window), control, obj, context,
                         H, W, config, alpha=self.alpha)
        return Suggestions(result, scene, self._request(obj, context, scene, control, config))

    def masks_on_grid(self, layout_BCRR, objs: list[str], contexts: list[str], *, n: int = 1,
                      config: SuggestConfig | None = None, return_probs: bool = False):
        """The model's raw samples for a batch of guided layouts already at its resolution (B, 3, R, R), as the
        training sampler makes them: masks (B, n, R, R) bool (and probabilities). For checks at model
        resolution; requests from users go through `suggest`."""
        import torch

        from smartmask.model.sampling import sample_masks

        model = self._need_model()
        cfg = config or SuggestConfig(n=n)
        layout = torch.as_tensor(layout_BCRR, device=model.device)
        return sample_masks(model, layout, objs, contexts, n=n, layout_scale=cfg.layout_scale,
                            text_scale=cfg.text_scale, steps=cfg.steps, scheduler=cfg.scheduler, seed=cfg.seed,
                            threshold=cfg.threshold, return_probs=return_probs)

    def insert(self, obj: str, context: str, *, image: np.ndarray, mask: np.ndarray | None = None,
               mask_source: str | None = None, suggestions: Suggestions | None = None, pick: int = 1,
               control: Control | None = None, config: SuggestConfig | None = None, layout_from: str | None = None,
               scene: SceneLayout | None = None, seed: int = 0, alpha: np.ndarray | None = None) -> Insertion:
        """Insert `obj` into `image` (H, W, 3 uint8) inside `mask` when given, else inside suggestion `pick` (1 =
        best) of `suggestions`, sampled here when not given. Outside the dilated mask every pixel is the input's.

        `alpha` (H, W uint8) is the input's alpha channel; by default the one `load_image` attached to `image`
        (`DecodedImage.alpha`), so `insert(image=load_image(path))` keeps a transparent PNG's alpha. The models
        see the RGB only; the output keeps the alpha outside the mask and is opaque on it (`Insertion.alpha`)."""
        alpha = getattr(image, "alpha", None) if alpha is None else np.asarray(alpha)
        image = np.asarray(image)  # a plain ndarray from here on: the alpha travels explicitly
        if alpha is not None and (alpha.shape != image.shape[:2] or alpha.dtype != np.uint8):
            raise BadInput(f"the alpha channel is {alpha.shape} {alpha.dtype}, not {image.shape[:2]} uint8 like "
                           "the image", "image")
        record: dict = {"object": obj, "context": context, "inpainter_spec": self.inpainter_spec}
        if mask is None:
            if suggestions is None:
                suggestions = self.suggest(obj, context, image=image, scene=scene, layout_from=layout_from,
                                           control=control, config=config)
            found = suggestions.result.suggestions
            if pick > len(found):
                raise BadInput(f"suggestion {pick} does not exist: only {len(found)} distinct suggestion(s)", "pick")
            s = found[pick - 1]
            if s.empty:
                raise BadInput(f"suggestion {pick} is empty (the model placed no {obj}); try another seed or pick",
                               "pick")
            mask = s.mask_HW
            mask_source = f"smartmask:{suggestions.request['model_version']}"
            record |= {"pick": pick, "suggest": suggestions.request}
        elif not mask.any():
            raise BadInput("the mask is empty: nothing to inpaint", "mask")
        record["mask_source"] = mask_source or "given"
        painter = self.inpainter
        try:
            res = insert_object(image, mask, obj, context, painter, self.inpaint_config, seed=seed, alpha=alpha)
        except ValueError as e:  # e.g. the synthetic inpainter asked for a class the world does not have
            raise BadInput(str(e), "object") from None
        return Insertion(res, mask, record["mask_source"], suggestions, record)

    def _request(self, obj: str, context: str, scene: SceneLayout, control: Control, cfg: SuggestConfig) -> dict:
        return {"width": scene.width, "height": scene.height, "object": obj, "context": context,
                "model_version": self.version, "layout_source": scene.source, "layout_regions": len(scene.regions),
                "unknown_regions": scene.unknown, "unknown_labels": list(scene.unknown_labels),
                "control": control.describe(), "n": cfg.n, "steps": cfg.steps, "scheduler": cfg.scheduler,
                "seed": cfg.seed, "layout_scale": cfg.layout_scale, "text_scale": cfg.text_scale,
                "threshold": cfg.threshold, "fit_box": cfg.fit_box,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
