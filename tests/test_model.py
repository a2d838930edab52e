"""SmartMask network (smartmask.model): config, the sd15 path on a tiny SD-layout directory, overfitting, save/load,
sampling with two-scale classifier-free guidance. CPU only, tiny models, seeded."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys

import pytest
import torch
from tiny_models import TINY_SD15_RESOLUTION, build_tiny_sd15

from smartmask import presets
from smartmask.model import ModelConfig, SmartMask, network, sample_masks
from smartmask.model.network import (
    TINY_BOS_ID,
    TINY_EOS_ID,
    draw_timesteps,
    tiny_clip_tokenizer,
    tiny_tokenizer_fingerprint,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: all overhead (see conftest)

R = 32
TEXTS_OBJ = ["box", "ball", "tent", "bench"]
TEXTS_CTX = ["a box in the sky", "a ball on the grass", "a tent on the floor", "a bench at night"]


def _shapes_batch() -> dict:
    """4 simple targets (square, disk, triangle, bar) at 32x32, each with box guidance (Eq. 5, alpha 0.7) over a
    flat background colour, and texts."""
    yy, xx = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    targets = torch.stack([
        (xx >= 4) & (xx < 14) & (yy >= 4) & (yy < 14),
        (xx - 22) ** 2 + (yy - 20) ** 2 <= 36,
        (yy >= 16) & (yy < 30) & (xx >= 4) & (xx - 4 <= yy - 16),
        (yy >= 24) & (yy < 28) & (xx >= 8) & (xx < 30),
    ]).float()
    boxes = torch.zeros_like(targets)
    for k, m in enumerate(targets):
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes[k, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 1
    bg = torch.tensor([[0.2, 0.5, 0.9], [0.3, 0.8, 0.2], [0.6, 0.4, 0.3], [0.1, 0.1, 0.1]]).view(4, 3, 1, 1)
    g = boxes.unsqueeze(1)
    layout = bg.expand(4, 3, R, R) * (1 - 0.7 * g) + 0.7 * g
    # The tiny preset reads the focus view stacked on the global one; with no window they are the same layout.
    return {"layout": torch.cat([layout, layout], dim=1), "target": targets, "obj": list(TEXTS_OBJ),
            "context": list(TEXTS_CTX)}


@pytest.fixture(scope="module")
def batch() -> dict:
    return _shapes_batch()


@pytest.fixture(scope="module")
def trained(batch):
    """A tiny model trained 60 AdamW steps on the fixed batch; loss_at before/after at fixed t and noise."""
    torch.manual_seed(0)
    model = SmartMask.build(presets.tiny_model())
    noise = torch.randn(model.noise_shape(4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model.loss_at(batch, 500, noise).item()
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = model.training_loss(batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = model.loss_at(batch, 500, noise).item()
    return model, noise, before, after


@pytest.fixture(scope="module")
def untrained() -> SmartMask:
    return SmartMask.build(presets.tiny_model()).eval()


@pytest.fixture(scope="module")
def tiny_sd15(tmp_path_factory):
    return build_tiny_sd15(tmp_path_factory.mktemp("sd15"))


# -- config ----------------------------------------------------------------------------------------------------


def test_config_json_round_trip_and_validation():
    for cfg in (presets.tiny_model(), presets.sd15_model("runwayml/stable-diffusion-v1-5"), presets.tiny_model(seed=3)):
        back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert back == cfg and back.content_hash() == cfg.content_hash()
    assert presets.tiny_model().prediction_type == "sample"
    assert presets.tiny_model().content_hash() != presets.tiny_model(seed=1).content_hash()
    with pytest.raises(ValueError, match="base_model"):
        presets.sd15_model("")
    with pytest.raises(ValueError, match="preset"):
        presets.tiny_model(preset="sdxl")
    with pytest.raises(ValueError, match="prediction_type"):
        presets.tiny_model(prediction_type="eps")
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({**presets.tiny_model().to_dict(), "lr": 1e-4})
    with pytest.raises(dataclasses.FrozenInstanceError):
        presets.tiny_model().resolution = 64  # type: ignore[misc]
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="timestep_power"):
            presets.tiny_model(timestep_power=bad)


def test_timestep_skew():
    g = torch.Generator().manual_seed(0)
    uniform = draw_timesteps(20_000, 1000, 1.0, g, "cpu")
    skewed = draw_timesteps(20_000, 1000, 0.6, g, "cpu")
    for t in (uniform, skewed):
        assert t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) <= 999
    # E[u^p] = 1 / (1 + p): 0.5 uniform, 0.625 at p = 0.6 (the tiny preset); low-noise steps drawn less often.
    assert abs(float(uniform.float().mean()) / 1000 - 0.5) < 0.01
    assert abs(float(skewed.float().mean()) / 1000 - 0.625) < 0.01
    assert float((skewed < 200).float().mean()) < 0.1 < float((uniform < 200).float().mean())
    assert presets.tiny_model().timestep_power == 0.6 and presets.sd15_model("x").timestep_power == 1.0


def test_config_import_is_light():
    code = ("import sys, smartmask.model as m; m.ModelConfig.from_dict(m.ModelConfig(preset='sd15', resolution=64, "
            "layout_channels=4, beta_schedule='linear', max_text_tokens=8, base_model='x').to_dict()); "
            "assert 'torch' not in sys.modules, 'torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tiny_tokenizer_ids():
    tok = tiny_clip_tokenizer()
    assert len(tok) == 1000 and (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (998, 999, 999)
    ids = tok("A woman beside the river").input_ids
    assert ids[0] == TINY_BOS_ID and ids[-1] == TINY_EOS_ID and len(ids) == 7  # whole-word tokens, lower-cased
    assert tok.decode(ids, skip_special_tokens=True) == "a woman beside the river"
    assert tok("zebra!").input_ids[1:-1]  # unknown words fall back to bytes, never to nothing
    assert tok("").input_ids == [TINY_BOS_ID, TINY_EOS_ID]


def test_tiny_tokenizer_fingerprint_is_the_tokenizers_vocab_and_merges(tmp_path, monkeypatch):
    """The fingerprint stored with tiny checkpoints is a hash of the vocab and merges the built tokenizer really
    uses (read back from its saved tokenizer.json, not from the code that computes the fingerprint); any change of
    either changes it, and a checkpoint saved under the old one is then refused."""
    tiny_clip_tokenizer().save_pretrained(tmp_path / "tok")
    bpe = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())["model"]
    vocab, merges = bpe["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
    assert len(vocab) == 1000 and len(merges) > 100
    blob = json.dumps([sorted(vocab.items()), merges], separators=(",", ":"))
    fingerprint = tiny_tokenizer_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    assert fingerprint == hashlib.sha256(blob.encode()).hexdigest()[:16]

    SmartMask.build(presets.tiny_model()).save(tmp_path / "ck")
    real = network._tiny_bpe()
    (a, b), (c, d) = real[1][0], real[1][1]
    swapped_ids = dict(real[0]) | {a + b: real[0][c + d], c + d: real[0][a + b]}  # two tokens trade ids
    changes = {"vocab": (swapped_ids, real[1]), "merges": (real[0], real[1][:-1]),
               "merge order": (real[0], (real[1][1], real[1][0], *real[1][2:]))}
    for what, changed in changes.items():
        monkeypatch.setattr(network, "_tiny_bpe", lambda changed=changed: changed)
        assert tiny_tokenizer_fingerprint() != fingerprint, what
        with pytest.raises(ValueError, match="different tiny tokenizer"):
            SmartMask.load(tmp_path / "ck")
    monkeypatch.undo()
    assert tiny_tokenizer_fingerprint() == fingerprint
    SmartMask.load(tmp_path / "ck")


# -- sd15 path on a tiny Stable-Diffusion-layout directory -----------------------------------------------------


def test_sd15_loads_through_loader_and_widens_conv_in(tiny_sd15):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTokenizer

    from smartmask.pretrained import load_pretrained

    cfg = presets.sd15_model(str(tiny_sd15), resolution=TINY_SD15_RESOLUTION)
    model = SmartMask.build(cfg)
    ref = load_pretrained(UNet2DConditionModel, str(tiny_sd15), subfolder="unet")
    w_old, w_new = ref.conv_in.weight, model.unet.conv_in.weight
    assert ref.config.in_channels == 4
    assert model.unet.config.in_channels == model.unet.conv_in.in_channels == 4 + cfg.layout_channels
    assert torch.equal(w_new[:, :4], w_old)  # pretrained channels copied exactly
    assert torch.count_nonzero(w_new[:, 4:]) == 0  # new channels start at zero
    assert torch.equal(model.unet.conv_in.bias, ref.conv_in.bias)
    assert model.vae is not None and model.latent_size == TINY_SD15_RESOLUTION // 8

    # At step 0 the widened U-Net computes exactly what the pretrained one does, whatever the layout.
    b = 2
    x = torch.randn(b, 4, model.latent_size, model.latent_size)
    text = model.encode_text(["woman"] * b, ["a woman beside the river"] * b)
    feats = model.encode_layout(torch.rand(b, 3, TINY_SD15_RESOLUTION, TINY_SD15_RESOLUTION))
    t = torch.tensor([500, 20])
    with torch.no_grad():
        assert torch.allclose(model.predict(x, t, feats, text), ref(x, t, encoder_hidden_states=text).sample,
                              atol=1e-5)

    # The saved tokenizer, loaded through the project's loader, is the in-memory tiny tokenizer.
    tok = load_pretrained(CLIPTokenizer, str(tiny_sd15), subfolder="tokenizer")
    text_in = "two chairs, a lamp and a zebra"
    assert tok(text_in).input_ids == tiny_clip_tokenizer()(text_in).input_ids

    # One backward pass: the zero-initialised conv_in channels get a gradient (E_phi's output is not zero), so
    # training can move them; E_phi itself gets none until they do.
    rr = TINY_SD15_RESOLUTION
    sd_batch = {"layout": torch.rand(b, 3, rr, rr), "target": (torch.rand(b, rr, rr) > 0.5).float(),
                "obj": ["woman"] * b, "context": ["a woman beside the river"] * b}
    model.train()
    model.training_loss(sd_batch, torch.Generator().manual_seed(0)).backward()
    assert model.unet.conv_in.weight.grad[:, 4:].abs().sum() > 0
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert all(p.grad is None for p in model.vae.parameters())


def test_sd15_save_holds_only_trainable_parts(tiny_sd15, tmp_path):
    cfg = presets.sd15_model(str(tiny_sd15), resolution=TINY_SD15_RESOLUTION)
    model = SmartMask.build(cfg).eval()
    with torch.no_grad():
        model.unet.conv_in.weight[:, 4:].normal_()  # as if trained: the layout channels now matter
    model.save(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as fh:
        prefixes = {k.split(".", 1)[0] for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    assert prefixes == {"unet", "layout_encoder"}
    back = SmartMask.load(tmp_path)
    rr = TINY_SD15_RESOLUTION
    sd_batch = {"layout": torch.rand(2, 3, rr, rr), "target": (torch.rand(2, rr, rr) > 0.5).float(),
                "obj": ["a", "b"], "context": ["c", "d"]}
    noise = torch.randn(model.noise_shape(2))
    with torch.no_grad():
        assert model.loss_at(sd_batch, 300, noise).item() == back.loss_at(sd_batch, 300, noise).item()


# -- training --------------------------------------------------------------------------------------------------


def test_overfits_a_fixed_batch(trained):
    _, _, before, after = trained
    assert after < 0.5 * before, (before, after)


def test_trainable_parameters_tiny_trains_its_text_encoder(untrained, batch):
    trainable = {id(p) for p in untrained.trainable_parameters()}
    assert {id(p) for p in untrained.unet.parameters()} <= trainable
    assert {id(p) for p in untrained.layout_encoder.parameters()} <= trainable
    # Tiny's random-init CLIP trains with the U-Net (ModelConfig.train_text_encoder) and gets a gradient...
    assert all(id(p) in trainable and p.requires_grad for p in untrained.text_encoder.parameters())
    model = SmartMask.build(presets.tiny_model())
    model.training_loss(batch, torch.Generator().manual_seed(0)).backward()
    assert model.text_encoder.get_input_embeddings().weight.grad.abs().sum() > 0
    # ...but never switches to training mode (no dropout), and with the option off it is frozen.
    untrained.train()
    assert not untrained.text_encoder.training and untrained.unet.training
    untrained.eval()
    frozen = SmartMask.build(presets.tiny_model(train_text_encoder=False))
    kept = {id(p) for p in frozen.trainable_parameters()}
    assert all(id(p) not in kept and not p.requires_grad for p in frozen.text_encoder.parameters())


def test_object_embedding_carries_the_object_name_to_every_block(untrained, batch):
    """Tiny: T_obj's CLIP states, mean-pooled, are the U-Net's class-embedding input; swapping only that pooled
    vector (cross-attention unchanged) changes the prediction. Without the option there is no class embedding."""
    model, L = untrained, untrained.config.max_text_tokens
    x = torch.randn(4, 1, R, R, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900, 600, 300, 50])
    with torch.no_grad():
        feats = model.encode_layout(batch["layout"])
        text = model.encode_text(batch["obj"], batch["context"])
        other = model.encode_text(["zebra"] * 4, batch["context"])
        out = model.predict(x, t, feats, text)
        x_in = torch.cat([x, feats], dim=1)
        pooled = model.unet(x_in, t, encoder_hidden_states=text, class_labels=text[:, :L].mean(dim=1)).sample
        swapped = model.unet(x_in, t, encoder_hidden_states=text, class_labels=other[:, :L].mean(dim=1)).sample
    assert torch.equal(out, pooled)
    assert (out - swapped).abs().amax() > 1e-3
    assert SmartMask.build(presets.tiny_model(object_embedding=False)).unet.class_embedding is None
    with pytest.raises(ValueError, match="object_embedding is a tiny-preset option"):
        presets.sd15_model("some/dir", object_embedding=True)


def test_tiny_attention_is_plain_matmuls_with_the_same_result(batch):
    """Tiny attention, U-Net and CLIP, runs as plain matmuls (faster than SDPA's CPU kernels at head dim 8): same
    function."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    from transformers import CLIPTextConfig, CLIPTextModel

    model = SmartMask.build(presets.tiny_model()).eval()
    procs = model.unet.attn_processors
    assert procs and all(type(p) is AttnProcessor for p in procs.values())
    assert model.text_encoder.config._attn_implementation == "eager"
    x = torch.randn(4, 1, R, R, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900, 600, 300, 50])
    with torch.no_grad():
        feats = model.encode_layout(batch["layout"])
        text = model.encode_text(batch["obj"], batch["context"])
        plain = model.predict(x, t, feats, text)
        model.unet.set_attn_processor(AttnProcessor2_0())
        sdpa = model.predict(x, t, feats, text)
        sdpa_config = CLIPTextConfig(**model.config.text)
        sdpa_config._attn_implementation = "sdpa"
        sdpa_clip = CLIPTextModel(sdpa_config).eval()
        # Two different implementations are compared (not the plain one with itself):
        assert sdpa_clip.config._attn_implementation == "sdpa"
        assert all(type(p) is AttnProcessor2_0 for p in model.unet.attn_processors.values())
        sdpa_clip.load_state_dict(model.text_encoder.state_dict())
        model.text_encoder = sdpa_clip
        sdpa_text = model.encode_text(batch["obj"], batch["context"])
    assert torch.allclose(plain, sdpa, atol=1e-5)
    assert torch.allclose(text, sdpa_text, atol=1e-5)


