"""Training checkpoints, safetensors only (never pickle): trainable weights, their EMA, AdamW's state as flat tensors
plus JSON scalars, and the step and training seconds reached. Ray Train copies the folder into the run's storage;
`load_checkpoint` restores a resumed or replacement worker from it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from smartmask.model.network import SmartMask


def trainable_params(model: SmartMask) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _opt_state(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> tuple[dict, dict]:
    """AdamW state as flat tensors (safetensors) + scalars (JSON): never pickle."""
    tensors, scalars = {}, {}
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            if torch.is_tensor(v) and v.ndim > 0:
                tensors[f"{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{i}.{k}"] = float(v)
    return tensors, scalars


def _load_opt_state(opt: torch.optim.Optimizer, params: list[torch.Tensor], tensors: dict, scalars: dict) -> None:
    # A fused AdamW keeps its step counters on the parameters' device; the for-loop and foreach ones on the CPU.
    on_param_device = any(g.get("fused") or g.get("capturable") for g in opt.param_groups)
    for i, p in enumerate(params):
        st = {k.split(".", 1)[1]: v.to(p.device) for k, v in tensors.items() if k.split(".", 1)[0] == str(i)}
        st |= {k.split(".", 1)[1]: torch.tensor(v, dtype=torch.float32, device=p.device if on_param_device else None)
               for k, v in scalars.items() if k.split(".", 1)[0] == str(i)}
        if st:
            opt.state[p] = st


def save_checkpoint(d: Path, model: SmartMask, ema: list[torch.Tensor], opt, step: int, extra: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    named = trainable_params(model)
    save_file({n: p.detach().cpu().contiguous() for n, p in named}, d / "trainable.safetensors")
    save_file({n: e.detach().cpu().contiguous() for (n, _), e in zip(named, ema, strict=True)}, d / "ema.safetensors")
    tensors, scalars = _opt_state(opt, [p for _, p in named])
    save_file(tensors or {"_empty": torch.zeros(1)}, d / "optimizer.safetensors")
    (d / "state.json").write_text(json.dumps({"step": step, "opt_scalars": scalars, **extra}))
    return d


def load_checkpoint(d: Path, model: SmartMask, ema: list[torch.Tensor], opt) -> tuple[int, float]:
    """Weights, EMA and optimizer state from `d`; returns (step, training seconds so far)."""
    trainable = load_file(d / "trainable.safetensors")
    ema_w = load_file(d / "ema.safetensors")
    named = trainable_params(model)
    with torch.no_grad():
        for (n, p), e in zip(named, ema, strict=True):
            p.copy_(trainable[n])
            e.copy_(ema_w[n])
    state = json.loads((d / "state.json").read_text())
    tensors = {k: v for k, v in load_file(d / "optimizer.safetensors").items() if k != "_empty"}
    _load_opt_state(opt, [p for _, p in named], tensors, state["opt_scalars"])
    return int(state["step"]), float(state.get("train_seconds", 0.0))  # older checkpoints did not record time
