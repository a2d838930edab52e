"""Training the LLaVA planner, one stage per run, executor-agnostic: Ray Train runs `run_planner_training` on
every worker (tasks/train_planner.py), and so can a test, in-process (`smartmask.training.loop.InProcess`).

- `align` (paper A.1, stage 1, Eq. 6): only `multi_modal_projector` trains; the model learns to name the
  labels painted in S_k, i.e. to read our layout colours.
- `instruct` (stage 2, Eq. 7): the projector and the language model train (or, with `lora=True`, the projector
  and LoRA adapters on the language model's attention and MLP projections, through `peft`); the vision tower
  stays frozen. The model learns to answer the next object's box.

The loss is the language model's cross-entropy on the answer's tokens only (`llava.collate` labels the prompt
and padding as ignored). Step s draws its global batch from (seed, s) and rank r takes its slice, as
SmartMask's loop does, so a resumed run repeats no pair. Gradients go through the executor: DDP on GPUs, one
flat all-reduce on CPU workers (`Executor.sync_grads`).

A stage's checkpoint (safetensors, never pickle) holds only what trained: the projector (align), the projector
and language model or the LoRA adapters (instruct), with AdamW's state and `state.json` (stage, step, loss
curve, LoRA settings). `materialize(base, checkpoints)` replays them on the base model, merging LoRA adapters
into the weights, so stage 2 starts from stage 1 and the registered planner is a plain transformers LLaVA.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from smartmask.planner.llava import collate, encode, processor_resolution
from smartmask.planner.llava_data import PlannerPairs, check_stage
from smartmask.pretrained import load_pretrained
from smartmask.training.checkpoint import _load_opt_state, _opt_state
from smartmask.training.loop import Executor

PROJECTOR = "multi_modal_projector"
# LoRA goes on the language model's linear projections (Llama / Mistral / Vicuna names), never the vision
# tower or the projector (which trains in full).
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannerTrainConfig:
    steps: int = 1000
    batch_size: int = 16  # global: split over workers
    # LLaVA-1.5's rates: 1e-3 while only the projector learns, 2e-5 once the language model does (2e-4 for
    # LoRA).
    lr_align: float = 1e-3
    lr_instruct: float = 2e-5
    lr_lora: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 30
    max_grad_norm: float = 1.0
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    lora: bool = False  # instruct stage only
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    split: str = "train"
    min_target_area: int = 16
    threads_per_worker: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def for_tests(cls) -> PlannerTrainConfig:
        """Test-size settings: a few steps of a tiny model, rates high enough to move it."""
        return cls(steps=4, batch_size=4, lr_align=1e-2, lr_instruct=1e-3, lr_lora=1e-2, warmup_steps=1,
                   checkpoint_every=2, log_every=1, threads_per_worker=1)

    def lr(self, stage: str) -> float:
        if check_stage(stage) == "align":
            return self.lr_align
        return self.lr_lora if self.lora else self.lr_instruct


# ---- which weights train, and replaying a stage's checkpoint -----------------------------------------------


def _trains_in_full(name: str, stage: str) -> bool:
    if PROJECTOR in name:
        return True
    return stage == "instruct" and ("language_model" in name or name.startswith("lm_head"))


def prepare(model, stage: str, lora: dict | None):
    """`model` with exactly the stage's weights trainable; wrapped by peft when `lora` (instruct only) is
    given as {"rank", "alpha", "dropout"}."""
    check_stage(stage)
    if stage == "instruct" and lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"],
                                                 lora_dropout=lora["dropout"], target_modules=LORA_TARGETS))
        # peft froze everything but the adapters; the projector trains in full as well.
        for name, p in model.named_parameters():
            if PROJECTOR in name:
                p.requires_grad_(True)
        return model
    for name, p in model.named_parameters():
        p.requires_grad_(_trains_in_full(name, stage))
    return model


def trainable(model) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def finalize(model):
    """A plain transformers model: LoRA adapters merged into their layers, everything frozen again."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _lora(cfg: PlannerTrainConfig, stage: str) -> dict | None:
    if stage != "instruct" or not cfg.lora:
        return None
    return {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout}


def _load_named(named: list[tuple[str, torch.Tensor]], tensors: dict, where: Path) -> None:
    missing = sorted({n for n, _ in named} - tensors.keys())
    if missing:
        raise ValueError(f"checkpoint {where} lacks {len(missing)} trained tensor(s), e.g. {missing[0]}")
    with torch.no_grad():
        for n, p in named:
            p.copy_(tensors[n])


