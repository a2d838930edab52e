"""`insert_object`: put an object into an image inside a mask, leaving everything outside the dilated mask untouched.

Why: this is the last step of `SmartMaskPipeline.insert` (so of `smartmask insert`) and of the insertion baselines (the
SmartMask mask, the box as the mask, plain SD/SDXL inpainting: all of them call this with some mask and some
inpainter, so they differ only in those two arguments). Steps:

1. Validate (bad input -> one-line ValueError).
2. Crop: a square around the mask's bbox grown by the feather radius, resized to the inpainter's native side
   (`paste.square_crop`); a 4000x3000 photo never reaches the U-Net at full size.
3. Inpaint the native crop with the mask (not the dilated mask: the band around it comes back from the pipeline
   as a re-encoded copy of the original, which is what the feather blends towards).
4. Paste back: the inpainted crop, resampled onto the dilated mask's bbox only, blended by the feathered alpha;
   outside the dilated mask every byte is the input's (`paste.paste_back`). An input alpha channel (`alpha=`)
   is not seen by the inpainter (it gets the RGB as stored) and comes back in `InsertResult.alpha`: the input's
   outside the mask, 255 on it (`paste.paste_alpha`).

The prompt is `build_prompt(obj, context)`: "a boat, a quiet lake at dawn" (article + object, then the context).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from smartmask.inference import paste
from smartmask.inference.inpaint import InpaintConfig, Inpainter


@dataclass(frozen=True, eq=False)
class InsertResult:
    """The inserted image and what it took. `dilated` is the region that may differ from the input (the eval's
    Norm. L2-BG background is its complement)."""

    image: np.ndarray  # (H, W, 3) uint8
    dilated: np.ndarray  # (H, W) bool: the mask grown by `feather_px`; outside it, image == input exactly
    crop_box: tuple[int, int, int, int]  # the square inpainted (x0, y0, x1, y1); may reach past the image border
    paste_box: tuple[int, int, int, int]  # the bbox of `dilated`: the only pixels written
    native: int  # side of the square the inpainter was called at
    feather_px: int  # the dilation / feather band in image pixels
    inpainter_id: str
    prompt: str
    negative_prompt: str
    seed: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds: crop, inpaint, paste, total
    alpha: np.ndarray | None = None  # (H, W) uint8 when the input had one: the input's, and 255 on the mask

    @property
    def rgba(self) -> np.ndarray:
        """(H, W, 4) with the alpha when the input had one, else `image` (H, W, 3): what to write out."""
        return self.image if self.alpha is None else np.dstack((self.image, self.alpha))

    def record(self) -> dict:
        """JSON-safe metadata (no pixels), for run rows and the CLI's JSON output."""
        return {
            "crop_box": list(self.crop_box), "paste_box": list(self.paste_box), "native": self.native,
            "feather_px": self.feather_px, "inpainter": self.inpainter_id, "prompt": self.prompt,
            "negative_prompt": self.negative_prompt, "seed": self.seed,
            "dilated_area": int(self.dilated.sum()), "alpha": self.alpha is not None, "timings": dict(self.timings),
        }  # fmt: skip


def build_prompt(obj: str, context: str) -> str:
    """'a boat, a quiet lake at dawn': "a"/"an" before the object unless it starts with a/an/the/some (plurals
    are not guessed), then the context after a comma when there is one. Whitespace is normalised."""
    o = " ".join(str(obj).split())
    if not o:
        raise ValueError("object name is empty")
    first = o.split(" ", 1)[0].lower()
    if first not in ("a", "an", "the", "some"):
        o = ("an " if o[0].lower() in "aeiou" else "a ") + o
    c = " ".join(str(context or "").split())
    return f"{o}, {c}" if c else o


def _validate(image: np.ndarray, mask: np.ndarray, alpha: np.ndarray | None) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array; got {got}")
    if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 2:
        got = f"{mask.shape} {mask.dtype}" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ValueError(f"mask must be an (H, W) bool array; got {got}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}")
    if not mask.any():
        raise ValueError("mask is empty: nothing to inpaint")
    if alpha is not None and (not isinstance(alpha, np.ndarray) or alpha.dtype != np.uint8
                              or alpha.shape != mask.shape):
        got = f"{alpha.shape} {alpha.dtype}" if isinstance(alpha, np.ndarray) else type(alpha).__name__
        raise ValueError(f"alpha must be an {mask.shape} uint8 array like the image; got {got}")


def inpaint_crop(mask: np.ndarray, cfg: InpaintConfig, native: int) -> tuple[paste.Crop, int]:
    """The square `insert_object` inpaints for `mask` and the feather radius used there (also the crop the
    evaluation's plain-inpainting baselines return whole)."""
    H, W = mask.shape
    # The crop must hold the whole dilated mask, whose radius depends on the crop's scale: size the crop for
    # the mask's bbox plus the radius the bbox alone implies, then fix the radius for the crop actually chosen.
    x0, y0, x1, y1 = paste.mask_bbox(mask)
    min_side = round(cfg.min_crop_frac * native)
    guess = paste.square_crop((x0, y0, x1, y1), H, W, margin=cfg.crop_margin, min_side=min_side)
    r = paste.feather_radius(cfg.dilate_px, guess, native)
    grown = (max(x0 - r, 0), max(y0 - r, 0), min(x1 + r, W), min(y1 + r, H))
    crop = paste.square_crop(grown, H, W, margin=cfg.crop_margin, min_side=min_side)
    return crop, min(paste.feather_radius(cfg.dilate_px, crop, native), r)  # never past what the crop was sized for


def insert_object(
    image: np.ndarray,
    mask: np.ndarray,
    obj: str,
    context: str,
    inpainter: Inpainter,
    cfg: InpaintConfig | None = None,
    *,
    seed: int = 0,
    alpha: np.ndarray | None = None,
) -> InsertResult:
    """Insert `obj` into `image` (H, W, 3 uint8) inside `mask` (H, W bool) with `inpainter` (see module doc);
    `alpha` (H, W uint8), the input's alpha channel if it has one, is kept (`InsertResult.alpha`)."""
    cfg = cfg or InpaintConfig()
    t0 = time.perf_counter()
    _validate(image, mask, alpha)
    prompt = build_prompt(obj, context)
    negative = cfg.negative_prompt
    H, W = mask.shape
    native = int(inpainter.native)

    crop, r = inpaint_crop(mask, cfg, native)
    crop_img = paste.image_to_native(paste.extract(image, crop), native)
    crop_mask = paste.mask_to_native(paste.extract(mask, crop), native)
    t1 = time.perf_counter()

    generated = inpainter(crop_img, crop_mask, prompt, negative, int(seed), obj=obj)
    if not isinstance(generated, np.ndarray) or generated.shape != (native, native, 3) or generated.dtype != np.uint8:
        got = getattr(generated, "shape", type(generated).__name__)
        raise RuntimeError(f"inpainter {inpainter.id} returned {got}, not a ({native}, {native}, 3) uint8 image")
    t2 = time.perf_counter()

    out, dilated, region = paste.paste_back(image, mask, generated, crop, r)
    out_alpha = None if alpha is None else paste.paste_alpha(alpha, mask)
    t3 = time.perf_counter()
    return InsertResult(
        image=out, dilated=dilated, crop_box=crop.box, paste_box=region, native=native, feather_px=r,
        inpainter_id=inpainter.id, prompt=prompt, negative_prompt=negative, seed=int(seed),
        timings={"crop": t1 - t0, "inpaint": t2 - t1, "paste": t3 - t2, "total": t3 - t0}, alpha=out_alpha,
    )  # fmt: skip
