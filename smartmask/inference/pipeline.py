"""One image through the product path: layout (segmenter or ground truth) → SmartMask suggestions → insertion.

These are the library calls behind `smartmask suggest` and `smartmask insert` (flows/cli_inference.py), and the
per-row work a bulk job runs in Ray Data. Output layout of one job (`out_dir`):

    suggest:  mask-<rank>.png (white = object), suggestion-<rank>.json, overlay.png (preview, ≤ 1024 px),
              layout.png (the guided S~ the model saw), suggest.json (the whole request and result)
    insert:   the above for the mask it used, plus inserted.png, dilated-mask.png (the only pixels that may differ
              from the input) and insert.json
Every file is written atomically; the JSON records carry the model version, layout source, control and seeds, so
a result can be reproduced.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smartmask.inference.images import BadInput, save_png
from smartmask.inference.layout import (
    SceneLayout,
    layout_from_lake,
    layout_image,
    parse_layout_ref,
    vocab_from_table,
)
from smartmask.inference.suggest import Control, SuggestConfig, SuggestResult, overlay_preview, suggest
from smartmask.lake.io import write_json_atomic


@dataclass(frozen=True, slots=True)
class LoadedModel:
    model: object  # SmartMask
    version: str
    lineage: dict
    vocab: object  # TableVocabulary
    alpha: float


def load_for_inference(lake: Path, version: str | None, device: str | None = None) -> LoadedModel:
    """A registered model version (newest when None) with the vocabulary and α it was trained with."""
    from smartmask.registry import load_model, model_dir, resolve_model
    from smartmask.training.guidance import ALPHA

    v = resolve_model(lake, version)  # registry.NotFound (a ValueError, one line) when unknown
    model, lineage = load_model(lake, v, device=device)
    d = model_dir(lake, v)
    training = json.loads((d / "training.json").read_text()) if (d / "training.json").exists() else {}
    alpha = float(training.get("sample", {}).get("alpha", ALPHA))
    return LoadedModel(model, v, lineage, vocab_from_table(d / "vocabulary.parquet"), alpha)


def scene_layout(image_HWC: np.ndarray, lm: LoadedModel, *, lake: Path, layout_from: str | None,
                 segmenter: str | None, device: str | None = None) -> SceneLayout:
    """The image's layout in the model's vocabulary: ground truth (`DATASET:IMAGE_ID[:K]`) or a panoptic segmenter."""
    H, W = image_HWC.shape[:2]
    if layout_from:
        ds, image_id, k = parse_layout_ref(layout_from)
        scene, _ = layout_from_lake(lake, ds, image_id, k)
        if (scene.height, scene.width) != (H, W):
            raise BadInput(f"--layout-from {layout_from}: that image is {scene.width}x{scene.height}, "
                           f"the input is {W}x{H}")
        return scene.restricted_to(lm.vocab)
    if not segmenter:
        raise BadInput("no layout: give --segmenter DIR|HUB_ID (a Mask2Former panoptic model) or "
                       "--layout-from DATASET:IMAGE_ID[:K] for an annotated image")
    from smartmask.inference.segment import PanopticSegmenter

    return PanopticSegmenter.load(segmenter, device=device).segment(image_HWC, lm.vocab)


def run_suggest(image_HWC: np.ndarray, lm: LoadedModel, scene: SceneLayout, control: Control, obj: str,
                context: str, cfg: SuggestConfig) -> SuggestResult:
    H, W = image_HWC.shape[:2]
    R = lm.model.config.resolution
    return suggest(lm.model, layout_image(scene, lm.vocab, R), control, obj, context, H, W, cfg, alpha=lm.alpha)


def write_suggestions(out_dir: Path, image_HWC: np.ndarray, result: SuggestResult, request: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for s in result.suggestions:
        save_png(out_dir / f"mask-{s.rank}.png", s.mask_HW)
        rec = s.record() | {"mask": f"mask-{s.rank}.png"}
        write_json_atomic(request | rec, out_dir / f"suggestion-{s.rank}.json")
        records.append(rec)
    save_png(out_dir / "overlay.png", overlay_preview(image_HWC, [s.mask_HW for s in result.suggestions]))
    save_png(out_dir / "layout.png", np.clip(np.rint(result.layout_R3 * 255), 0, 255).astype(np.uint8))
    summary = request | {"suggestions": records, "duplicates_dropped": result.duplicates,
                         "seconds": round(result.seconds, 3)}
    write_json_atomic(summary, out_dir / "suggest.json")
    return summary


def request_record(image_path: str | os.PathLike, image_HWC: np.ndarray, lm: LoadedModel, scene: SceneLayout,
                   control: Control, obj: str, context: str, cfg: SuggestConfig) -> dict:
    H, W = image_HWC.shape[:2]
    return {"image": str(Path(image_path).resolve()), "width": W, "height": H, "object": obj, "context": context,
            "model_version": lm.version, "layout_source": scene.source, "layout_regions": len(scene.regions),
            "unknown_regions": scene.unknown, "unknown_labels": list(scene.unknown_labels),
            "control": control.describe(), "n": cfg.n, "steps": cfg.steps, "scheduler": cfg.scheduler,
            "seed": cfg.seed, "layout_scale": cfg.layout_scale, "text_scale": cfg.text_scale,
            "threshold": cfg.threshold, "fit_box": cfg.fit_box,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
