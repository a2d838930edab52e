"""InstructBLIP inside the rebuild flow (Ray Data path): kill mid-captioning, resume, per-image failures."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny_models import build_tiny_instructblip

from smartmask.config import SynthConfig
from smartmask.lake.paths import dataset_dir
from smartmask.synth import generate

N = 40


def _break_pixels(png: Path) -> None:
    """Corrupt the compressed pixel data but keep every chunk CRC valid: the container verifies, decoding fails."""
    data = bytearray(png.read_bytes())
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            body = bytearray(data[pos + 8 : pos + 8 + length])
            body[2:] = bytes(len(body) - 2)  # keep the zlib header, zero the stream
            data[pos + 8 : pos + 8 + length] = body
            data[pos + 8 + length : pos + 12 + length] = struct.pack(">I", zlib.crc32(bytes(kind) + body))
            break
        pos += 12 + length
    png.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("capres")
    world = tmp / "world"
    generate(world, N, seed=5, config=SynthConfig(width=320, height=240, min_things=4, max_things=8), workers=2)
    _break_pixels(world / "images" / "000000000007.png")
    return world, build_tiny_instructblip(tmp / "blip")


@pytest.fixture
def private_tmp():
    """A temp dir for the rebuilds this test starts (their TMPDIR), short enough for Ray's socket paths: a
    SIGKILLed run cannot remove its Ray session dir, so the test removes the whole dir instead."""
    d = tempfile.mkdtemp(prefix="sm-cr-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _run(world: Path, model: Path, lake: Path, tmp: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows", "rebuild", "--source", f"cocoa:{world / 'annotations.json'}",
         "--images", str(world / "images"), "--name", "synth", "--lake", str(lake), "--workers", "1",
         "--captioner", f"instructblip:{model}", "--caption-batch-size", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "TMPDIR": tmp})


def _cached(lake: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in lake.glob("caption_cache/*/part-*.parquet"))


@pytest.mark.slow
def test_kill_mid_captioning_then_resume_captions_only_the_rest(setup, tmp_path, private_tmp):
    world, model = setup
    lake = tmp_path / "lake"
    proc = _run(world, model, lake, private_tmp)
    deadline = time.time() + 900  # a hang guard: the verdict must not depend on the machine's speed
    while time.time() < deadline and not list(lake.glob("caption_cache/*/part-*.parquet")) and proc.poll() is None:
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cached = _cached(lake)
    assert 1 <= cached < N - 1, f"kill landed outside captioning ({cached} cached)"
    assert not list((lake / "datasets").glob("name=synth/version=*"))

    out, err = _run(world, model, lake, private_tmp).communicate(timeout=300)
    version = out.strip().splitlines()[-1]
    d = dataset_dir(lake, "synth", version)
    import json

    m = json.loads((d / "_manifest.json").read_text())
    # 39 images decode; one (image 7) passes the container check but its pixels do not.
    assert m["captions"] == {"images": N, "captioned": N - 1 - cached, "cached": cached, "failed": 1}, err[-2000:]
    assert _cached(lake) == N - 1
    assert m["counts"]["image"] == {"in": N, "accepted": N - 1, "rejected": 1}
    assert m["counts"]["region"]["in"] == m["counts"]["region"]["accepted"] + m["counts"]["region"]["rejected"]
    rejects = pq.read_table(d / "rejects").to_pylist()
    [bad] = [r for r in rejects if r["record_kind"] == "image"]
    assert (bad["image_id"], bad["reason"], bad["stage"]) == ("7", "image_unreadable", "caption")
    assert "7" not in set(pq.read_table(d / "images").column("image_id").to_pylist())
    assert "7" not in set(pq.read_table(d / "layers").column("image_id").to_pylist())
    caps = pq.read_table(d / "captions").to_pylist()
    assert len(caps) == N - 1
    assert all(c["captioner"].startswith(f"instructblip:{model}@") and c["prompt"] for c in caps)
    assert m["captioner"] == caps[0]["captioner"]
