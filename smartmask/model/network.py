"""The SmartMask network (paper §3.1-3.2): a conditional diffusion U-Net that denoises the next object's mask.

    x0        the target mask A_{k+1}: pixel space (tiny: 2m-1, (B,1,R,R)) or VAE latents (sd15: (B,4,R/8,R/8))
    E_phi(S~) the guided layout S~ (B,3,R,R in [0,1]) encoded to (B,layout_channels,r,r), r = the U-Net's size
    U-Net     UNet2DConditionModel(cat([x_t, E_phi(S~)], dim=1), t, cross-attention on [CLIP(T_obj); CLIP(T_ctx)])

`SmartMask.build(cfg)` creates it (tiny: random init; sd15: Stable Diffusion 1.5 weights through the project's
loader, conv_in widened), `training_loss(batch)` is the diffusion loss with classifier-free-guidance dropout,
`save(dir)` / `SmartMask.load(dir)` write and read `config.json` + `model.safetensors` (never pickles).
Sampling lives in `smartmask.model.sampling`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smartmask.model.config import ModelConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "smartmask-model/1"

# --------------------------------------------------------------------------------------------------------------
# The tiny CLIP tokenizer (runtime: a tiny model trained from scratch needs its tokenizer at inference too)
# --------------------------------------------------------------------------------------------------------------

# Whole-word tokens for the words the synthetic world's labels and template captions use, plus common words of
# user prompts. Any other text still tokenises (byte-level BPE falls back to single bytes).
_TINY_WORDS = (
    "a", "an", "the", "of", "in", "on", "at", "by", "with", "and", "or", "to", "is", "are", "there", "this",
    "that", "it", "its", "photo", "picture", "image", "scene", "view", "empty", "many", "front", "next",
    "behind", "near", "above", "below", "beside", "left", "right", "top", "bottom", "sitting", "standing",
    "insert", "add", "family", "wedding", "posing", "for",
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "person", "people", "woman", "women", "man", "men", "child", "kid", "dog", "dogs", "cat", "tree", "trees",
    "car", "cars", "house", "houses", "bench", "benches", "boat", "boats", "bird", "birds", "cloud", "clouds",
    "table", "tables", "chair", "chairs", "sofa", "sofas", "lamp", "lamps", "vase", "vases", "bottle",
    "bottles", "plant", "plants", "painting", "paintings", "window", "windows", "sky", "grass", "water",
    "wall", "floor", "river", "lake", "sea", "road", "street", "door", "red", "green", "blue", "white",
    "black", "small", "large", "outdoor", "indoor", "room", "living", "kitchen", "beach", "mountain", "field",
)  # fmt: skip
TINY_VOCAB_SIZE = 1000
TINY_BOS_ID, TINY_EOS_ID = 998, 999


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (GPT-2's) reversible byte → printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _bpe_split(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one ASCII word (with CLIP's `</w>` on its last symbol) under `ranks`."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(itertools.pairwise(parts))]
        rank, i = min(pairs)
        if rank == math.inf:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


@lru_cache(maxsize=1)
def _tiny_bpe() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(vocab, merges) of the tiny CLIP BPE: 256 byte tokens, the same 256 with `</w>`, then merges up to id 997,
    then <|startoftext|> = 998 and <|endoftext|> = 999 (CLIP's layout, 1000 tokens in all). Pure and deterministic.
    """
    byte_tokens = list(_bytes_to_unicode().values())
    vocab_list = byte_tokens + [t + "</w>" for t in byte_tokens]
    known = set(vocab_list)
    merges: list[tuple[str, str]] = []
    limit = TINY_VOCAB_SIZE - 2

    def add(a: str, b: str) -> bool:
        if len(vocab_list) >= limit or a not in known or b not in known or a + b in known:
            return a + b in known
        merges.append((a, b))
        vocab_list.append(a + b)
        known.add(a + b)
        return True

    # Each word becomes one token: BPE-split it with the merges so far, then merge its pieces left to right
    # ((p1,p2), (p1p2,p3), ...). New merges rank after all earlier ones, so they only join what earlier merges
    # left over; long words go first so their merges rank higher.
    for word in sorted(_TINY_WORDS, key=len, reverse=True):
        parts = _bpe_split(word, {pair: r for r, pair in enumerate(merges)})
        acc = parts[0]
        for p in parts[1:]:
            if not add(acc, p):
                break
            acc += p
    # Fill the rest of the 998 ids with letter pairs (word-final first: most English words end in one).
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    for suffix in ("</w>", ""):
        for a in letters:
            for b in letters:
                add(a, b + suffix)
    if len(vocab_list) != limit:  # pragma: no cover - a change of _TINY_WORDS that breaks the layout
        raise AssertionError(f"tiny BPE has {len(vocab_list)} tokens, expected {limit}")
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    vocab["<|startoftext|>"] = TINY_BOS_ID
    vocab["<|endoftext|>"] = TINY_EOS_ID
    return vocab, tuple(merges)


