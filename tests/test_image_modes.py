"""Every Pillow mode decodes to the right 8-bit RGB (16-bit scaled, not clipped to white; 32-bit int and float by
their documented conventions), upright, through one decoder shared by inference and the captioner; an alpha channel
survives `insert` (the input's outside the mask, opaque on it) and inserted.png stays RGBA."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from smartmask.inference.images import DecodedImage, decode_pixels, load_image
from smartmask.inference.pipeline import SmartMaskPipeline

SIXTEEN = np.array([[0, 255, 256, 1000], [32768, 32767, 65280, 65535]], np.uint16)
SIXTEEN_8 = SIXTEEN >> 8  # the convention: the high byte, as Pillow decodes 16-bit colour files
EXIF_ROTATE_CW = 6  # "rotate 90° clockwise to display"


def _save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def _img(a, mode: str) -> Image.Image:
    """An image of `mode` from raw uint8 samples (H, W[, bands])."""
    a = np.ascontiguousarray(a, np.uint8)
    return Image.frombytes(mode, (a.shape[1], a.shape[0]), a.tobytes())


def _grey(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(a, np.uint8)[..., None], 3, axis=2)


def _palette_image() -> Image.Image:
    im = Image.frombytes("P", (4, 1), bytes([0, 1, 2, 1]))
    im.putpalette([10, 20, 30, 40, 50, 60, 250, 128, 3])
    return im


def _jfif_rgb(y: float, cb: float, cr: float) -> list[float]:
    return [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)]


# (name, build(tmp) -> path, expected RGB, expected alpha or None, tolerance)
def _cases():
    rgb = np.array([[[1, 2, 3], [250, 128, 0]], [[0, 255, 7], [99, 98, 97]]], np.uint8)
    alpha = np.array([[0, 1], [128, 255]], np.uint8)
    cmyk = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0), (0, 0, 0, 128)]
    cmyk_rgb = [[0, 255, 255], [255, 0, 255], [255, 255, 0], [0, 0, 0], [255, 255, 255], [127, 127, 127]]
    ycc = [(128, 128, 128), (200, 100, 150), (60, 180, 90), (235, 128, 128)]
    ints = np.array([[-100, -50], [0, 155]], np.int32)  # outside 0..65535: min–max over 255 units
    floats01 = np.array([[0.0, 0.25], [1.0, 0.2]], np.float32)
    floats = np.array([[-1.0, 0.0], [2.0, 4.0]], np.float32)  # outside [0, 1]: min–max over 5 units
    return [
        ("1", lambda t: _save(Image.frombytes("1", (8, 1), bytes([0b10100001])), t / "a.png"),
         _grey([[255, 0, 255, 0, 0, 0, 0, 255]]), None, 0),
        ("L", lambda t: _save(Image.fromarray(np.array([[0, 7], [128, 255]], np.uint8)), t / "a.png"),
         _grey([[0, 7], [128, 255]]), None, 0),
        ("LA", lambda t: _save(_img(np.dstack(([[0, 7], [128, 255]], alpha)), "LA"),
                               t / "a.png"), _grey([[0, 7], [128, 255]]), alpha, 0),
        ("P", lambda t: _save(_palette_image(), t / "a.png"),
         np.array([[[10, 20, 30], [40, 50, 60], [250, 128, 3], [40, 50, 60]]]), None, 0),
        ("P+transparency", lambda t: _save(_palette_image(), t / "a.png", transparency=bytes([255, 0, 77])),
         np.array([[[10, 20, 30], [40, 50, 60], [250, 128, 3], [40, 50, 60]]]), np.array([[255, 0, 77, 0]]), 0),
        ("PA", lambda t: _save(_pa_image(), t / "a.tiff"),
         np.array([[[10, 20, 30], [40, 50, 60], [250, 128, 3], [40, 50, 60]]]), np.array([[255, 128, 0, 9]]), 0),
        ("RGB", lambda t: _save(Image.fromarray(rgb), t / "a.png"), rgb, None, 0),
        ("RGBA", lambda t: _save(Image.fromarray(np.dstack((rgb, alpha))), t / "a.png"), rgb, alpha, 0),
        ("CMYK-tiff", lambda t: _save(Image.frombytes("CMYK", (6, 1), bytes(np.ravel(cmyk).tolist())), t / "a.tiff"),
         np.array([cmyk_rgb]), None, 0),
        ("CMYK-jpeg", lambda t: _save(_blocks("CMYK", cmyk), t / "a.jpg", quality=100),
         _blocks_expected(cmyk_rgb), None, 1),
        ("YCbCr-tiff", lambda t: _save(Image.frombytes("YCbCr", (4, 1), bytes(np.ravel(ycc).tolist())), t / "a.tiff"),
         np.clip(np.rint([[_jfif_rgb(*p) for p in ycc]]), 0, 255), None, 1),
        ("I;16-png", lambda t: _save(Image.fromarray(SIXTEEN), t / "a.png"), _grey(SIXTEEN_8), None, 0),
        ("I;16-tiff", lambda t: _save(Image.fromarray(SIXTEEN), t / "a.tiff"), _grey(SIXTEEN_8), None, 0),
        ("I;16B-tiff", lambda t: _save(Image.frombytes("I;16B", (4, 2), SIXTEEN.astype(">u2").tobytes()),
                                       t / "a.tiff"), _grey(SIXTEEN_8), None, 0),
        ("I;16L-tiff", lambda t: _save(Image.frombytes("I;16L", (4, 2), SIXTEEN.astype("<u2").tobytes()),
                                       t / "a.tiff"), _grey(SIXTEEN_8), None, 0),
        ("I;16+transparency", lambda t: _save(Image.fromarray(SIXTEEN), t / "a.png", transparency=1000),
         _grey(SIXTEEN_8), np.where(SIXTEEN == 1000, 0, 255), 0),
        ("I-16bit-range", lambda t: _save(Image.fromarray(SIXTEEN.astype(np.int32)), t / "a.tiff"),
         _grey(SIXTEEN_8), None, 0),
        ("I-other-range", lambda t: _save(Image.fromarray(ints), t / "a.tiff"), _grey([[0, 50], [100, 255]]), None, 0),
        ("F-unit", lambda t: _save(Image.fromarray(floats01), t / "a.tiff"), _grey([[0, 64], [255, 51]]), None, 0),
        ("F-other-range", lambda t: _save(Image.fromarray(floats), t / "a.tiff"), _grey([[0, 51], [153, 255]]),
         None, 0),
    ]  # fmt: skip


def _pa_image() -> Image.Image:
    im = Image.frombytes("PA", (4, 1), bytes([0, 255, 1, 128, 2, 0, 1, 9]))
    im.putpalette([10, 20, 30, 40, 50, 60, 250, 128, 3])
    return im


def _blocks(mode: str, colours) -> Image.Image:
    """16x16 solid blocks side by side: JPEG's 8x8 DCT (and chroma subsampling) keeps a flat block's value."""
    row = np.concatenate([np.broadcast_to(np.asarray(c, np.uint8), (16, 16, len(c))) for c in colours], axis=1)
    return _img(row, mode)


def _blocks_expected(rgbs) -> np.ndarray:
    return np.concatenate([np.broadcast_to(np.asarray(c), (16, 16, 3)) for c in rgbs], axis=1)


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_mode_decodes_to_the_expected_8bit_rgb(tmp_path, case):
    _, build, rgb, alpha, tol = case
    got = load_image(build(tmp_path))
    assert isinstance(got, DecodedImage) and got.dtype == np.uint8 and got.shape == np.shape(rgb)
    diff = np.abs(got.astype(int) - np.asarray(rgb, int))
    assert diff.max() <= tol, (np.asarray(got).tolist(), np.asarray(rgb).tolist())
    if alpha is None:
        assert getattr(got, "alpha", None) is None
    else:
        assert got.alpha is not None and got.alpha.dtype == np.uint8
        assert np.array_equal(got.alpha, alpha), (got.alpha.tolist(), np.asarray(alpha).tolist())


def test_a_16bit_gradient_keeps_its_gradient(tmp_path):
    ramp = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16)  # b -> 257 b, the usual 8 -> 16 bit expansion
    img = np.tile(ramp, (24, 1))
    got = load_image(_save(Image.fromarray(img), tmp_path / "ramp.png"))
    assert (got == 255).mean() < 0.01  # not the all-white picture Pillow's convert("RGB") makes
    assert np.array_equal(got[0, :, 0], np.arange(256))  # the expansion inverted exactly
    assert np.array_equal(got[..., 0], got[..., 2])


def _png_16bit_rgb(path: Path, rgb16: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), written chunk by chunk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    H, W = rgb16.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)  # filter type 0 per row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_16bit_grey_decodes_like_the_same_picture_in_16bit_colour(tmp_path):
    """Why v >> 8 and not round(v / 257): Pillow decodes 16-bit colour PNGs by their high byte."""
    grey = np.array([[0x12FF, 0x3480, 0xFF01, 0x0080]], np.uint16)  # round(v / 257) would give 19, 52, 254, 0
    colour = load_image(_png_16bit_rgb(tmp_path / "rgb16.png", np.repeat(grey[..., None], 3, axis=2)))
    assert colour[0, :, 0].tolist() == [0x12, 0x34, 0xFF, 0x00]
    assert np.array_equal(load_image(_save(Image.fromarray(grey), tmp_path / "grey16.png")), colour)


def test_nan_and_infinities_in_a_float_image(tmp_path):
    a = np.array([[np.nan, 0.0, 0.5, np.inf, -np.inf, 1.0]], np.float32)  # finite part in [0, 1]
    got = load_image(_save(Image.fromarray(a), tmp_path / "f.tiff"))
    assert got[0, :, 0].tolist() == [0, 0, 128, 255, 0, 255]
    flat = np.full((2, 3), 7.5, np.float32)  # a constant image outside [0, 1]: min–max has no range
    assert not load_image(_save(Image.fromarray(flat), tmp_path / "c.tiff")).any()


@pytest.mark.parametrize(("mode", "ext"), [("RGB", "png"), ("RGB", "jpg"), ("L", "png"), ("I;16", "png"),
                                           ("F", "tiff"), ("CMYK", "tiff"), ("RGBA", "png")])
def test_exif_orientation_6_is_applied_before_the_mode_conversion(tmp_path, mode, ext):
    stored = np.zeros((16, 24), np.uint8)  # 24 wide, 16 high as stored; a bright block at the top-left
    stored[:8, :8] = 200
    if mode == "I;16":
        im = Image.fromarray(stored.astype(np.uint16) * 257)
    elif mode == "F":
        im = Image.fromarray(stored.astype(np.float32) / 255)
    elif mode == "CMYK":
        im = _img(np.dstack([np.zeros_like(stored)] * 3 + [255 - stored]), "CMYK")
    else:
        im = Image.fromarray(stored).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = EXIF_ROTATE_CW
    got = load_image(_save(im, tmp_path / f"o.{ext}", exif=exif))
    upright = np.rot90(stored, k=-1)  # clockwise: 16 wide, 24 high, the block now at the top-right
    assert got.shape == (24, 16, 3)
    assert np.abs(got[..., 1].astype(int) - upright).max() <= (2 if ext == "jpg" else 0)
    if mode == "RGBA":
        assert got.alpha is not None and got.alpha.shape == (24, 16)


def test_the_captioner_decodes_with_the_same_function(tmp_path):
    from smartmask.captioning.instructblip import decode_image

    exif = Image.Exif()
    exif[0x0112] = EXIF_ROTATE_CW
    path = _save(Image.fromarray(np.tile(SIXTEEN, (3, 2))), tmp_path / "scan.png", exif=exif)
    cap = decode_image(str(path))
    assert cap.mode == "RGB"
    assert np.array_equal(np.asarray(cap)[..., 0], np.rot90(np.tile(SIXTEEN_8, (3, 2)), k=-1))  # upright, not white
    assert np.array_equal(np.asarray(cap), load_image(path))
    im = Image.open(path)
    assert np.array_equal(np.asarray(cap), decode_pixels(im)[0])


def test_only_the_loaded_array_carries_the_alpha(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = np.arange(20, dtype=np.uint8).reshape(4, 5)
    got = load_image(_save(Image.fromarray(rgba), tmp_path / "t.png"))
    assert got.alpha is not None and got.source_mode == "RGBA"
    for derived in (got[::-1], got.copy(), got + 0, got[1:3]):  # a flip or crop must not pair with this alpha
        assert getattr(derived, "alpha", None) is None
    assert type(got[::-1]) is np.ndarray and type(got != 0) is np.ndarray  # computations are plain arrays
    assert isinstance(got.sum(), np.integer) and isinstance(got.max(), np.uint8)  # and reductions plain scalars
    assert np.array_equal(pickle.loads(pickle.dumps(got)), got)
    assert type(np.asarray(got)) is np.ndarray


# ---- alpha through insert ----------------------------------------------------------------------------------------


def _transparent_photo(path: Path, mode: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 96x128 picture with a real alpha (transparent, opaque and in-between regions) and arbitrary colour stored
    under the transparent pixels; returns the path and the decoded (RGB, alpha) it must come back as."""
    H, W = 96, 128
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    alpha = np.clip(xx * 3 - 60, 0, 255).astype(np.uint8)  # 0 on the left third, a ramp, then opaque
    alpha[yy < 10] = 0
    if mode == "RGBA":
        im = Image.fromarray(np.dstack((rgb, alpha)))
    elif mode == "LA":
        im = _img(np.dstack((rgb[..., 0], alpha)), "LA")
        rgb = np.repeat(rgb[..., :1], 3, axis=2)
    else:  # P with a transparent palette: 64 colours, entry k has alpha 4k
        palette = rng.integers(0, 256, (64, 3), dtype=np.uint8)
        idx = (rgb[..., 0] // 4).astype(np.uint8)
        im = _img(idx, "P")
        im.putpalette(palette.ravel().tolist())
        rgb, alpha = palette[idx], (idx * 4).astype(np.uint8)
        im.save(path, transparency=bytes((np.arange(64) * 4).tolist()))
        return path, rgb, alpha
    im.save(path)
    return path, rgb, alpha


def _mask(H: int = 96, W: int = 128) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[30:70, 20:60] = True  # crosses the transparent left third and the alpha ramp
    return m


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_insert_keeps_the_alpha_outside_the_mask_and_writes_rgba(tmp_path, mode):
    path, rgb, alpha = _transparent_photo(tmp_path / "in.png", mode)
    pixels = load_image(path)
    assert np.array_equal(pixels, rgb) and np.array_equal(pixels.alpha, alpha)
    mask = _mask()
    pipe = SmartMaskPipeline.from_lake(tmp_path / "lake", with_model=False, inpainter="synthetic")
    done = pipe.insert("person", "a park", image=pixels, mask=mask, mask_source="test")
    rec = done.write(tmp_path / "out")
    assert rec["alpha"] is True
    written = Image.open(tmp_path / "out" / "inserted.png")
    assert written.mode == "RGBA"
    out = np.asarray(written)
    dilated = done.dilated
    assert dilated[mask].all() and (dilated & ~mask).any()
    assert np.array_equal(out[..., 3][~dilated], alpha[~dilated])  # bit for bit
    assert np.array_equal(out[..., :3][~dilated], rgb[~dilated])  # the background guarantee, as before
    assert (out[..., 3][mask] == 255).all()  # the inserted object is opaque, also where the input was transparent
    band = dilated & ~mask
    assert np.array_equal(out[..., 3][band], alpha[band])  # no fringe of the colour stored under alpha 0
    assert np.any(out[..., :3][mask] != rgb[mask])


def test_an_rgb_input_still_writes_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    pixels = load_image(_save(Image.fromarray(rgb), tmp_path / "in.png"))
    assert pixels.alpha is None
    pipe = SmartMaskPipeline.from_lake(tmp_path / "lake", with_model=False, inpainter="synthetic")
    done = pipe.insert("person", "a park", image=pixels, mask=_mask())
    assert done.write(tmp_path / "out")["alpha"] is False
    out = Image.open(tmp_path / "out" / "inserted.png")
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), done.image)