def test_cfg_dropout_is_independent_per_sample(untrained, monkeypatch):
    model = untrained
    seen: dict = {}
    enc_text, predict = model.encode_text, model.predict

    def spy_text(obj, context):
        seen["obj"], seen["ctx"] = list(obj), list(context)
        return enc_text(obj, context)

    def spy_predict(x_t, t, feats, text):
        seen["feats"] = feats.detach()
        return predict(x_t, t, feats, text)

    monkeypatch.setattr(model, "encode_text", spy_text)
    monkeypatch.setattr(model, "predict", spy_predict)
    n = 64
    big = {"layout": torch.rand(n, model.config.layout_in_channels, R, R),
           "target": (torch.rand(n, R, R) > 0.5).float(),
           "obj": ["woman"] * n, "context": ["a river"] * n}
    monkeypatch.setattr(model, "config", dataclasses.replace(model.config, text_dropout=0.5, layout_dropout=0.5))
    with torch.no_grad():
        model.training_loss(big, torch.Generator().manual_seed(0))
    text_dropped = torch.tensor([o == "" for o in seen["obj"]])
    assert [o == "" for o in seen["obj"]] == [c == "" for c in seen["ctx"]]  # both texts dropped together
    layout_dropped = seen["feats"].flatten(1).abs().sum(1) == 0
    assert 0 < text_dropped.sum() < n and 0 < layout_dropped.sum() < n
    assert not torch.equal(text_dropped, layout_dropped)  # independent draws
    monkeypatch.setattr(model, "config", dataclasses.replace(model.config, text_dropout=0.0, layout_dropout=0.0))
    with torch.no_grad():
        model.training_loss(big, torch.Generator().manual_seed(0))
    assert "" not in seen["obj"] and bool((seen["feats"].flatten(1).abs().sum(1) > 0).all())


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_other_parameterisations_run(prediction_type, batch):
    model = SmartMask.build(presets.tiny_model(prediction_type=prediction_type))
    loss = model.training_loss(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    masks = sample_masks(model, batch["layout"][:1], batch["obj"][:1], batch["context"][:1], n=2, steps=2)
    assert masks.shape == (1, 2, R, R)


# -- save / load -----------------------------------------------------------------------------------------------


def test_save_load_round_trip(trained, batch, tmp_path):
    model, noise, _, _ = trained
    model.save(tmp_path / "ck")
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "ck" / "config.json").read_text()) == model.config.to_dict()
    back = SmartMask.load(tmp_path / "ck")
    with torch.no_grad():
        assert model.loss_at(batch, 500, noise).item() == back.loss_at(batch, 500, noise).item()
    args = (batch["layout"], batch["obj"], batch["context"])
    a, pa = sample_masks(model, *args, n=2, steps=6, return_probs=True)
    b, pb = sample_masks(back, *args, n=2, steps=6, return_probs=True)
    assert torch.equal(a, b) and torch.equal(pa, pb)
    # The trained model puts the masks where the targets are (box guidance): far better than chance.
    iou = (a & batch["target"].bool()[:, None]).sum((2, 3)) / (a | batch["target"].bool()[:, None]).sum((2, 3))
    assert iou.float().mean() > 0.5, iou


