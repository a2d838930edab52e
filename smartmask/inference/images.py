"""Reading and writing user images for suggest / insert: one decoder for every Pillow mode, bounded decoding,
one-line errors, atomic writes.

A content team points these commands at arbitrary files, so decoding is defensive: the file must exist, be an
image Pillow recognises, and stay under `MAX_PIXELS` (Pillow's decompression-bomb guard, with its warning turned
into an error: a 30,000 × 30,000 PNG of a few kilobytes must not be inflated into gigabytes). EXIF orientation is
applied first, in every mode, so a phone photo is processed upright, and every later pixel comparison
("bit-identical outside the mask") is against these decoded, upright RGB pixels.

`decode_pixels` is the library's only way from a Pillow image to pixels: `load_image` (suggest, insert) and the
InstructBLIP captioner (rebuild) both call it, so a rebuild and an inference see the same pixels. Mode by mode:

- 1, L, P, RGB, CMYK, YCbCr: Pillow's own conversion to 8-bit RGB (RGB as stored, without a conversion).
- I;16, I;16B, I;16L, I;16N (16-bit greyscale, e.g. a 16-bit PNG or TIFF): v >> 8, the high byte. Not Pillow's
  convert("RGB"), which clips at 255 and turns such an image all white. Why >> 8 and not round(v / 257): Pillow
  itself decodes 16-bit RGB, RGBA and LA files by keeping the high byte, so the same picture stored as 16-bit grey
  or as 16-bit colour decodes to the same 8-bit values; both invert the usual 8 → 16 bit expansion (v = 257 b)
  exactly, and >> 8 is at most one level darker than the nearest level elsewhere.
- I (32-bit signed): values all within 0..65535 are 16-bit samples (a 16-bit greyscale stored as 32-bit, as
  older Pillows opened 16-bit PNGs) and get v >> 8; any value outside that range has no convention, so the
  finite range is stretched linearly, min → 0, max → 255 (a constant image decodes black).
- F (32-bit float): values all within [0, 1] are normalised intensities, round(v × 255); otherwise min–max as for
  I. (Not "values ≤ 255 are 8-bit levels": a slightly over-range normalised image, max 1.2, would then decode
  nearly black; min–max at worst stretches the contrast of an 8-bit-level float image.) NaN → 0, −inf → 0,
  +inf → 255.
- With an alpha channel or transparency (LA, PA, RGBA, La, RGBa, P with a transparent palette entry, a
  transparency key on L / RGB / 16-bit / I): the RGB is the colour as stored, not premultiplied by the alpha
  (that is what the models see, and what the output keeps outside the mask); the alpha comes back separately
  (`DecodedImage.alpha`) so that `insert` can restore it in its output.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from smartmask.inference.errors import BadInput

# 64 MP: a 9,000 × 7,000 scan still loads; a decompression bomb (Pillow's own default is 89 MP) does not.
MAX_PIXELS = 64_000_000


class DecodedImage(np.ndarray):
    """What `load_image` returns: an (H, W, 3) uint8 RGB ndarray in every respect, plus `alpha`, the file's
    alpha as (H, W) uint8 (None when the file has none) and `source_mode`, the Pillow mode it was decoded from.

    Only the array `load_image` returned carries them, because a crop or a flip of it would no longer match the
    alpha: indexing and computations (`pixels[::-1]`, `pixels != 0`, `pixels.sum()`) give plain ndarrays and
    numpy scalars, and a copy has `alpha = None`. That is how `SmartMaskPipeline.insert(image=load_image(path))`
    keeps the alpha without any caller passing it along.
    """

    alpha: np.ndarray | None
    source_mode: str

    def __array_finalize__(self, obj) -> None:
        self.alpha = None
        self.source_mode = ""

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        # ufunc results and reductions: plain, so `pixels.max()` is a numpy scalar as it is for any array
        arr = arr.view(np.ndarray)
        return arr[()] if return_scalar else arr

    def __getitem__(self, key):
        return np.ndarray.__getitem__(self.view(np.ndarray), key)

    @classmethod
    def wrap(cls, rgb: np.ndarray, alpha: np.ndarray | None, source_mode: str) -> DecodedImage:
        out = rgb.view(cls)
        out.alpha, out.source_mode = alpha, source_mode
        return out


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """(H, W, 3) uint8 RGB, upright, with the file's alpha as `.alpha` (see `DecodedImage`; modes: module doc).
    Raises BadInput for a missing file, a non-image, or more than `max_pixels` pixels."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise BadInput(f"image not found: {p}", "image")
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_image(p) as im:
                w, h = im.size
                if w * h > max_pixels:  # checked before any pixel is decoded
                    raise BadInput(f"{p.name}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,}")
                mode = im.mode
                rgb, alpha = decode_pixels(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadInput(f"{p.name}: refused as a possible decompression bomb ({_first_line(e)})") from None
    except UnidentifiedImageError:
        raise BadInput(f"{p.name}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, BadInput):
            raise
        raise BadInput(f"{p.name}: unreadable image ({_first_line(e)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise BadInput(f"{p.name}: decoded to an unusable array of shape {rgb.shape}")
    return DecodedImage.wrap(rgb, alpha, mode)


@contextmanager
def open_image(path: str | os.PathLike) -> Iterator:
    """`Image.open` on a file object, not on the path, and both closed afterwards.

    Why: given a path, Pillow (13.0) memory-maps an uncompressed TIFF in L / P / RGBA / CMYK / I;16 mode, and for
    one stored rotated (orientation 5-8) it maps the pixels at the upright size, i.e. garbled; from a file
    object it decodes them at the stored size and then rotates them (TIFF orientation is applied by `load()`).
    """
    from PIL import Image

    with open(path, "rb") as f, Image.open(f) as im:
        yield im


# EXIF orientation → the transpose that makes the image upright (the table of Pillow's `ImageOps.exif_transpose`).
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
            7: "TRANSVERSE", 8: "ROTATE_90"}


def exif_orientation(im) -> int:
    """The EXIF orientation (1 = upright) from the metadata read with the header, never from decoded pixels.

    Why not `ImageOps.exif_transpose`: for a PNG it decodes the pixels to look for an eXIf chunk placed after them,
    which the rebuild's size check (`validate.check_image`, header only) cannot afford; both read it here instead,
    so rebuild and inference always agree on what is upright. (An eXIf after the pixel data is ignored, as the PNG
    extension allows readers to.)"""
    from PIL import Image

    orientation = Image.Image.getexif(im).get(0x0112, 1)
    return orientation if orientation in _UPRIGHT else 1


def _orients_itself(im) -> bool:
    # Pillow's TIFF plugin reports the upright size at open and applies the orientation itself when it loads
    # (then drops the tag); every other format is stored as is and rotated here.
    return im.format == "TIFF"


def upright_size(im) -> tuple[int, int]:
    """(width, height) of the image once upright, from the header alone (what `decode_pixels` will return)."""
    w, h = im.size
    return (h, w) if exif_orientation(im) in (5, 6, 7, 8) and not _orients_itself(im) else (w, h)


def decode_pixels(im) -> tuple[np.ndarray, np.ndarray | None]:
    """A Pillow image of any mode → ((H, W, 3) uint8 RGB, (H, W) uint8 alpha or None), EXIF orientation applied
    before anything else. The conventions per mode are in the module docstring. The library's only decoder."""
    from PIL import Image

    orientation = exif_orientation(im)
    if orientation != 1 and not _orients_itself(im):  # first: every mode, so a 16-bit or CMYK scan is upright too
        im = im.transpose(getattr(Image.Transpose, _UPRIGHT[orientation]))
    mode = im.mode
    if mode.startswith("I") or mode == "F":  # I;16*, I, F: Pillow's own conversion would clip at 255
        raw = np.asarray(im)
        grey = _float_to_8bit(raw) if mode == "F" else _int_to_8bit(raw)
        key = im.info.get("transparency")
        alpha = None
        if isinstance(key, int | float) and not isinstance(key, bool):  # a tRNS grey key, in the file's units
            alpha = np.where(raw == key, np.uint8(0), np.uint8(255))
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2)), alpha
    if im.has_transparency_data:  # an alpha band, or a transparent palette entry / colour key
        # convert("RGBA") un-premultiplies La / RGBa and keeps LA / PA / RGBA colours as stored
        rgba = np.asarray(im if mode == "RGBA" else im.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    # RGB without a conversion: the pixels exactly as stored, and no second full-size copy
    rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"))
    return np.ascontiguousarray(rgb), None


def _int_to_8bit(raw: np.ndarray) -> np.ndarray:
    """16-bit samples (0..65535) → v >> 8; anything else → min–max (module doc)."""
    lo, hi = int(raw.min()), int(raw.max())
    if lo >= 0 and hi <= 65535:
        return (raw.astype(np.uint16, copy=False) >> 8).astype(np.uint8)
    return _stretch(raw.astype(np.float64), lo, hi)


def _float_to_8bit(raw: np.ndarray) -> np.ndarray:
    """[0, 1] → round(v × 255); anything else → min–max over the finite values (module doc)."""
    a = raw.astype(np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return _to_uint8(a * 255.0) if lo >= 0.0 and hi <= 1.0 else _stretch(a, lo, hi)


def _stretch(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear, lo → 0 and hi → 255; a constant image (hi == lo) → 0."""
    with np.errstate(invalid="ignore"):  # ±inf × 0 (a constant image) is NaN, which becomes 0: not a warning
        return _to_uint8((a - lo) * (255.0 / (hi - lo) if hi > lo else 0.0))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Rounded and clipped to 0..255; NaN → 0, +inf → 255, −inf → 0."""
    return np.rint(np.clip(np.nan_to_num(x, nan=0.0, posinf=255.0, neginf=0.0), 0, 255)).astype(np.uint8)


def load_mask(path: str | os.PathLike, size: tuple[int, int], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A binary mask PNG (a scribble or a chosen suggestion) as bool (H, W); it must match `size` = (H, W).

    On: any channel > 127 where the pixel is not transparent (alpha > 127). A scribble drawn on a transparent layer
    often stores white under its transparent pixels; only what is painted counts."""
    img = load_image(path, max_pixels)  # same guards and decoding
    arr, alpha = np.asarray(img), img.alpha
    if arr.shape[:2] != tuple(size):
        raise BadInput(f"{Path(path).name}: mask is {arr.shape[1]}x{arr.shape[0]}, the image is {size[1]}x{size[0]}")
    on = arr.max(axis=2) > 127
    return on if alpha is None else on & (alpha > 127)


def save_png(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """Write uint8 (H, W) / (H, W, 3) / (H, W, 4: RGBA) or bool (H, W) as PNG atomically (temp file in the folder,
    then rename)."""
    from PIL import Image

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(a).save(f, format="PNG", compress_level=1)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]
