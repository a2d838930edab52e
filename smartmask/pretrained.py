"""The project's one model loader: a local directory or a Hugging Face hub id, safetensors only, offline-aware.

Every model, processor, tokenizer, scheduler or pipeline the project uses is created here::

    model = load_pretrained(InstructBlipForConditionalGeneration, "Salesforce/instructblip-flan-t5-xl")
    unet = load_pretrained(UNet2DConditionModel, "/models/sd15", subfolder="unet")

- `source` is a local directory (used as is) or a hub id (`org/name`), resolved from the Hugging Face cache.
  Under `HF_HUB_OFFLINE=1` a cached hub id loads from its snapshot directory, and one that is not cached raises
  `ModelNotFound` with one clear line instead of a long Hugging Face traceback; online, `from_pretrained` may
  download it (on a user's machine).
- Weights load from safetensors only: classes whose `from_pretrained` takes `use_safetensors` (transformers and
  diffusers models, diffusers pipelines) always get `use_safetensors=True`, and a directory that holds only
  pickled weights (`pytorch_model.bin`, `*.ckpt`, ...) is refused before anything is opened (`UnsafeWeights`).
  Processors, tokenizers and schedulers take no weights and get no such argument.
- `model_revision(source)` is a short, stable fingerprint that changes when the weights change; it names
  models in the lake (e.g. captioner ids `instructblip:<source>@<revision>`).

This module imports neither torch nor transformers at import time.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
# Files that define a model's behaviour; anything else in a model directory (README.md, .git, images, ...)
# does not enter its revision.
_FINGERPRINT_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".safetensors")
_SMALL_FILE = 8 << 20  # hashed in full below this size; larger files by name, size and sampled chunks
_CHUNK = 64 << 10
_N_CHUNKS = 8
# Classes whose from_pretrained takes `use_safetensors` through **kwargs (so the signature does not show it).
_SAFETENSORS_BASES = {"PreTrainedModel", "_BaseAutoModelClass", "ModelMixin", "DiffusionPipeline"}


class ModelNotFound(ValueError):
    """The model source is neither a usable local directory nor an available hub id. One line."""


class UnsafeWeights(ModelNotFound):
    """The model directory holds only pickled weights; they are never unpickled. One line."""


def is_offline() -> bool:
    """True when Hugging Face downloads are disabled (`HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE`)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - huggingface_hub is a hard dependency of transformers
        return False


def _one_line(exc: BaseException | str, limit: int = 300) -> str:
    text = str(exc).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _hub_cache(cache_dir: str | os.PathLike | None) -> str:
    if cache_dir is not None:
        return os.fspath(cache_dir)
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _local_dir(source: str) -> Path | None:
    p = Path(source).expanduser()
    return p if p.is_dir() else None


def _check_hub_id(source: str) -> None:
    looks_like_path = source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") > 1
    if looks_like_path or not _HUB_ID.match(source):
        raise ModelNotFound(f"model {source!r} is not a local directory (and not a hub id like 'org/name')")


