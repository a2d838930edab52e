"""Turn one source image and its regions into masks, or into reject reasons. One rule set for every format.

Every check here raises `Reject(reason, detail)` with a stable reason code (listed in datasets/README.md);
the caller turns it into a reject row and moves on, so one bad record never stops a batch. What the checks
hold: labels, polygons and RLE (`to_rle`), file names (`resolve_image`, `safe_image_path`), the image file
against the upright, EXIF-oriented size (`check_image`), and the visible-inside-amodal band
(`visible_beyond_band`, `visible_from_invisible`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from smartmask import masks
from smartmask.inference.images import upright_size
from smartmask.masks import MaskError

# Polygons may touch the far edge (x == W) and anti-aliased tools overshoot by a fraction of a pixel;
# anything beyond this many pixels outside the image is an annotation error, not rounding.
_BOUNDS_TOL = 1.0
_WS = re.compile(r"\s+")
# File names: no C0 control characters or DEL (a NUL makes every path call raise ValueError; the rest are
# never meant), and within Linux's NAME_MAX per component and PATH_MAX overall, counted in UTF-8 bytes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME_MAX, _PATH_MAX = 255, 4095


class Reject(MaskError):
    """A record that cannot be accepted; `reason` is the reject code."""


def normalise_label(raw: Any) -> str:
    """COCOA names carry trailing spaces and mixed case ('phone ', 'Dougnut'): fold those, keep spelling."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise Reject("empty_label", "label is empty")
    if not isinstance(raw, str):
        raise Reject("invalid_label", f"label must be a string, got {type(raw).__name__}")
    return _WS.sub(" ", raw.strip().lower())


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _polygons(seg: list, h: int, w: int) -> dict:
    polys = [seg] if seg and _is_num(seg[0]) else seg
    if not polys:
        raise Reject("polygon_degenerate", "no polygon")
    for p in polys:
        try:
            xy = np.asarray(p, dtype=np.float64) if isinstance(p, list) else None
        except (TypeError, ValueError):
            xy = None
        if xy is None or xy.ndim != 1 or any(isinstance(v, (str, bool)) for v in p[:1]):
            raise Reject("malformed_segmentation", "polygon must be a list of numbers")
        if not np.isfinite(xy).all():
            raise Reject("non_finite_coordinates", "polygon has NaN or infinite coordinates")
        if xy.size < 6 or xy.size % 2:
            raise Reject("polygon_degenerate", f"polygon needs >= 3 (x, y) points, got {xy.size} numbers")
        xy = xy.reshape(-1, 2)
        if (xy.min(0) < -_BOUNDS_TOL).any() or xy[:, 0].max() > w + _BOUNDS_TOL or xy[:, 1].max() > h + _BOUNDS_TOL:
            raise Reject("polygon_out_of_bounds", f"polygon reaches outside the {w}x{h} image")
        x, y = xy[:, 0], xy[:, 1]
        if abs(float(x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0])) < 1e-6:
            raise Reject("polygon_degenerate", "polygon has zero area")
    return masks.from_polygons(polys, h, w)


def _compressed_runs(counts: str) -> np.ndarray:
    """Decode COCO's compressed counts (LEB128-like, 5 bits a char, runs delta-coded two back) with numpy."""
    c = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0 or c.min() < 0 or c.max() > 63 or c[-1] & 0x20:
        raise Reject("rle_invalid", "compressed counts contain invalid characters or a truncated run")
    last = (c & 0x20) == 0
    group = np.concatenate([[0], np.cumsum(last)[:-1]])
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    k = np.arange(c.size) - starts[group]
    vals = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    ends = np.flatnonzero(last)
    neg = (c[ends] & 0x10) != 0
    vals[neg] -= np.int64(1) << (5 * (k[ends][neg] + 1))
    # Run i > 2 is stored as a delta to run i - 2: two interleaved prefix sums, from runs 1 and 2.
    out = vals.copy()
    if vals.size > 3:
        out[1::2] = np.cumsum(vals[1::2])
    if vals.size > 4:
        out[2::2] = np.cumsum(vals[2::2])
    return out


def _rle(seg: dict, h: int, w: int) -> dict:
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise Reject("malformed_segmentation", "RLE needs 'size': [height, width]")
    if size != [h, w]:
        raise Reject("rle_size_mismatch", f"RLE size {size} differs from image size [{h}, {w}]")
    if isinstance(counts, list):
        if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != h * w:
            raise Reject("rle_invalid", f"uncompressed runs must be non-negative and sum to {h * w}")
        return masks.from_uncompressed(counts, h, w)
    if not isinstance(counts, str):
        raise Reject("malformed_segmentation", "RLE 'counts' must be a string or a list of runs")
    runs = _compressed_runs(counts)
    if (runs < 0).any() or int(runs.sum()) != h * w:
        raise Reject("rle_invalid", f"compressed runs must be non-negative and sum to {h * w}")
    return {"size": [h, w], "counts": counts}


def to_rle(seg: Any, h: int, w: int) -> dict:
    """Polygon(s), compressed RLE or uncompressed RLE → compressed RLE, validated against (h, w)."""
    if seg is None:
        raise Reject("missing_segmentation", "no segmentation")
    if isinstance(seg, list):
        return _polygons(seg, h, w)
    if isinstance(seg, dict):
        return _rle(seg, h, w)
    raise Reject("malformed_segmentation", f"segmentation must be polygons or RLE, got {type(seg).__name__}")


