"""InstructBLIP captioner on a tiny random-init model, loaded through the production loader; Ray Data path too."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import pickle  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from tiny_models import build_tiny_instructblip  # noqa: E402

from smartmask.captioning.instructblip import (  # noqa: E402
    CAPTION_FAILED,
    IMAGE_TOO_LARGE,
    IMAGE_UNREADABLE,
    InstructBlipCaptioner,
    captioner_id,
)
from smartmask.pretrained import ModelNotFound, UnsafeWeights, load_pretrained, model_revision  # noqa: E402

PROMPT = "describe the image"
MAX_NEW = 8


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_instructblip(tmp_path_factory.mktemp("tiny-instructblip"))


@pytest.fixture(scope="module")
def captioner(tiny_dir) -> InstructBlipCaptioner:
    return InstructBlipCaptioner(str(tiny_dir), prompt=PROMPT, max_new_tokens=MAX_NEW)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """Six synthetic PNGs of different sizes and content: image_id -> absolute path."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out = {}
    for k in range(6):
        h, w = 24 + 9 * k, 40 + 5 * k
        if k % 2:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        else:
            arr = np.zeros((h, w, 3), np.uint8)
            arr[..., k % 3] = 40 * k + 30
            arr[h // 3 :, : w // 2] = 255 - 30 * k
        path = root / f"img{k}.png"
        Image.fromarray(arr).save(path)
        out[f"img{k}"] = str(path.resolve())
    return out


def _batch(items: dict[str, str]) -> dict[str, np.ndarray]:
    return {"image_id": np.array(list(items)), "uri": np.array(list(items.values()))}


def _as_dict(out: dict[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    return {str(i): (str(c), str(r)) for i, c, r in zip(out["image_id"], out["caption"], out["error_reason"], strict=True)}


def test_tiny_processor_tokenizes_and_inserts_image_tokens(tiny_dir):
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    proc = load_pretrained(InstructBlipProcessor, tiny_dir)
    model = load_pretrained(InstructBlipForConditionalGeneration, tiny_dir)
    tok = proc.tokenizer
    ids = tok("describe the image").input_ids
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids and len(ids) == 4  # BOS + 3 words
    assert proc.qformer_tokenizer("describe the image").input_ids[1:-1] != []
    image_id = model.config.image_token_index
    assert tok.convert_tokens_to_ids("<image>") == image_id
    inputs = proc(images=[Image.new("RGB", (20, 30))] * 2, text=[PROMPT] * 2, return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    assert inputs["input_ids"][:, :4].eq(image_id).all() and inputs["input_ids"].eq(image_id).sum() == 8


def test_captions_six_images_deterministic(tiny_dir, captioner, images):
    out = captioner(_batch(images))
    assert set(out) == {"image_id", "caption", "error_reason", "error_detail"}
    assert all(len(v) == 6 for v in out.values())
    assert list(out["image_id"]) == list(images)
    assert list(out["error_reason"]) == [""] * 6 and list(out["error_detail"]) == [""] * 6
    assert all(isinstance(c, str) and c == c.strip() and "\n" not in c for c in out["caption"])
    assert any(out["caption"])
    assert not any(c.startswith(PROMPT) for c in out["caption"])  # the prompt echo is stripped
    # deterministic: same instance twice, and a second load of the same weights
    assert list(captioner(_batch(images))["caption"]) == list(out["caption"])
    again = InstructBlipCaptioner(str(tiny_dir), prompt=PROMPT, max_new_tokens=MAX_NEW)
    assert list(again(_batch(images))["caption"]) == list(out["caption"])


def test_corrupt_and_missing_images_become_error_rows(captioner, images, tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    items = dict(images)
    ids = list(items)
    mixed = {ids[0]: items[ids[0]], "corrupt": str(bad), **{i: items[i] for i in ids[1:]},
             "missing": str(tmp_path / "nope.jpg")}
    out = captioner(_batch(mixed))
    got = _as_dict(out)
    assert list(out["image_id"]) == list(mixed)  # one row per input, in order
    assert got["corrupt"] == ("", IMAGE_UNREADABLE) and got["missing"] == ("", IMAGE_UNREADABLE)
    details = dict(zip(out["image_id"], out["error_detail"], strict=True))
    assert details["corrupt"] and "\n" not in details["corrupt"]
    clean = _as_dict(captioner(_batch(images)))
    assert {k: got[k] for k in images} == clean  # the good images are captioned exactly as without the bad ones


def test_decompression_bomb_guard(captioner, images, monkeypatch):
    big = next(iter(images))
    w, h = Image.open(images[big]).size
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", w * h - 1)  # over the limit: checked before decoding
    out = _as_dict(captioner(_batch(images)))
    assert out[big] == ("", IMAGE_TOO_LARGE)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # > 2x the limit: Pillow's own DecompressionBombError
    out = _as_dict(captioner(_batch(images)))
    assert all(v == ("", IMAGE_TOO_LARGE) for v in out.values())


def test_failed_batch_is_retried_image_by_image(captioner, images, monkeypatch):
    clean = _as_dict(captioner(_batch(images)))
    culprit = "img3"
    culprit_size = Image.open(images[culprit]).size
    real = captioner.generate
    calls = []

    def flaky(imgs):
        calls.append(len(imgs))
        if any(im.size == culprit_size for im in imgs):
            raise RuntimeError("CUDA error: device-side assert\nsecond line of the traceback")
        return real(imgs)

    monkeypatch.setattr(captioner, "generate", flaky)
    out = captioner(_batch(images))
    got = _as_dict(out)
    assert calls == [6, 1, 1, 1, 1, 1, 1]
    assert got[culprit] == ("", CAPTION_FAILED)
    detail = dict(zip(out["image_id"], out["error_detail"], strict=True))[culprit]
    assert detail.startswith("RuntimeError: CUDA error") and "\n" not in detail
    assert {k: v for k, v in got.items() if k != culprit} == {k: v for k, v in clean.items() if k != culprit}


@pytest.mark.slow
def test_ray_data_matches_direct_call(tiny_dir, captioner, images):
    import ray

    from flows.ray_runtime import ray_session

    direct = _as_dict(captioner(_batch(images)))
    was_running = ray.is_initialized()
    with ray_session(num_cpus=2):
        with ray_session():  # nested: reuses the running Ray, does not shut it down
            pass
        assert ray.is_initialized()
        ds = ray.data.from_items([{"image_id": k, "uri": v} for k, v in images.items()]).map_batches(
            InstructBlipCaptioner,
            fn_constructor_kwargs={"model": str(tiny_dir), "prompt": PROMPT, "max_new_tokens": MAX_NEW},
            batch_size=4,
            concurrency=1,
        )
        rows = ds.take_all()
    assert ray.is_initialized() == was_running
    got = {r["image_id"]: (r["caption"], r["error_reason"]) for r in rows}
    assert got == direct


def test_load_pretrained_uncached_hub_id_is_one_line(tmp_path):
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    for cls in (InstructBlipProcessor, InstructBlipForConditionalGeneration):
        with pytest.raises(ModelNotFound) as err:
            load_pretrained(cls, "nobody-here/no-such-model", cache_dir=tmp_path)
        msg = str(err.value)
        assert "\n" not in msg and "'nobody-here/no-such-model'" in msg
        assert "not in the Hugging Face cache" in msg and "HF_HUB_OFFLINE=1" in msg
    with pytest.raises(ModelNotFound):
        model_revision("nobody-here/no-such-model", cache_dir=tmp_path)
    with pytest.raises(ModelNotFound) as err:
        load_pretrained(InstructBlipProcessor, tmp_path / "does" / "not" / "exist")
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_pickle_only_weights_are_refused_unopened(tiny_dir, tmp_path):
    from transformers import InstructBlipForConditionalGeneration

    marker = tmp_path / "unpickled.txt"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    shutil.copy(tiny_dir / "config.json", model_dir / "config.json")
    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UnsafeWeights) as err:
        load_pretrained(InstructBlipForConditionalGeneration, model_dir)
    assert "pytorch_model.bin" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ModelNotFound)
    # even a caller asking for pickles gets safetensors only: no weights there -> refused, nothing unpickled
    with pytest.raises(ModelNotFound):
        load_pretrained(InstructBlipForConditionalGeneration, model_dir, use_safetensors=False)
    assert not marker.exists()


def test_hub_id_from_cache(tiny_dir, tmp_path):
    """A hub id resolves from the HF cache offline; its revision is the snapshot's commit hash."""
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-instructblip"
    shutil.copytree(tiny_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    cache = tmp_path / "hub"
    proc = load_pretrained(InstructBlipProcessor, "tiny-org/tiny-instructblip", cache_dir=cache)
    model = load_pretrained(InstructBlipForConditionalGeneration, "tiny-org/tiny-instructblip", cache_dir=cache)
    assert proc.num_query_tokens == 4 and model.config.num_query_tokens == 4
    # the Q-Former tokenizer comes from qformer_tokenizer/, not silently from the LM tokenizer at the root
    assert proc.qformer_tokenizer.cls_token == "[CLS]" and proc.tokenizer.cls_token is None
    assert model_revision("tiny-org/tiny-instructblip", cache_dir=cache) == commit


def test_model_revision_tracks_weights_and_config(tiny_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    r0 = model_revision(d)
    assert r0 == model_revision(str(d)) and len(r0) == 16
    assert model_revision(tiny_dir) == r0  # content, not location
    os.utime(d / "model.safetensors", (0, 0))
    (d / "README.md").write_text("a model card edit does not change the weights")
    assert model_revision(d) == r0
    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(weights + b"\0" * 8)
    r_size = model_revision(d)
    assert r_size != r0
    flipped = bytearray(weights)
    flipped[-1] ^= 0xFF  # same size, different weights
    (d / "model.safetensors").write_bytes(bytes(flipped))
    assert model_revision(d) not in {r0, r_size}
    (d / "model.safetensors").write_bytes(weights)
    assert model_revision(d) == r0
    cfg = (d / "config.json").read_text()
    (d / "config.json").write_text(cfg.replace('"num_query_tokens": 4', '"num_query_tokens": 5'))
    assert model_revision(d) != r0
    (d / "config.json").write_text(cfg)
    assert model_revision(d) == r0
    assert captioner_id(str(d)) == f"instructblip:{d}@{r0}"
