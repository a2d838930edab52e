"""Mask suggestions from a trained SmartMask: N seeds in one batch, two-scale classifier-free guidance.

Guidance follows InstructPix2Pix (layout ↔ its input image, text ↔ its instruction):

    out = o(∅,∅) + s_L · (o(L,∅) − o(∅,∅)) + s_T · (o(L,T) − o(L,∅))

where o is the U-Net's output and ∅ the dropped condition ("" texts / zero layout features). The three branches
run in ONE U-Net call per step (batch 3·B·n). The combination's weights sum to 1 (1 − s_L, s_L − s_T, s_T), and
x0, epsilon and v are affine in each other for fixed (x_t, t), so guiding the raw output gives the same result in
every parameterisation: for x0-prediction ("sample") it is applied to the predicted x0 and the scheduler is told
`prediction_type="sample"`.
"""

from __future__ import annotations

import torch

from smartmask.model.network import SmartMask

SCHEDULERS = ("dpm", "ddim")

# Default guidance scales, chosen on the training split (never on held-out samples): both sit on the plateau of
# mask IoU against the scale (docs/experiments.md, "Guidance scales").
LAYOUT_SCALE = 2.0
TEXT_SCALE = 2.0


def make_scheduler(model: SmartMask, kind: str = "dpm"):
    """A DDIM or DPM-Solver++ (2nd order) sampler built from the model's training noise schedule.

    "trailing" timestep spacing starts at the last training timestep (pure noise), which matters with few steps
    and x0-prediction: the first step decides the whole layout of the mask. Pixel-space models clip the
    predicted x0 to [-1, 1] (DDIM `clip_sample`; DPM-Solver++ thresholding with `sample_max_value=1`, which
    reduces to the same clip); latent-space models do not.
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    base = model.noise_scheduler.config
    clip = bool(model.config.clip_sample)
    if kind == "ddim":
        return DDIMScheduler.from_config(
            base, timestep_spacing="trailing", clip_sample=clip, clip_sample_range=1.0, set_alpha_to_one=True,
            steps_offset=0,
        )
    if kind == "dpm":
        return DPMSolverMultistepScheduler.from_config(
            base, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
            thresholding=clip, sample_max_value=1.0, steps_offset=0,
        )
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")


def scheduler_kind(sched) -> str:
    from diffusers import DDIMScheduler

    return "ddim" if isinstance(sched, DDIMScheduler) else "dpm"


def initial_noise(model: SmartMask, batch: int, n: int, seed: int) -> torch.Tensor:
    """(batch*n, C, r, r): suggestion j of every item starts from the noise of seed `seed + j`.

    Drawn on the CPU, so a (model, layout, seed) gives the same suggestions on any device and in any batch
    composition (bulk jobs can be resumed and re-split without changing results).
    """
    c, r = model.latent_channels, model.latent_size
    per_seed = [torch.randn((c, r, r), generator=torch.Generator("cpu").manual_seed(seed + j)) for j in range(n)]
    return torch.stack(per_seed * batch)  # item-major: row b*n + j is item b, suggestion j


@torch.inference_mode()
def sample_masks(
    model: SmartMask,
    layout_BCHW: torch.Tensor,
    obj: list[str],
    context: list[str],
    n: int = 1,
    layout_scale: float = LAYOUT_SCALE,
    text_scale: float = TEXT_SCALE,
    steps: int = 20,
    scheduler: str = "dpm",
    seed: int = 0,
    threshold: float = 0.5,
    return_probs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """N mask suggestions per layout: bool (B, n, R, R) (and, with `return_probs`, the soft masks in [0, 1]).

    layout_BCHW: guided layouts S~ (B, C, R, R) in [0, 1] at the model's resolution (C = `layout_in_channels`: 3, or 6
    with the focus view); obj / context: B texts each.
    Suggestion j uses seed `seed + j` (see `initial_noise`).
    """
    R = model.config.resolution
    C = model.config.layout_in_channels
    if layout_BCHW.ndim != 4 or tuple(layout_BCHW.shape[1:]) != (C, R, R):
        raise ValueError(f"layout must be (B, {C}, {R}, {R}), got {tuple(layout_BCHW.shape)}")
    B = layout_BCHW.shape[0]
    if len(obj) != B or len(context) != B:
        raise ValueError(f"{B} layouts but {len(obj)} object texts and {len(context)} contexts")
    if n < 1 or steps < 1:
        raise ValueError("n and steps must be at least 1")
    sched = make_scheduler(model, scheduler)
    was_training = model.training
    model.eval()
    try:
        return _sample(model, sched, layout_BCHW, obj, context, n, layout_scale, text_scale, steps, seed,
                       threshold, return_probs)
    finally:
        model.train(was_training)  # a validation pass inside training leaves the model as it found it


def _sample(model, sched, layout_BCHW, obj, context, n, layout_scale, text_scale, steps, seed, threshold,
            return_probs):
    B, R = layout_BCHW.shape[0], model.config.resolution
    dev, dtype = model.device, model.dtype

    text_cond = model.encode_text(list(obj), list(context)).repeat_interleave(n, dim=0)
    text_null = model.encode_text([""] * B, [""] * B).repeat_interleave(n, dim=0)
    feats = model.encode_layout(layout_BCHW).repeat_interleave(n, dim=0)
    feats_null = torch.zeros_like(feats)
    # Branch order: (∅,∅), (L,∅), (L,T).
    text_3 = torch.cat([text_null, text_null, text_cond])
    feats_3 = torch.cat([feats_null, feats, feats])

    sched.set_timesteps(steps, device=dev)
    # DDIM by default derives its ε from the UNclipped x0 while stepping with the clipped one, and guided x0 often
    # leaves [-1, 1]: the two drift apart with more steps. Recomputing ε from the clipped x0 is what DPM-Solver++'s
    # data prediction does, so both solve the same ODE (docs/experiments.md, "Solvers").
    step_kw = {"use_clipped_model_output": True} if scheduler_kind(sched) == "ddim" else {}
    x = initial_noise(model, B, n, seed).to(dev, dtype) * sched.init_noise_sigma
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        out = model.predict(torch.cat([x_in] * 3), t, feats_3, text_3)
        o_uu, o_lu, o_lt = out.chunk(3)
        guided = o_uu + layout_scale * (o_lu - o_uu) + text_scale * (o_lt - o_lu)
        x = sched.step(guided, t, x, **step_kw).prev_sample

    probs = model.decode_mask(x).reshape(B, n, R, R)
    masks = probs > threshold
    return (masks, probs) if return_probs else masks