def test_cli_insert_keeps_alpha_and_decodes_16bit(tmp_path):
    """`smartmask insert IMAGE --mask` needs nothing new: the alpha rides on what load_image returned."""
    from flows.cli import app

    runner = CliRunner()
    path, rgb, alpha = _transparent_photo(tmp_path / "in.png", "RGBA")
    Image.fromarray(_mask()).save(tmp_path / "mask.png")
    common = ["--object", "person", "--context", "a park", "--mask", str(tmp_path / "mask.png"), "--inpainter",
              "synthetic", "--lake", str(tmp_path / "lake")]
    r = runner.invoke(app, ["insert", str(path), *common, "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, (r.output, r.exception)
    out = np.asarray(Image.open(tmp_path / "o" / "inserted.png"))
    dilated = np.asarray(Image.open(tmp_path / "o" / "dilated-mask.png")) > 0
    assert out.shape == (96, 128, 4) and np.array_equal(out[..., 3][~dilated], alpha[~dilated])
    assert json.loads((tmp_path / "o" / "insert.json").read_text())["alpha"] is True

    ramp = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (96, 1))  # a 16-bit greyscale scan
    Image.fromarray(ramp).save(tmp_path / "scan.png")
    r = runner.invoke(app, ["insert", str(tmp_path / "scan.png"), *common, "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, (r.output, r.exception)
    out = np.asarray(Image.open(tmp_path / "s" / "inserted.png"))
    dilated = np.asarray(Image.open(tmp_path / "s" / "dilated-mask.png")) > 0
    assert out.shape == (96, 128, 3) and (out == 255).all(axis=2).mean() < 0.05  # was ~93% white
    assert np.array_equal(out[~dilated], _grey(ramp >> 8)[~dilated])


def test_rebuild_and_inference_agree_on_a_rotated_tiff(tmp_path):
    """Pillow's TIFF plugin reports the upright size at open and rotates while loading: neither stage rotates twice."""
    from smartmask.validate import check_image

    exif = Image.Exif()
    exif[0x0112] = EXIF_ROTATE_CW
    path = _save(Image.fromarray(np.zeros((16, 24), np.uint8)), tmp_path / "r.tiff", exif=exif)
    w, h = check_image(path, 16, 24, 10**8)  # the annotation is made on the upright image
    assert (w, h) == (16, 24) and load_image(path).shape[:2] == (24, 16)


def test_rebuild_and_inference_agree_on_a_png_whose_exif_follows_the_pixels(tmp_path):
    """An eXIf chunk after IDAT: Pillow's exif_transpose would see it (it decodes the pixels), the rebuild's
    header-only size check would not; both stages read the orientation the same way, so they agree."""
    import io
    import struct
    import zlib

    from smartmask.validate import check_image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6
    body = exif.tobytes()
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    iend = data.rfind(b"IEND") - 4
    path = tmp_path / "late-exif.png"
    path.write_bytes(data[:iend] + chunk + data[iend:])
    w, h = check_image(path, None, None, 10**8)
    assert load_image(path).shape[:2] == (h, w)


def test_a_scribble_on_a_transparent_layer_counts_only_its_painted_pixels(tmp_path):
    from smartmask.inference.images import load_mask

    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., :3] = 255  # white stored everywhere, as many editors do under transparent pixels
    rgba[2:4, 3:7, 3] = 255  # only this stroke is painted (opaque)
    path = tmp_path / "scribble.png"
    Image.fromarray(rgba, "RGBA").save(path)
    mask = load_mask(path, (8, 10))
    assert mask.sum() == 8 and mask[2:4, 3:7].all()
    grey = tmp_path / "grey.png"  # no alpha: brightness alone, as before
    Image.fromarray((rgba[..., 3]).copy(), "L").save(grey)
    assert (load_mask(grey, (8, 10)) == mask).all()