def _file_name_problem(file_name: Any) -> tuple[str, str] | None:
    if file_name is None:
        return "missing_file_name", "image record has no file_name"
    if not isinstance(file_name, str):
        return "invalid_file_name", f"file_name must be a string, got {type(file_name).__name__}"
    if not file_name.strip():
        return "invalid_file_name", "file_name is empty"
    if _CONTROL.search(file_name):
        return "invalid_file_name", f"file_name contains a NUL or control character: {file_name[:200]!r}"
    try:
        raw = file_name.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid_file_name", "file_name is not valid Unicode"
    if len(raw) > _PATH_MAX or max(len(part) for part in raw.split(b"/")) > _NAME_MAX:
        return "invalid_file_name", f"file_name is too long for the file system ({len(raw)} bytes)"
    return None


def _resolve(images_root: Path, file_name: str) -> Path | None:
    try:
        return (images_root / file_name).resolve()
    except (OSError, ValueError, RuntimeError):  # ENAMETOOLONG on a smaller NAME_MAX, a symlink loop
        return None


def safe_image_path(images_root: Path, file_name: Any) -> Path | None:
    """The resolved image path, or None when the file name is invalid or resolves outside the (resolved) root.

    Never raises: for hashing inputs in `plan_rebuild`, where the reason does not matter yet."""
    if _file_name_problem(file_name) is not None:
        return None
    p = _resolve(images_root, file_name)
    return p if p is not None and p.is_relative_to(images_root) else None


def resolve_image(images_root: Path, file_name: Any) -> Path:
    """Confine an annotation's file name to the images root (no absolute paths, no `..` escapes)."""
    problem = _file_name_problem(file_name)
    if problem is not None:
        raise Reject(*problem)
    p = _resolve(images_root, file_name)
    if p is None:
        raise Reject("invalid_file_name", f"{file_name[:200]!r} cannot be resolved to a path")
    if not p.is_relative_to(images_root):
        raise Reject("path_outside_root", f"{file_name[:200]!r} resolves outside the images directory")
    return p


def check_image(path: Path, width: Any, height: Any, max_pixels: int) -> tuple[int, int]:
    """Open the header and verify the container (PNG CRCs, truncation) without decoding every pixel.

    Returns the upright (EXIF-oriented) width and height, the size inference decodes
    (`smartmask.inference.images.upright_size`: one rule for both), and compares the annotation's width/height
    with that. The orientation comes from metadata read with the header; no pixel is decoded.
    """
    try:
        exists = path.is_file()
    except (OSError, ValueError) as e:  # e.g. ENAMETOOLONG on a file system with a smaller NAME_MAX
        raise Reject("invalid_file_name", f"{e.__class__.__name__}: {e}"[:300]) from None
    if not exists:
        raise Reject("image_missing", f"{path.name} not found")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise Reject("image_too_large", f"{w}x{h} exceeds the {max_pixels}-pixel decompression guard")
            uw, uh = upright_size(im)
            im.verify()
    except Reject:
        raise
    except Exception as e:  # PIL raises many types for corrupt files; all mean "unreadable"
        raise Reject("image_unreadable", f"{e.__class__.__name__}: {e}"[:300]) from None
    rotated = " upright (EXIF orientation applied)" if (uw, uh) != (w, h) else ""
    w, h = uw, uh
    for name, given, actual in (("width", width, w), ("height", height, h)):
        if given is not None and given != actual:
            raise Reject("image_size_mismatch", f"annotation {name} {given!r} but the file is {w}x{h}{rotated}")
    return w, h


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1) x (2r+1) square, done separably: rows, then columns."""
    rows = m.copy()
    for k in range(1, r + 1):
        rows[k:] |= m[:-k]
        rows[:-k] |= m[k:]
    out = rows.copy()
    for k in range(1, r + 1):
        out[:, k:] |= rows[:, :-k]
        out[:, :-k] |= rows[:, k:]
    return out


def visible_beyond_band(amodal: dict, visible: dict, band: int) -> int:
    """Visible pixels farther than `band` pixels from the amodal mask.

    Distance is Chebyshev (a square structuring element): a diagonal neighbour is 1 pixel away, as for a
    polygon rasterised one pixel off in x and y. Decodes both masks; call it only for regions that have
    visible pixels outside the amodal mask. The dilation runs on the window around those pixels alone.
    """
    a = masks.decode(amodal).astype(bool)
    out = masks.decode(visible).astype(bool) & ~a
    if not out.any():
        return 0
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    r0, c0 = max(int(rows[0]) - band, 0), max(int(cols[0]) - band, 0)
    r1, c1 = int(rows[-1]) + band + 1, int(cols[-1]) + band + 1
    near = _dilate(a[r0:r1, c0:c1], band)
    return int(np.count_nonzero(out[r0:r1, c0:c1] & ~near))


def visible_from_invisible(amodal: dict, invisible: dict) -> dict | None:
    """Visible = amodal minus invisible, for sources that give only the occluded part; None when nothing is
    occluded (visible = amodal)."""
    if masks.area([invisible])[0] == 0:
        return None
    return masks.encode(masks.decode(amodal).astype(bool) & ~masks.decode(invisible).astype(bool))
