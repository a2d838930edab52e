"""Local-FID: the Fréchet distance between features of object crops of real and generated images.

Protocol (`object_crop`): both the real and the generated image are cropped with the SAME rule around the object's
box (square, 10% margin on each side, kept inside the image, edge-replicated where the image is too small) and
resized to 299×299 with PIL bicubic; a feature extractor maps the crops to (N, D) features and `local_fid` is the
Fréchet distance between the two feature sets.

Extractors (`load_extractor`): `inception` is clean-fid's own Inception-v3 (TorchScript, the standard FID
network), run through clean-fid's feature path; `random-conv:SEED` is an offline stand-in (a fixed, seeded,
random-init conv net) whose numbers are comparable only with themselves; `auto` picks inception when its weights
are on disk. Every extractor has a `name` that goes into every result row, so numbers from different extractors
are never mixed.

torch and clean-fid are imported lazily: `frechet_distance` and `object_crop` need only numpy and PIL.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from smartmask.pretrained import ModelNotFound

FID_SIZE = 299  # Inception-v3's input side; clean-fid asserts it
INCEPTION_FILE = "inception-2015-12-05.pt"
RANDOM_CONV_DIM = 64


class ExtractorUnavailable(ModelNotFound):
    """A feature extractor cannot be built offline (its weights are not on disk). One line."""


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D), N ≥ 2 each.

    Definition (identical to clean-fid's `fid_from_feats`): mu = mean over rows, Σ = np.cov(feats, rowvar=False)
    (unbiased, divides by N − 1), and d = ‖mu_a − mu_b‖² + tr(Σ_a) + tr(Σ_b) − 2 tr(√(Σ_a Σ_b)).

    Why not clean-fid's code: it forms Σ_a Σ_b and takes `scipy.linalg.sqrtm` of that non-symmetric D×D matrix
    (≈ 20 s at D = 2048 on 2 cores), which is inaccurate when the product is singular (N < D: the usual case for
    Local-FID with a few hundred crops and 2048-d features) and then falls back to adding 1e-6 to both diagonals.
    Here tr √(Σ_a Σ_b) is computed exactly from square-root factors: with Σ = RᵀR, the eigenvalues of Σ_a Σ_b are
    the squared singular values of R_a R_bᵀ, so tr √(Σ_a Σ_b) = Σ singular values of R_a R_bᵀ. R is the centred,
    1/√(N−1)-scaled feature matrix itself when N ≤ D (a small N_a×N_b SVD), else its D×D QR factor (Σ is never
    squared, so there is no square root of rounding noise and no eps offset is ever needed). Same number as
    clean-fid to ~1e-8 relative where its sqrtm is accurate; several times faster.
    """
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance: feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, r_a, tr_a = _moments(a)
    mu_b, r_b, tr_b = _moments(b)
    cross = float(np.linalg.svd(r_a @ r_b.T, compute_uv=False).sum())
    diff = mu_a - mu_b
    return float(diff @ diff + tr_a + tr_b - 2.0 * cross)


