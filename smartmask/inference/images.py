"""Reading and writing user images for suggest / insert: bounded decoding, one-line errors, atomic writes.

A content team points these commands at arbitrary files, so decoding is defensive: the file must exist, be an
image Pillow recognises, and stay under `MAX_PIXELS` (Pillow's decompression-bomb guard, with its warning turned
into an error: a 30,000 × 30,000 PNG of a few kilobytes must not be inflated into gigabytes). EXIF orientation is
applied, so a phone photo is processed upright, and every later pixel comparison ("bit-identical outside the
mask") is against these decoded, upright RGB pixels.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from smartmask.inference.errors import BadInput

# 64 MP: a 9,000 × 7,000 scan still loads; a decompression bomb (Pillow's own default is 89 MP) does not.
MAX_PIXELS = 64_000_000


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB. Raises BadInput for a missing file, a non-image, or more than `max_pixels` pixels."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise BadInput(f"image not found: {p}", "image")
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > max_pixels:  # checked before any pixel is decoded
                    raise BadInput(f"{p.name}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,}")
                im = ImageOps.exif_transpose(im)
                rgb = np.asarray(im.convert("RGB"))
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
    return np.ascontiguousarray(rgb)


def load_mask(path: str | os.PathLike, size: tuple[int, int], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A binary mask PNG (a scribble or a chosen suggestion) as bool (H, W); it must match `size` = (H, W)."""
    arr = load_image(path, max_pixels)  # same guards; any channel > 127 counts as on
    if arr.shape[:2] != tuple(size):
        raise BadInput(f"{Path(path).name}: mask is {arr.shape[1]}x{arr.shape[0]}, the image is {size[1]}x{size[0]}")
    return arr.max(axis=2) > 127


def save_png(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """Write uint8 (H, W) / (H, W, 3) or bool (H, W) as PNG atomically (temp file in the folder, then rename)."""
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