def tiny_tokenizer_fingerprint() -> str:
    """16 hex digits over the tiny tokenizer's vocab and merges; stored with tiny checkpoints and checked on load."""
    vocab, merges = _tiny_bpe()
    blob = json.dumps([sorted(vocab.items()), merges], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tiny_clip_tokenizer(model_max_length: int = 77):
    """A 1000-token CLIP BPE tokenizer, built in memory (no files, deterministic).

    transformers 5: `CLIPTokenizer(vocab_file=...)` is silently ignored, so the vocab dict and merge pairs are
    passed directly (`vocab=`, `merges=`).
    """
    from transformers import CLIPTokenizer

    vocab, merges = _tiny_bpe()
    tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)
    if tok.bos_token_id != TINY_BOS_ID or tok.eos_token_id != TINY_EOS_ID:  # pragma: no cover
        raise AssertionError("tiny CLIP tokenizer: special token ids moved")
    return tok


# --------------------------------------------------------------------------------------------------------------
# The layout encoder E_phi
# --------------------------------------------------------------------------------------------------------------


class LayoutEncoder(nn.Module):
    """E_phi: the guided layout S~ (B,C,R,R) → (B,out_channels,R/2^n,R/2^n); C = 3, or 6 with the focus view.

    conv3x3(3→w) SiLU, then n stages [conv3x3 SiLU, conv3x3 stride 2 SiLU] doubling the width (capped at 256),
    then conv3x3 → out_channels. n = 0 for pixel space (tiny), 3 for the SD VAE's factor 8 (sd15), like
    ControlNet's conditioning embedding.

    The last conv is NOT zero-initialised. In sd15 the conv_in rows that read E_phi's output start at zero (so
    the widened U-Net equals the pretrained one at step 0); if E_phi's output were zero too, both gradients
    would be zero (each is the product of the other's value and the upstream gradient) and neither would ever
    move. One zero is enough to preserve the pretrained function; we put it in conv_in, as InstructPix2Pix does.
    """

    def __init__(self, out_channels: int, downsample_steps: int, width: int = 32, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.SiLU()]
        w = width
        for _ in range(downsample_steps):
            w_next = min(w * 2, 256)
            layers += [nn.Conv2d(w, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, w_next, 3, padding=1, stride=2), nn.SiLU()]
            w = w_next
        if downsample_steps == 0:  # pixel space: one more 3x3 so the receptive field is 7x7, not 5x5
            layers += [nn.Conv2d(w, w, 3, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(w, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, layout_BCHW: torch.Tensor) -> torch.Tensor:
        return self.net(layout_BCHW)


def widen_conv_in(unet, extra_channels: int) -> None:
    """Give a pretrained U-Net `extra_channels` more input channels, zero-initialised (in place).

    As diffusers' `examples/instruct_pix2pix/train_instruct_pix2pix.py`: the pretrained channels' weights are
    copied exactly, the new ones start at zero and the bias is kept, so at step 0 the widened U-Net computes
    exactly what the pretrained one computes on z_t (the layout input is ignored until training gives it
    weight) and fine-tuning starts from SD's prior instead of from a perturbed network.
    """
    old = unet.conv_in
    new = nn.Conv2d(
        old.in_channels + extra_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
        bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels + extra_channels)


# --------------------------------------------------------------------------------------------------------------
# SmartMask
# --------------------------------------------------------------------------------------------------------------


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev).to(device)


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    gdev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def draw_timesteps(B: int, T: int, power: float, generator: torch.Generator | None, device) -> torch.Tensor:
    """(B,) training timesteps in [0, T): floor(u^power * T), u uniform; power 1 is the plain uniform draw,
    power < 1 skews towards high noise (see ModelConfig.timestep_power)."""
    gen_device = generator.device if generator is not None else device
    if power == 1.0:
        return torch.randint(0, T, (B,), generator=generator, device=gen_device).to(device)
    u = torch.rand((B,), generator=generator, device=gen_device)
    return (u.pow(power) * T).long().clamp_(0, T - 1).to(device)


class SmartMask(nn.Module):
    """U-Net + layout encoder E_phi (trainable); CLIP text encoder (frozen, but trained in tiny: see
    `ModelConfig.train_text_encoder`), tokenizer and (sd15) VAE (frozen)."""

    def __init__(self, config: ModelConfig, unet, layout_encoder: LayoutEncoder, text_encoder, tokenizer,
                 vae=None):
        super().__init__()
        from diffusers import DDPMScheduler

        self.config = config
        self.unet = unet
        self.layout_encoder = layout_encoder
        # eval(): CLIP's dropout stays off even where the text encoder trains (config.train_text_encoder).
        self.text_encoder = text_encoder.eval().requires_grad_(bool(config.train_text_encoder))
        self.tokenizer = tokenizer
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            beta_schedule=config.beta_schedule,
            beta_start=config.beta_start,
            beta_end=config.beta_end,
            prediction_type=config.prediction_type,
            clip_sample=config.clip_sample,
        )

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: ModelConfig) -> SmartMask:
        """Tiny: everything random-init from `cfg` (seeded by `cfg.seed`). sd15: U-Net, VAE, text encoder and
        tokenizer from `cfg.base_model` through `load_pretrained`, conv_in widened; E_phi random-init."""
        if cfg.preset == "tiny":
            return cls._build_tiny(cfg)
        return cls._build_sd15(cfg)

    @classmethod
    def _build_tiny(cls, cfg: ModelConfig) -> SmartMask:
        from diffusers import UNet2DConditionModel
        from diffusers.models.attention_processor import AttnProcessor
        from transformers import CLIPTextConfig, CLIPTextModel

        unet_kwargs = dict(cfg.unet)
        # The mask is denoised in pixel space: 1 channel in (plus E_phi's), 1 channel out.
        unet_kwargs.update(in_channels=1 + cfg.layout_channels, out_channels=1)
        unet_kwargs.setdefault("sample_size", cfg.resolution)
        if cfg.object_embedding:  # pooled T_obj → the time embedding (see `predict`)
            unet_kwargs.update(class_embed_type="projection",
                               projection_class_embeddings_input_dim=cfg.text["hidden_size"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            unet = UNet2DConditionModel(**unet_kwargs)
            layout_encoder = LayoutEncoder(cfg.layout_channels, 0, cfg.layout_width, cfg.layout_in_channels)
            text_config = CLIPTextConfig(**cfg.text)
            # Eager attention for the same reason as the U-Net's below: the tiny CLIP trains, and at head dim 8
            # its forward + backward took 57 ms with SDPA, 16 ms eager (64 texts x 32 tokens, 1 thread, bf16).
            text_config._attn_implementation = "eager"
            text_encoder = CLIPTextModel(text_config)
        # Plain-matmul attention instead of SDPA: at 64 tokens and head dim 8 SDPA's CPU kernel, its backward most of
        # all, is several times slower (docs/experiments.md, "Training speed"). Same maths, so the same function.
        unet.set_attn_processor(AttnProcessor())
        tokenizer = tiny_clip_tokenizer(model_max_length=cfg.text.get("max_position_embeddings", 77))
        return cls(cfg, unet, layout_encoder, text_encoder, tokenizer)

    @classmethod
    def _build_sd15(cls, cfg: ModelConfig) -> SmartMask:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        from smartmask.pretrained import load_pretrained

        base = cfg.base_model
        assert base is not None  # ModelConfig validates it
        unet = load_pretrained(UNet2DConditionModel, base, subfolder="unet")
        vae = load_pretrained(AutoencoderKL, base, subfolder="vae")
        text_encoder = load_pretrained(CLIPTextModel, base, subfolder="text_encoder")
        tokenizer = load_pretrained(CLIPTokenizer, base, subfolder="tokenizer")
        latent_channels = vae.config.latent_channels
        if unet.config.in_channels != latent_channels:
            raise ValueError(
                f"base model {base!r}: its U-Net takes {unet.config.in_channels} input channels, expected the "
                f"VAE's {latent_channels} (an already-widened or inpainting U-Net is not a valid base)"
            )
        if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
            raise ValueError(f"base model {base!r}: U-Net cross_attention_dim != text encoder hidden_size")
        positions = text_encoder.config.max_position_embeddings
        if cfg.max_text_tokens > positions:
            raise ValueError(f"max_text_tokens {cfg.max_text_tokens} exceeds the text encoder's {positions} positions")
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if cfg.resolution % factor:
            raise ValueError(f"resolution {cfg.resolution} is not a multiple of the VAE's factor {factor}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            layout_encoder = LayoutEncoder(cfg.layout_channels, int(math.log2(factor)), cfg.layout_width,
                                           cfg.layout_in_channels)
        widen_conv_in(unet, cfg.layout_channels)
        return cls(cfg, unet, layout_encoder, text_encoder, tokenizer, vae=vae)

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return 1 if self.vae is None else self.vae.config.latent_channels

    @property
    def latent_size(self) -> int:
        if self.vae is None:
            return self.config.resolution
        return self.config.resolution // 2 ** (len(self.vae.config.block_out_channels) - 1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """U-Net + E_phi (+ the text encoder where `config.train_text_encoder`). The VAE stays frozen.

        Read off `requires_grad`, which `__init__` sets from the config: the one record of what trains, as the
        training loop and the registry read it too."""
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> SmartMask:
        super().train(mode)
        self.text_encoder.eval()  # frozen parts never switch to training mode
        if self.vae is not None:
            self.vae.eval()
        return self

    # -- encoders ---------------------------------------------------------------------------------------------
    def _clip(self, texts: list[str]) -> torch.Tensor:
        # No autograd graph unless the text encoder trains: its parameters are the only tensors that need grad.
        ids = self.tokenizer(
            list(texts), padding="max_length", max_length=self.config.max_text_tokens, truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids).last_hidden_state

    def encode_text(self, obj: list[str], context: list[str]) -> torch.Tensor:
        """(B, 2*max_text_tokens, D): CLIP(T_obj) and CLIP(T_context), concatenated along the sequence axis.

        Concatenation rather than one joined prompt: each text gets its own CLIP pass within CLIP's 77-position
        window, so a long caption can never truncate the object name away, and the object's tokens are not
        diluted by the caption inside CLIP's causal attention. Cross-attention takes keys of any length, so the
        pretrained SD U-Net accepts 2x77 keys unchanged. "" is the dropped (unconditional) text.
        """
        if len(obj) != len(context):
            raise ValueError(f"{len(obj)} object texts but {len(context)} contexts")
        both = self._clip(list(obj) + list(context))
        n = len(obj)
        return torch.cat([both[:n], both[n:]], dim=1)

    def encode_layout(self, layout_BCHW: torch.Tensor) -> torch.Tensor:
        return self.layout_encoder(layout_BCHW.to(self.device, self.dtype))

    @torch.no_grad()
    def encode_mask(self, target_BHW: torch.Tensor) -> torch.Tensor:
        """Binary masks (B,R,R) → x0: pixel space 2m-1 (B,1,R,R); sd15 VAE latents * scaling_factor.

        The VAE posterior's mode, not a sample: the target of a deterministic binary mask should itself be
        deterministic (and `loss_at` reproducible).
        """
        m = target_BHW.to(self.device, self.dtype).unsqueeze(1) * 2 - 1
        if self.vae is None:
            return m
        latents = self.vae.encode(m.repeat(1, 3, 1, 1)).latent_dist.mode()
        return latents * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_mask(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 → soft mask probabilities (B,R,R) in [0,1]."""
        if self.vae is None:
            img = x0[:, 0]
        else:
            img = self.vae.decode(x0 / self.vae.config.scaling_factor).sample.mean(dim=1)
        return ((img.float() + 1) / 2).clamp(0, 1)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, layout_features: torch.Tensor,
                text_states: torch.Tensor) -> torch.Tensor:
        """One U-Net call on cat([x_t, E_phi(S~)]); the output is x0, epsilon or v per `prediction_type`.

        With `config.object_embedding`, T_obj's states (the first max_text_tokens of `text_states`, see
        `encode_text`) are mean-pooled into the U-Net's class embedding. The mean, not CLIP's EOS token: every
        position after the name (the padding is EOS tokens) has attended to it, and the dropped text "" pools to
        the unconditional embedding, so classifier-free guidance needs nothing extra.
        """
        obj_BD = text_states[:, : self.config.max_text_tokens].mean(dim=1) if self.config.object_embedding else None
        return self.unet(torch.cat([x_t, layout_features], dim=1), t, encoder_hidden_states=text_states,
                         class_labels=obj_BD).sample

    # -- training ---------------------------------------------------------------------------------------------
    def _check_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
        layout, target = batch["layout"], batch["target"]
        obj, context = list(batch["obj"]), list(batch["context"])
        R = self.config.resolution
        B = layout.shape[0]
        C = self.config.layout_in_channels
        if tuple(layout.shape) != (B, C, R, R) or tuple(target.shape) != (B, R, R):
            raise ValueError(
                f"batch shapes: layout {tuple(layout.shape)}, target {tuple(target.shape)}; "
                f"expected (B,{C},{R},{R}) and (B,{R},{R})"
            )
        if len(obj) != B or len(context) != B:
            raise ValueError(f"batch of {B} layouts has {len(obj)} object texts and {len(context)} contexts")
        return layout, target, obj, context

    def _target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kind = self.config.prediction_type
        if kind == "sample":
            return x0
        if kind == "epsilon":
            return noise
        return self.noise_scheduler.get_velocity(x0, noise, t)

    def _loss(self, layout, target, obj, context, t, noise, keep_text=None, keep_layout=None) -> torch.Tensor:
        x0 = self.encode_mask(target)
        t = t.to(self.device)
        noise = noise.to(self.device, x0.dtype)
        x_t = self.noise_scheduler.add_noise(x0, noise, t)
        if keep_text is not None:
            obj = [o if k else "" for o, k in zip(obj, keep_text.tolist(), strict=True)]
            context = [c if k else "" for c, k in zip(context, keep_text.tolist(), strict=True)]
        text_states = self.encode_text(obj, context)
        features = self.encode_layout(layout)
        if keep_layout is not None:
            # The dropped layout is a zero feature map, as InstructPix2Pix zeroes the encoded image latents
            # (not the pixels): "no layout" stays distinct from a real but empty (all-background) layout.
            features = features * keep_layout.to(features.dtype).view(-1, 1, 1, 1)
        pred = self.predict(x_t, t, features, text_states)
        return nn.functional.mse_loss(pred.float(), self._target(x0, noise, t).float())

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """The diffusion loss on a batch with uniform timesteps and independent per-sample CFG dropout.

        batch: layout (B,3,R,R) float [0,1] (the guided layout S~), target (B,R,R) float {0,1}, obj / context
        (list[str]). All randomness (t, noise, dropout) comes from `generator` when given.
        """
        layout, target, obj, context = self._check_batch(batch)
        B = layout.shape[0]
        dev = self.device
        t = draw_timesteps(B, self.config.num_train_timesteps, self.config.timestep_power, generator, dev)
        shape = (B, self.latent_channels, self.latent_size, self.latent_size)
        noise = _randn(shape, generator, dev)
        keep_text = _rand((B,), generator, dev) >= self.config.text_dropout
        keep_layout = _rand((B,), generator, dev) >= self.config.layout_dropout
        return self._loss(layout, target, obj, context, t, noise, keep_text, keep_layout)

    def loss_at(self, batch: dict[str, Any], t: int, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss at a fixed timestep, without dropout: deterministic for fixed `noise` (or, when `noise` is
        None, for noise drawn from `generator`); for overfitting tests and comparable validation losses."""
        layout, target, obj, context = self._check_batch(batch)
        B = layout.shape[0]
        if noise is None:
            noise = _randn(self.noise_shape(B), generator, self.device)
        elif tuple(noise.shape) != self.noise_shape(B):
            raise ValueError(f"noise shape {tuple(noise.shape)}, expected {self.noise_shape(B)}")
        ts = torch.full((B,), int(t), dtype=torch.long)
        return self._loss(layout, target, obj, context, ts, noise)

    def noise_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        return (batch_size, self.latent_channels, self.latent_size, self.latent_size)

    # -- persistence ------------------------------------------------------------------------------------------
    def _saved_modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"unet": self.unet, "layout_encoder": self.layout_encoder}
        if self.config.preset == "tiny":
            # Random-init and frozen, but part of the model: it must be reproduced exactly.
            mods["text_encoder"] = self.text_encoder
        return mods

    def save(self, directory: Path | str) -> Path:
        """`config.json` (= `ModelConfig.to_dict()`) + `model.safetensors` (U-Net, E_phi; tiny: + text encoder).

        sd15 checkpoints hold no VAE / text encoder: `load` rebuilds them from `base_model`. Never pickles.
        Each file is written to a temporary name and renamed, so a killed save leaves no half-written file.
        """
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state: dict[str, torch.Tensor] = {}
        for prefix, mod in self._saved_modules().items():
            for k, v in mod.state_dict().items():
                state[f"{prefix}.{k}"] = v.detach().to("cpu").contiguous()
        meta = {"format": FORMAT, "preset": self.config.preset, "config_hash": self.config.content_hash()}
        if self.config.preset == "tiny":
            meta["tiny_tokenizer"] = tiny_tokenizer_fingerprint()
        tmp = out / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp), metadata=meta)
        tmp.replace(out / WEIGHTS_FILE)
        tmp = out / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True))
        tmp.replace(out / CONFIG_FILE)
        return out

    @classmethod
    def load(cls, directory: Path | str, device: torch.device | str | None = None) -> SmartMask:
        """Rebuild from `config.json` (sd15: frozen parts from `base_model` via load_pretrained), then load the
        saved weights (safetensors, strict: every saved tensor must match)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        d = Path(directory)
        cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
        if not cfg_path.is_file() or not w_path.is_file():
            raise FileNotFoundError(f"{d} is not a SmartMask checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        cfg = ModelConfig.from_dict(json.loads(cfg_path.read_text()))
        with safe_open(str(w_path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{w_path}: not a {FORMAT} checkpoint (format {meta.get('format')!r})")
        if cfg.preset == "tiny" and meta.get("tiny_tokenizer") != tiny_tokenizer_fingerprint():
            raise ValueError(f"{w_path}: trained with a different tiny tokenizer than this code builds")
        model = cls.build(cfg)
        state = load_file(str(w_path))
        for prefix, mod in model._saved_modules().items():
            sub = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
            mod.load_state_dict(sub, strict=True)
        extra = [k for k in state if k.split(".", 1)[0] not in model._saved_modules()]
        if extra:
            raise ValueError(f"{w_path}: unexpected tensors {extra[:3]}")
        if device is not None:
            model.to(device)
        return model.eval()