def local_fid(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    """Local-FID of generated object crops against real ones: `frechet_distance(real_feats, fake_feats)`."""
    return frechet_distance(real_feats, fake_feats)


def _as_features(x: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"{what}: need a 2-D (N, D) feature array with N ≥ 2, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: features contain NaN or inf")
    return arr


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mu, R, tr Σ) with Σ = np.cov(x, rowvar=False) = RᵀR; R has min(N, D) rows."""
    n, d = x.shape
    mu = x.mean(axis=0)
    c = (x - mu) / math.sqrt(n - 1)
    trace = float(np.einsum("ij,ij->", c, c))
    r = c if n <= d else np.linalg.qr(c, mode="r")
    return mu, r, trace


def object_crop(
    image_HWC: np.ndarray, box: Sequence[float], *, margin: float = 0.1, size: int = FID_SIZE
) -> np.ndarray:
    """The object's square crop for Local-FID: uint8 (size, size, 3).

    `box` = (x0, y0, x1, y1), x1/y1 exclusive. The square has side max(w, h) × (1 + 2·margin) (rounded, ≥ 1), is
    centred on the box, and is shifted to lie inside the image where the image is large enough; along an axis
    where the image is smaller than the side, the square covers the whole image (as close to centred on the box as
    that allows) and the missing rows/columns are filled by edge replication. The crop is resized to `size` with
    PIL bicubic (skipped when it is already that size). Real and generated crops must both come from this
    function with the same box rule, so any difference in Local-FID is the content, not the framing.
    """
    img = np.asarray(image_HWC)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"object_crop: need a uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    H, W = img.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"object_crop: empty box {tuple(box)}")
    side = max(1, _round_half_up(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)))
    left, top = _place(0.5 * (x0 + x1), side, W), _place(0.5 * (y0 + y1), side, H)
    crop = img[max(0, top) : min(H, top + side), max(0, left) : min(W, left + side)]
    pad = ((max(0, -top), max(0, top + side - H)), (max(0, -left), max(0, left + side - W)), (0, 0))
    if any(p for pair in pad for p in pair):
        crop = np.pad(crop, pad, mode="edge")
    if crop.shape[:2] != (size, size):
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))
    return np.ascontiguousarray(crop)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)  # not round(): banker's rounding would make 2.5 → 2 but 3.5 → 4


def _place(centre: float, side: int, extent: int) -> int:
    """Start of a `side`-long window centred at `centre`, clamped to [0, extent − side] when it fits, else to
    [extent − side, 0] (the window then covers the whole extent)."""
    start = _round_half_up(centre - side / 2.0)
    lo, hi = min(0, extent - side), max(0, extent - side)
    return min(max(start, lo), hi)


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps crops to features. `name` identifies the network (recorded in every result row)."""

    name: str

    def __call__(self, crops_NHWC: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) crops → float64 (N, D) features."""
        ...


class _CleanFidFeatures:
    """A clean-fid feature model (a callable taking a float32 NCHW tensor in [0, 255], clean-fid's custom
    feature-extractor convention) run through `cleanfid.fid.get_batch_features`."""

    def __init__(self, name: str, model: Callable[[Any], Any], device: str, input_size: int | None = None):
        self.name = name
        self._model = model
        self._device = device
        self._input_size = input_size

    def __call__(self, crops_NHWC: np.ndarray) -> np.ndarray:
        import torch
        from cleanfid.fid import get_batch_features

        x = _as_crops(crops_NHWC)
        if self._input_size is not None and x.shape[1:3] != (self._input_size, self._input_size):
            raise ValueError(f"{self.name} needs {self._input_size}×{self._input_size} crops, got {x.shape[1:3]}")
        batch = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float()
        return np.asarray(get_batch_features(batch, self._model, self._device), dtype=np.float64)


def _as_crops(crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    x = np.stack(list(crops)) if not isinstance(crops, np.ndarray) else crops
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3 or x.shape[0] == 0:
        raise ValueError(f"crops must be a non-empty uint8 (N, H, W, 3) array, got {x.dtype} {x.shape}")
    return x


def features(extractor: FeatureExtractor, crops: np.ndarray | Sequence[np.ndarray], batch: int = 32) -> np.ndarray:
    """float64 (N, D) features of N uint8 (H, W, 3) crops (an array or a sequence of equal-size crops), `batch`
    crops per forward pass."""
    x = _as_crops(crops)
    parts = [np.asarray(extractor(x[i : i + batch]), dtype=np.float64) for i in range(0, len(x), batch)]
    return np.concatenate(parts, axis=0)


def inception_weights_path() -> Path:
    """Where clean-fid 0.1.35 looks for (and would otherwise download) its Inception weights: the literal
    "/tmp" (not `tempfile.gettempdir()`; "./" on Windows) + inception-2015-12-05.pt (`cleanfid.features`)."""
    folder = "./" if platform.system() == "Windows" else "/tmp"
    return Path(folder) / INCEPTION_FILE


def _random_conv_model(seed: int, device: str) -> Callable[[Any], Any]:
    import torch
    from torch import nn

    # Constructing layers draws their default init from torch's global RNG; fork_rng keeps the caller's stream
    # untouched, and every weight is then overwritten from a local generator seeded with `seed`.
    with torch.random.fork_rng(devices=[]):
        net = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, RANDOM_CONV_DIM, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Conv2d):
                fan_in = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.1)
    net = net.to(device).eval()

    def model(x):  # clean-fid hands [0, 255] images; the He-initialised convs expect roughly unit-scale inputs
        return net(x / 127.5 - 1.0)

    return model


def resolve_extractor(spec: str) -> str:
    """The concrete spec `load_extractor` would use ("auto" decided here, on this machine), checked without loading
    any weights: ValueError / ExtractorUnavailable (one line). A run pins this before its config is hashed, so every
    worker uses the same extractor and the run name says which."""
    if spec == "auto":
        return "inception" if inception_weights_path().is_file() else "random-conv:0"
    if spec == "inception":
        if not inception_weights_path().is_file():
            load_extractor("inception")  # raises the one-line ExtractorUnavailable
        return spec
    if spec == "random-conv" or spec.startswith("random-conv:"):
        seed_text = spec.partition(":")[2] or "0"
        if not seed_text.lstrip("-").isdigit():
            raise ValueError(f"feature extractor {spec!r}: the seed must be an integer")
        return f"random-conv:{int(seed_text)}"
    raise ValueError(f"unknown feature extractor {spec!r}: use 'inception', 'random-conv:SEED' or 'auto'")


def load_extractor(spec: str, device: str = "cpu") -> FeatureExtractor:
    """A feature extractor from a spec: "inception", "random-conv:SEED" (or "random-conv" = seed 0), or "auto".

    - "inception": clean-fid's Inception-v3 (`cleanfid.fid.build_feature_extractor("clean", device)`), 2048-d.
      Only when its weights are already at `inception_weights_path()`; otherwise `ExtractorUnavailable` (never
      downloads). Needs 299×299 crops.
    - "random-conv:SEED": a fixed random-init conv net (3 conv+ReLU stages, 2 max-pools, global average pool,
      64-d), deterministic given SEED; named "random-conv-v1(seed=SEED,d=64)". Numbers are comparable only
      between rows with the same name.
    - "auto": "inception" when its weights are present, else "random-conv:0".
    """
    if spec == "auto":
        return load_extractor("inception" if inception_weights_path().is_file() else "random-conv:0", device)
    if spec == "inception":
        path = inception_weights_path()
        if not path.is_file():
            raise ExtractorUnavailable(
                f"clean-fid's Inception weights are not at {path}: put {INCEPTION_FILE} there "
                f"(https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{INCEPTION_FILE}) "
                f"or use the extractor 'random-conv:0' offline"
            )
        from cleanfid.fid import build_feature_extractor

        model = build_feature_extractor("clean", device=device, use_dataparallel=False)
        return _CleanFidFeatures("clean-fid-inception-2015-12-05", model, device, input_size=FID_SIZE)
    if spec == "random-conv" or spec.startswith("random-conv:"):
        seed_text = spec.partition(":")[2] or "0"
        try:
            seed = int(seed_text)
        except ValueError:
            raise ValueError(f"feature extractor {spec!r}: the seed must be an integer") from None
        name = f"random-conv-v1(seed={seed},d={RANDOM_CONV_DIM})"
        return _CleanFidFeatures(name, _random_conv_model(seed, device), device)
    raise ValueError(f"unknown feature extractor {spec!r}: use 'inception', 'random-conv:SEED' or 'auto'")
