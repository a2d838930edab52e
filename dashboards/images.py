"""Thumbnails for the dashboard, as `data:` URIs: input images, layouts, masks drawn as overlays, bulk outputs.

Everything read from disk goes through `open_image`, which never fetches anything (a URI with a scheme other than
`file:` is not read), refuses what is not a regular file, a file over `MAX_FILE_BYTES` or an image over
`MAX_PIXELS` (checked from the header, before any pixel is decoded), and turns every failure into a reason for a
placeholder instead of an exception. Masks come from their COCO RLE: decoded with `smartmask.masks.decode` and
sampled at thumbnail size (`mask_thumb`).
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image, ImageOps

from smartmask import masks

MAX_SIDE = 192  # longest side of every thumbnail, px
MAX_FILE_BYTES = 256 * 2**20
MAX_PIXELS = 80_000_000  # larger images are not decoded for a thumbnail (a decompression-bomb guard)
DECODE_PIXELS = 4_000_000  # masks up to this size are decoded whole; larger ones are sampled from their runs

# Overlay colours (RGBA): a fill, and an opaque edge so a mask stays visible over any image.
GT_FILL, GT_EDGE = (40, 200, 90, 110), (40, 220, 90, 255)
MASK_FILL, MASK_EDGE = (235, 60, 200, 120), (255, 80, 220, 255)


class ImageUnavailable(Exception):
    """Why an image could not be shown (one line; the page prints it in the placeholder)."""


def local_path(uri: str | None) -> Path:
    """The local file a URI or path names; `ImageUnavailable` for anything that would need the network."""
    if not uri:
        raise ImageUnavailable("no image path")
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise ImageUnavailable(f"not a local file ({parsed.scheme}: URI)")
    return Path(uri)


def open_image(path: Path, max_side: int = MAX_SIDE) -> Image.Image:
    """The image at `path`, upright (EXIF orientation applied), RGB, at most `max_side` on its longer side."""
    try:
        if not path.is_file():
            raise ImageUnavailable("file not found")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageUnavailable(f"file larger than {MAX_FILE_BYTES >> 20} MiB")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: the pixel limit below decides
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ImageUnavailable(f"image larger than {MAX_PIXELS:,} pixels")
                # JPEG: decode at the smallest 1/2^n scale still at least the thumbnail (4x less work at 640x480);
                # other formats: halve with a box filter before the Lanczos step when it is over 3x
                im.draft("RGB", (max_side, max_side))
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=1.5)
                return im
    except ImageUnavailable:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as e:
        raise ImageUnavailable(f"unreadable image ({type(e).__name__})") from None


def inside(base: Path, relative: str | None) -> Path:
    """`base / relative` when it stays inside `base` (symlinks resolved); `ImageUnavailable` otherwise."""
    if not relative:
        raise ImageUnavailable("no output path")
    base = base.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise ImageUnavailable("path outside its run folder")
    return path


def thumb_size(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def data_uri(im: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=82, optimize=True)
    else:  # zlib's default level: `optimize` halves the speed for a few bytes on a thumbnail
        im.save(buf, "PNG")
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def photo_uri(path: Path, size: tuple[int, int] | None = None) -> str:
    """A JPEG thumbnail of the image at `path` (resized to `size` when given, so overlays line up)."""
    im = open_image(path)
    if size is not None and im.size != size:
        im = im.resize(size, Image.Resampling.BILINEAR)
    return data_uri(im, "JPEG")


def rle_counts(rle: str) -> np.ndarray:
    """The run lengths of a COCO compressed RLE string (pycocotools' `rleFrString`, vectorised): alternating runs of
    0s and 1s, 0s first, over the pixels in column-major order."""
    c = np.frombuffer(rle.encode("ascii"), np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, np.int64)
    end = (c & 0x20) == 0  # the last character of each number: 5 bits per character, low bits first
    starts = np.r_[0, np.flatnonzero(end)[:-1] + 1]
    k = np.arange(c.size) - starts[np.cumsum(np.r_[0, end[:-1]])]
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    last = np.flatnonzero(end)
    x = np.where(c[last] & 0x10, x - (np.int64(1) << (5 * (k[last] + 1))), x)  # sign bit of the last character
    out = x.copy()  # from the 4th number on, each is a difference from the number two places before it
    out[3::2] = np.cumsum(x[1::2])[1:]
    out[4::2] = np.cumsum(x[2::2])[1:]
    return out


def mask_thumb(rle: str, height: int, width: int, size: tuple[int, int]) -> np.ndarray:
    """The RLE mask at thumbnail `size`, bool (h, w), sampled at a 2 × 2 grid of points per thumbnail pixel: on when
    at least two of the four are.

    Up to `DECODE_PIXELS` the mask is decoded (`smartmask.masks.decode`) and sampled by a nearest-neighbour resize
    to twice the size, then halved (twice as fast as an area-averaging resize, the same pixels on smooth shapes);
    a larger one is read straight from its runs at the same points, so a 12-megapixel mask costs what a small one
    does instead of a full-size decode."""
    height, width = int(height), int(width)
    (tw, th), s = size, 2
    if height * width <= DECODE_PIXELS:
        full = Image.fromarray(masks.decode({"size": [height, width], "counts": rle}) * np.uint8(255))
        return np.asarray(full.resize((tw * s, th * s), Image.Resampling.NEAREST).reduce(s)) >= 128
    ends = np.cumsum(rle_counts(rle))
    if not ends.size or ends[-1] != height * width:
        raise ValueError("the RLE does not cover the image")
    ys = ((np.arange(th * s) + 0.5) * height / (th * s)).astype(np.int64)
    xs = ((np.arange(tw * s) + 0.5) * width / (tw * s)).astype(np.int64)
    run = np.searchsorted(ends, xs[None, :] * height + ys[:, None], side="right")  # column-major pixel index
    return (run % 2 == 1).reshape(th, s, tw, s).mean(axis=(1, 3)) >= 0.5


def _edge(m: np.ndarray) -> np.ndarray:
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def overlay_uri(m: np.ndarray, *, gt: bool = False, outline_only: bool = False) -> str:
    """A transparent PNG of a thumbnail mask (`mask_thumb`), to lay over the input image: a tinted fill and an
    opaque edge (`outline_only`: the edge alone)."""
    fill, edge = (GT_FILL, GT_EDGE) if gt else (MASK_FILL, MASK_EDGE)
    index = np.zeros(m.shape, np.uint8)
    if not outline_only:
        index[m] = 1
    index[_edge(m)] = 2
    im = Image.fromarray(index, "P")
    im.putpalette([0, 0, 0, *fill[:3], *edge[:3]])
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=bytes([0, 0 if outline_only else fill[3], edge[3]]))
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def layout_uri(layers: list[dict], size: tuple[int, int]) -> str:
    """The semantic layout S_I of the layers given (back to front), each in its vocabulary colour, black where
    nothing is painted (as training paints it), at thumbnail size."""
    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    for layer in layers:
        m = mask_thumb(layer["rle"], layer["height"], layer["width"], size)
        colour = [layer.get(c) for c in ("r", "g", "b")]
        canvas[m] = colour if all(v is not None for v in colour) else (128, 128, 128)
    return data_uri(Image.fromarray(canvas), "PNG")


def file_name(uri: str | None) -> str | None:
    """The last component of a path or URI, for captions (the page shows it as text)."""
    if not uri:
        return None
    return os.path.basename(urlparse(uri).path if "://" in uri else uri) or uri