def test_load_rejects_non_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        SmartMask.load(tmp_path)


# -- sampling --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["dpm", "ddim"])
def test_sample_masks_shapes_seeds_and_one_unet_call_per_step(untrained, batch, scheduler):
    model = untrained
    calls: list[int] = []
    handle = model.unet.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        b, n, steps = 2, 3, 4
        masks, probs = sample_masks(model, batch["layout"][:b], batch["obj"][:b], batch["context"][:b], n=n,
                                    steps=steps, scheduler=scheduler, seed=7, return_probs=True)
    finally:
        handle.remove()
    assert calls == [3 * b * n] * steps  # the three guidance branches batched in one U-Net call per step
    assert masks.shape == (b, n, R, R) and masks.dtype == torch.bool
    assert probs.shape == (b, n, R, R) and probs.min() >= 0 and probs.max() <= 1
    assert torch.equal(masks, probs > 0.5)
    assert not all(torch.equal(masks[0, 0], masks[0, j]) for j in range(1, n))  # seeds differ
    again = sample_masks(model, batch["layout"][:b], batch["obj"][:b], batch["context"][:b], n=n, steps=steps,
                         scheduler=scheduler, seed=7)
    assert torch.equal(masks, again)  # deterministic
    # Suggestion j depends on seed + j, not on the rest of the batch.
    alone = sample_masks(model, batch["layout"][1:2], batch["obj"][1:2], batch["context"][1:2], n=1,
                         steps=steps, scheduler=scheduler, seed=8, return_probs=True)[1]
    assert torch.allclose(alone[0, 0], probs[1, 1], atol=1e-4)