def _cached_snapshot(repo_id: str, revision: str | None = None, cache_dir=None) -> Path | None:
    """The cached snapshot directory of a hub repo, or None when it is not in the cache. Never downloads."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
    except Exception:
        return None
    return Path(path) if path and Path(path).is_dir() else None


def _not_cached(source: str, cache_dir=None) -> ModelNotFound:
    return ModelNotFound(
        f"model {source!r} is not a local directory and is not in the Hugging Face cache "
        f"({_hub_cache(cache_dir)}); HF_HUB_OFFLINE=1 forbids downloading it: pass a local directory "
        f"or put the model in the cache first"
    )


def _takes_use_safetensors(cls: type) -> bool:
    try:
        if "use_safetensors" in inspect.signature(cls.from_pretrained).parameters:
            return True
    except (TypeError, ValueError):
        pass
    return any(base.__name__ in _SAFETENSORS_BASES for base in inspect.getmro(cls))


def _refuse_pickles(folder: Path, source: str) -> None:
    """A folder with pickled weights and no *.safetensors is refused; nothing in it is opened."""
    if not folder.is_dir():
        return
    names = sorted(f.name for f in folder.iterdir() if f.is_file())
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = [n for n in names if n.endswith(_PICKLE_SUFFIXES)]
    if pickles:
        shown = ", ".join(pickles[:3]) + (", ..." if len(pickles) > 3 else "")
        raise UnsafeWeights(
            f"model {source!r} has only pickled weights ({shown}) and no *.safetensors in {folder}; "
            f"pickled weights are never loaded: convert them to safetensors"
        )


def load_pretrained(cls: type[T], source: str | os.PathLike, **kwargs: Any) -> T:
    """`cls.from_pretrained(source, **kwargs)` for a local directory or a hub id, safetensors only.

    Models and pipelines get `use_safetensors=True` (a caller's `use_safetensors=False` is overridden);
    offline, `local_files_only=True` is passed so nothing tries the network. Raises `ModelNotFound` (one line)
    when the source is missing, not cached offline, or `from_pretrained` cannot find its files, and
    `UnsafeWeights` when only pickled weights are there.
    """
    src = os.fspath(source)
    offline = is_offline()
    subfolder = kwargs.get("subfolder") or ""
    root = _local_dir(src)
    target: str = src
    if root is None:
        _check_hub_id(src)
        root = _cached_snapshot(src, kwargs.get("revision"), kwargs.get("cache_dir"))
        if root is None and offline:
            raise _not_cached(src, kwargs.get("cache_dir"))
        if root is not None and offline:
            # Load the cached snapshot as a local directory. Offline, a hub id makes transformers look up files
            # that a repo does not have (e.g. `qformer_tokenizer/config.json`); without the cache's `.no_exist`
            # markers (caches filled by `hf download`) that fails, and InstructBlipProcessor then silently
            # falls back to the LM tokenizer as the Q-Former tokenizer.
            target = str(root)
            kwargs.pop("revision", None)
            kwargs.pop("cache_dir", None)
    if offline:
        kwargs.setdefault("local_files_only", True)
    if _takes_use_safetensors(cls):
        kwargs["use_safetensors"] = True
        if root is not None:
            _refuse_pickles(root / subfolder, src)
    try:
        return cls.from_pretrained(target, **kwargs)
    except OSError as exc:  # missing files, not cached, no network, ...: one line, traceback chained
        raise ModelNotFound(f"model {src!r} could not be loaded as {cls.__name__}: {_one_line(exc)}") from exc


def _fingerprint_dir(root: Path) -> str:
    h = hashlib.sha256()
    files = []
    for f in root.rglob("*"):
        rel = f.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not f.name.endswith(_FINGERPRINT_SUFFIXES):
            continue
        if f.is_file():
            files.append((rel.as_posix(), f))
    if not files:
        raise ModelNotFound(f"model directory {str(root)!r} holds no config or weight files")
    for rel, f in sorted(files):
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with f.open("rb") as fh:
            if size <= _SMALL_FILE and not rel.endswith(".safetensors"):
                h.update(fh.read())
            else:
                # Weights: never read gigabytes. Name and size, plus a few sampled chunks so that retrained
                # weights of the same shape (same size) still change the revision.
                for k in range(_N_CHUNKS):
                    fh.seek(max(size - _CHUNK, 0) * k // (_N_CHUNKS - 1))
                    h.update(fh.read(_CHUNK))
        h.update(b"\0")
    return h.hexdigest()[:16]


def model_revision(
    source: str | os.PathLike, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> str:
    """A short, stable fingerprint of a model that changes when its weights or config change.

    Local directory: 16 hex digits of a sha256 over the bytes of its config/tokenizer files (*.json, *.txt,
    *.model) and, for each *.safetensors file, its name, size and 8 sampled 64 KiB chunks (never the whole
    weights). Hub id: the commit hash of the cached snapshot (online and not cached: the hub's commit hash).
    """
    src = os.fspath(source)
    root = _local_dir(src)
    if root is not None:
        return _fingerprint_dir(root)
    _check_hub_id(src)
    snap = _cached_snapshot(src, revision, cache_dir)
    if snap is not None:
        return snap.name
    if is_offline():
        raise _not_cached(src, cache_dir)
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(src, revision=revision).sha
    except Exception as exc:
        raise ModelNotFound(f"model {src!r}: cannot resolve its revision on the hub: {_one_line(exc)}") from exc
    if not sha:
        raise ModelNotFound(f"model {src!r}: the hub returned no commit hash")
    return sha