def apply_checkpoint(model, ckpt: Path):
    """`model` with a finished stage's checkpoint applied (LoRA merged); a plain transformers model."""
    state = json.loads((Path(ckpt) / "state.json").read_text())
    model = prepare(model, state["stage"], state.get("lora"))
    _load_named(trainable(model), load_file(Path(ckpt) / "trainable.safetensors"), Path(ckpt))
    return finalize(model)


def materialize(base: str, checkpoints: list[str | Path] = ()):
    """The base LLaVA (through `load_pretrained`: safetensors only), the stages' checkpoints replayed."""
    from transformers import LlavaForConditionalGeneration

    model = load_pretrained(LlavaForConditionalGeneration, base, dtype=torch.float32)
    for ckpt in checkpoints:
        model = apply_checkpoint(model, Path(ckpt))
    return model


def load_processor(base: str):
    from transformers import LlavaProcessor

    return load_pretrained(LlavaProcessor, base)


def save_state(d: Path, named, opt, state: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    save_file({n: p.detach().cpu().contiguous() for n, p in named}, str(d / "trainable.safetensors"))
    tensors, scalars = _opt_state(opt, [p for _, p in named])
    save_file(tensors or {"_empty": torch.zeros(1)}, str(d / "optimizer.safetensors"))
    (d / "state.json").write_text(json.dumps(state | {"opt_scalars": scalars}))
    return d


# ---- the per-worker loop -----------------------------------------------------------------------------------


class _Loss(torch.nn.Module):
    """DDP syncs gradients only through forward(): the model's answer-token loss behind one."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(**batch).loss


def run_planner_training(*, cfg: PlannerTrainConfig, stage: str, base: str, init: list[str], lake: Path,
                         dataset: str, dataset_version: str, ex: Executor, work_dir: Path) -> dict:
    """Train `stage` for `cfg.steps` from `base` with the earlier stages' checkpoints `init` replayed; returns
    the last metrics (step, loss, stage, losses). Rank 0 writes the checkpoints; every rank reports them."""
    check_stage(stage)
    if cfg.threads_per_worker:
        torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed)  # identical LoRA initialisation on every rank
    device = ex.device()
    processor = load_processor(base)
    lora = _lora(cfg, stage)
    model = prepare(materialize(base, init), stage, lora).to(device)
    model.train()
    named = trainable(model)
    params = [p for _, p in named]
    opt = torch.optim.AdamW(params, lr=cfg.lr(stage), weight_decay=cfg.weight_decay)
    start, losses = 0, []
    resume = ex.resume_dir()
    if resume is not None:
        state = json.loads((resume / "state.json").read_text())
        _load_named(named, load_file(resume / "trainable.safetensors"), resume)
        tensors = {k: v for k, v in load_file(resume / "optimizer.safetensors").items() if k != "_empty"}
        _load_opt_state(opt, params, tensors, state["opt_scalars"])
        start, losses = int(state["step"]), list(state["losses"])
    loss_module = ex.wrap(_Loss(model))
    pairs = PlannerPairs.from_lake(lake, dataset, dataset_version, stage,
                                   resolution=processor_resolution(processor), seed=cfg.seed, split=cfg.split,
                                   min_target_area=cfg.min_target_area)
    per_rank = cfg.batch_size // ex.world_size
    if per_rank < 1 or per_rank * ex.world_size != cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} must split evenly over {ex.world_size} workers")
    tok = processor.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    state_base = {"stage": stage, "lora": lora, "base": base, "init": [str(p) for p in init],
                  "dataset": dataset, "dataset_version": dataset_version, "config": asdict(cfg)}
    metrics: dict = {"step": start, "stage": stage, "losses": losses}
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = cfg.lr(stage) * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        global_idx = np.random.default_rng([cfg.seed, step]).integers(0, len(pairs), size=cfg.batch_size)
        mine = global_idx[ex.rank * per_rank : (ex.rank + 1) * per_rank]
        items = [encode(processor, e.image, e.prompt, e.answer, eos=True) for e in pairs.examples(mine)]
        batch = {k: v.to(device) for k, v in collate(items, pad_id).items()}
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_module(batch)
        loss.backward()
        ex.sync_grads(params)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        done, value = step + 1, float(loss.detach())
        if done % cfg.log_every == 0 or done == cfg.steps:
            losses.append([done, value])
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            metrics = {"step": done, "loss": value, "stage": stage, "losses": list(losses)}
            ckpt = None
            if ex.rank == 0:
                ckpt = save_state(work_dir / f"ckpt-{stage}-{done:08d}", named, opt,
                                  state_base | {"step": done, "losses": losses})
            ex.report(metrics, ckpt)
    if start >= cfg.steps:  # a rerun of a finished stage: say so again, or the runner sees no result at all
        ex.report(metrics | {"loss": losses[-1][1] if losses else None},
                  ex.resume_dir() if ex.rank == 0 else None)
    return metrics
