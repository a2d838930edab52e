"""Where to inpaint and how to put the result back: square crops, the feathered paste-back, the box mask.

Why a module of its own: the background guarantee lives here. `insert` promises that every pixel outside the
dilated mask is bit-identical to the input, and that a 4000x3000 photo costs about what a 512x512 one does. So:

- The inpainter only ever sees a square crop around the mask, resized to its native side (`square_crop`,
  `to_native`); the crop may reach past the image border, where it is edge-padded (those pixels are never pasted).
- Full-size arrays are only uint8 (the output image) or bool (the dilated mask). Everything else (the feather's
  alpha, the resampled inpainted pixels, the uint16 blend) exists for one chunk of rows of the dilated mask's
  bounding box at a time.
- The feather: `alpha` is 255 on the mask, ramps linearly to 0 across a band of `r` pixels around it (square
  metric: separable max/box filters, O(pixels) whatever `r`), and is exactly 0 outside `dilated` (the mask grown
  by `r`). Blending with alpha 0 returns the original byte exactly, and the outside is copied again afterwards
  anyway, so the guarantee does not rest on arithmetic.

An input with an alpha channel keeps it (`paste_alpha`): the alpha outside the mask is the input's, byte for byte,
and the mask itself becomes opaque.

Boxes are (x0, y0, x1, y1) in pixel coordinates with exclusive x1/y1, as in `smartmask.conditioning.guidance`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from smartmask.boxes import mask_bbox

_ROWS_PER_CHUNK = 256  # blend rows at a time: the uint16 temporaries stay ~ 256 x width x 3 x 2 bytes


@dataclass(frozen=True, slots=True)
class Crop:
    """A square window of the image, `side` pixels, top-left at (x0, y0); it may reach past the image border."""

    x0: int
    y0: int
    side: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x0 + self.side, self.y0 + self.side)


def square_crop(box: tuple[int, int, int, int], H: int, W: int, *, margin: float, min_side: int) -> Crop:
    """The square window inpainted for a mask whose (dilated) bbox is `box`.

    side = the bbox's long side x (1 + 2 margin), at least `min_side` (context for small objects) but no larger
    than the image's short side unless the bbox itself is larger. Centred on the bbox and shifted to lie inside the
    image along every axis the image is long enough for; along a shorter axis it is centred and edge-padded.
    """
    x0, y0, x1, y1 = box
    long = max(x1 - x0, y1 - y0)
    side = max(math.ceil(long * (1.0 + 2.0 * margin)), int(min_side))
    side = max(long, min(side, min(H, W)))

    def place(lo: int, hi: int, size: int) -> int:
        start = (lo + hi - side) // 2
        if side <= size:
            start = min(max(start, 0), size - side)
        return start

    return Crop(place(x0, x1, W), place(y0, y1, H), side)


def extract(image: np.ndarray, crop: Crop) -> np.ndarray:
    """The crop's pixels (side, side[, C]), edge-padded where the crop reaches past the image. A view when the
    crop lies inside the image."""
    H, W = image.shape[:2]
    x0, y0, x1, y1 = crop.box
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    inner = image[cy0:cy1, cx0:cx1]
    pad = [(cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1)] + [(0, 0)] * (image.ndim - 2)
    if not any(p for pair in pad for p in pair):
        return inner
    if image.dtype == bool:  # outside the image there is nothing to inpaint
        return np.pad(inner, pad, mode="constant", constant_values=False)
    return np.pad(inner, pad, mode="edge")


def image_to_native(crop_pixels: np.ndarray, native: int) -> np.ndarray:
    """(side, side, 3) uint8 -> (native, native, 3) uint8, bicubic (PIL antialiases when shrinking)."""
    if crop_pixels.shape[0] == native:
        return np.ascontiguousarray(crop_pixels)
    img = Image.fromarray(np.ascontiguousarray(crop_pixels))
    return np.asarray(img.resize((native, native), Image.Resampling.BICUBIC))


def mask_to_native(crop_mask: np.ndarray, native: int) -> np.ndarray:
    """(side, side) bool -> (native, native) bool: a native pixel is masked when ANY source pixel under it is.

    Never loses a small mask (an area average of a 1-pixel mask in a 4000-pixel crop would round to nothing);
    enlarging picks the nearest source pixel. Exact partition of the source by `np.maximum.reduceat`.
    """
    side = crop_mask.shape[0]
    if side == native:
        return crop_mask.copy()
    starts = (np.arange(native, dtype=np.int64) * side) // native
    m = crop_mask.view(np.uint8)
    m = np.maximum.reduceat(m, starts, axis=0)
    m = np.maximum.reduceat(m, starts, axis=1)
    return m.astype(bool)


def feather_radius(dilate_px: int, crop: Crop, native: int) -> int:
    """`dilate_px` is given at the inpainter's native resolution; in image pixels it scales with the crop
    (a latent cell of an 8x-downsampling VAE covers 8 native pixels, i.e. 8 x side / native image pixels)."""
    if dilate_px <= 0:
        return 0
    return max(2, round(dilate_px * max(crop.side, 1) / native))


def paste_back(
    image: np.ndarray, mask: np.ndarray, generated: np.ndarray, crop: Crop, r: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """(out, dilated, region): `image` with the inpainted native square `generated` pasted back over `mask`.

    `dilated` is the mask grown by `r` (square metric), full-size bool; `region` its bbox (the only pixels
    written). Over `region`, in row chunks (each with `r` rows of halo, so the chunks agree with one pass):
    alpha = 255 on the mask, a linear ramp across the band (grow by h = r/2, then a box average of radius h: 1 at
    the mask's edge, 0 at distance ~2h), 0 outside `dilated`; the generated pixels are resampled from the native
    square onto exactly these rows (PIL `resize(box=...)`, so the full-size crop never exists); uint8 blend,
    rounded; finally every pixel outside `dilated` is reset to the original byte.
    """
    H, W = mask.shape
    mx0, my0, mx1, my1 = mask_bbox(mask)
    region = (max(mx0 - r, 0), max(my0 - r, 0), min(mx1 + r, W), min(my1 + r, H))
    x0, y0, x1, y1 = region
    out = image.copy()
    dilated = np.zeros((H, W), dtype=bool)
    gen_img = Image.fromarray(np.ascontiguousarray(generated))
    s = generated.shape[0] / crop.side
    h = max(r // 2, 1)
    for r0 in range(y0, y1, _ROWS_PER_CHUNK):
        r1 = min(r0 + _ROWS_PER_CHUNK, y1)
        a0, a1 = max(r0 - r, 0), min(r1 + r, H)  # halo rows; beyond the image the filters read zeros
        rows = slice(r0 - a0, r1 - a0)
        m8 = mask[a0:a1, x0:x1].view(np.uint8)
        m = m8[rows].astype(bool)
        if r > 0:
            dil = (ndimage.maximum_filter(m8, size=2 * r + 1, mode="constant") > 0)[rows]
            inner = ndimage.maximum_filter(m8, size=2 * h + 1, mode="constant") * np.uint8(255)
            alpha = ndimage.uniform_filter(inner, size=2 * h + 1, mode="constant")[rows]
            alpha[~dil] = 0
            alpha[m] = 255
        else:
            dil, alpha = m, m.astype(np.uint8) * np.uint8(255)
        dilated[r0:r1, x0:x1] = dil
        src = ((x0 - crop.x0) * s, (r0 - crop.y0) * s, (x1 - crop.x0) * s, (r1 - crop.y0) * s)
        gen = np.asarray(gen_img.resize((x1 - x0, r1 - r0), Image.Resampling.BICUBIC, box=src))
        orig = image[r0:r1, x0:x1]
        a = alpha[..., None].astype(np.uint16)
        blend = orig.astype(np.uint16) * (255 - a) + gen.astype(np.uint16) * a + 127
        blend //= 255
        blend[~dil] = orig[~dil]
        out[r0:r1, x0:x1] = blend.astype(np.uint8)
    return out, dilated, region


def paste_alpha(alpha: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The output's alpha for an input with one: 255 on `mask`, the input's `alpha` everywhere else.

    Opaque on the mask because the inpainter paints an opaque object there (in a transparent region it would
    otherwise vanish). Not raised in the feather band (dilated minus mask): there the inpainter returned the
    surroundings, i.e. the colour stored under the input's alpha, which in a transparent region is arbitrary
    (often black); blending that band towards opaque would draw a dark fringe around the object. So outside the
    mask the alpha is the input's exactly; only the RGB is feathered there, under that alpha.
    """
    out = alpha.copy()
    out[mask] = 255
    return out
