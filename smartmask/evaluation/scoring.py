"""From one eval item's outputs to its rows: every per-item metric, no model inference here.

An `Output` is what one method produced for one item under one guidance type: its ranked masks (rank 1 is the one
inserted) and the inserted image. `score_item` turns an item's outputs into `eval_items` rows; the Local-FID
features of the real crop and of each output's crop go into the rows, so the set-level Fréchet distance (and its
bootstrap interval) is computed later from the rows alone (`summary.py`).

Per row (definitions in metrics.py, plausibility.py, fid.py, clip_score.py):
  iou, boundary_f      rank-1 mask vs the ground-truth amodal mask (boundary tolerance: metrics.default_tolerance)
  best_of_n_iou        the best of the N masks (a method with one mask: its IoU)
  diversity            1 − mean pairwise IoU of the N masks (None with one mask)
  plausibility         share of the N masks that obey the world's support rules (mask-free guidance only; None
                       when no mask can be judged)
  l2_bg, bg_psnr, bg_mse   the output vs the input outside the ground-truth mask dilated by 1% of the longer side
  clip_score           the output's object crop vs "a photo of {object}"
  real_feat, fake_feat the Local-FID features of the input's and the output's object crop
An output whose rank-1 mask is empty has its mask metrics (IoU 0 against any object) but no insertion metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from smartmask import masks
from smartmask.evaluation.clip_score import prompt_for
from smartmask.evaluation.fid import object_crop
from smartmask.evaluation.metrics import (
    Background,
    best_of_n_iou,
    boundary_f,
    default_bg_dilation,
    diversity,
)
from smartmask.evaluation.plausibility import placement_check, plausibility_rate
from smartmask.masks import mask_iou


@dataclass(frozen=True, eq=False)
class Output:
    method: str  # "smartmask" or a baseline's name
    model_version: str  # the model version, or "baseline:<name>"
    guidance: str
    masks: list  # ranked (H, W) bool masks; [0] was inserted
    image: np.ndarray | None  # the inserted output, None when nothing was inserted
    seconds: float  # inference: sampling, inpainting, segmenting
    error: str = ""  # why there is no output (a failed method on this item)


def _feats(extractor, crops: list[np.ndarray]) -> list[list[float]]:
    if not crops:
        return []
    return np.asarray(extractor(np.stack(crops)), dtype=np.float32).tolist()


def score_item(item: dict, image_HWC: np.ndarray, outputs: list[Output], *, extractor, clip, scene=None,
               base: dict | None = None) -> list[dict]:
    """Rows for `outputs` of `item` (an eval set manifest row); `base` columns are copied into every row."""
    t0 = time.perf_counter()
    H, W = image_HWC.shape[:2]
    gt = masks.decode({"size": [H, W], "counts": item["gt_rle"]}).astype(bool)
    box = tuple(item["bbox"])
    background = Background(image_HWC, gt, default_bg_dilation(H, W))
    inserted = [o for o in outputs if o.image is not None and not o.error]
    crops = [object_crop(image_HWC, box)] + [object_crop(o.image, box) for o in inserted]
    feats = _feats(extractor, crops)
    real_feat = feats[0]
    fake = dict(zip((id(o) for o in inserted), feats[1:], strict=True))
    clip_scores = dict(zip((id(o) for o in inserted),
                           np.asarray(clip.score(np.stack(crops[1:]), [prompt_for(item["object"])] * len(inserted)))
                           .tolist() if inserted else [], strict=True))
    rows = []
    for o in outputs:
        row = dict(base or {}) | {
            "item_id": item["item_id"], "image_id": item["image_id"], "object": item["object"],
            "size_bin": item["size_bin"], "area_frac": item["area_frac"], "guidance": o.guidance,
            "method": o.method, "model_version": o.model_version, "seconds_inference": o.seconds,
            "fid_extractor": extractor.name, "clip_backbone": clip.backbone, "real_feat": real_feat,
        }
        if o.error:
            rows.append(row | {"status": "failed", "error": o.error[:500]})
            continue
        m = o.masks[0]
        row |= {"status": "ok", "error": "", "n_masks": len(o.masks), "empty": not m.any(),
                "mask_rle": masks.encode(m)["counts"], "iou": mask_iou(m, gt), "boundary_f": boundary_f(m, gt),
                "best_of_n_iou": best_of_n_iou(o.masks, gt), "diversity": diversity(o.masks)}
        if o.guidance == "none" and scene is not None:
            row["plausibility"] = plausibility_rate([placement_check(x, item["object"], scene) for x in o.masks])
        if id(o) in fake:
            l2, psnr, mse = background.score(o.image)
            row |= {"l2_bg": l2, "bg_psnr": psnr, "bg_mse": mse,
                    "clip_score": clip_scores[id(o)], "fake_feat": fake[id(o)]}
        rows.append(row)
    share = (time.perf_counter() - t0) / max(1, len(rows))
    for r in rows:
        r["seconds_metrics"] = share
    return rows