def test_sample_masks_rejects_bad_input(untrained, batch):
    with pytest.raises(ValueError, match="layout must be"):
        sample_masks(untrained, batch["layout"][:, :, :16, :16], batch["obj"], batch["context"])
    with pytest.raises(ValueError, match="object texts"):
        sample_masks(untrained, batch["layout"], batch["obj"][:2], batch["context"])
    with pytest.raises(ValueError, match="scheduler"):
        sample_masks(untrained, batch["layout"], batch["obj"], batch["context"], scheduler="euler")


def test_sampling_restores_training_mode(untrained, batch):
    untrained.train()
    try:
        sample_masks(untrained, batch["layout"][:1], batch["obj"][:1], batch["context"][:1], steps=1)
        assert untrained.training and untrained.unet.training and not untrained.text_encoder.training
    finally:
        untrained.eval()


def test_loss_at_with_noise_from_a_generator(untrained, batch):
    with torch.no_grad():
        a = untrained.loss_at(batch, 400, None, generator=torch.Generator().manual_seed(5))
        b = untrained.loss_at(batch, 400, generator=torch.Generator().manual_seed(5))
        c = untrained.loss_at(batch, 400, torch.randn(untrained.noise_shape(4), generator=torch.Generator().manual_seed(5)))
    assert a.item() == b.item() == c.item()
    with pytest.raises(ValueError, match="noise shape"):
        untrained.loss_at(batch, 400, torch.zeros(1, 1, 8, 8))
