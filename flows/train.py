"""Flow `train`: resolve the dataset version, train SmartMask with Ray Train, register the model version.

`python -m flows.train --dataset synth --preset tiny --workers 2`. Ray starts here (local by default, or joins
`--ray-address`). Ray Train's files live under `<lake>/_ray/train/<run id>/`; the loss curve goes to
`<lake>/runs/kind=train/run=<run id>/metrics/`. Rerunning with the same `--run-id` resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import time

from prefect import flow

from flows.ray_runtime import ray_session
from smartmask.lake.layout import lake_root
from smartmask.model.config import ModelConfig
from smartmask.registry import resolve_dataset
from smartmask.training.loop import TrainConfig, config_dict
from smartmask.training.samples import SampleConfig
from tasks.train import fit_task, register_task


def _one_percent(lake, name: str, version: str) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from smartmask.lake.layout import dataset_dir

    t = pq.read_table(dataset_dir(lake, name, version) / "images", columns=["width", "height"])
    areas = pc.multiply(pc.cast(t.column("width"), "int64"), pc.cast(t.column("height"), "int64"))
    return max(16, int(0.01 * pc.approximate_median(areas).as_py())) if t.num_rows else 16


@flow(name="train", log_prints=True)
def train(dataset: str, preset: str = "tiny", base_model: str | None = None, workers: int = 1, gpu: bool = False,
          lake: str | None = None, run_id: str | None = None, steps: int | None = None,
          time_budget_s: float | None = None, batch_size: int | None = None, ray_address: str | None = None,
          checkpoint_every: int | None = None, max_failures: int = 3,
          guidance_mix: tuple[float, float, float, float] | None = None) -> dict:
    root = lake_root(lake)
    name, version = resolve_dataset(root, dataset)
    if preset == "tiny":
        # At 32x32 an object under ~1% of the image is a few pixels: no shape left to learn, and its IoU is noise.
        # Measured on the demo world (300 steps) against a box inflated to every grid cell it touches (the old,
        # unfair baseline): targets >= 1% gave held-out IoU 0.49 vs 0.41; with every target (>= 16 px) 0.33 vs
        # 0.35. Against the tight box (`box_on_grid`), targets >= 1%: 0.50 vs 0.54.
        # Box-heavy guidance mix (none / box / blob / scribble = 0.1 / 0.6 / 0.15 / 0.15): a box is the control
        # users give most (`suggest --bbox`), and a few minutes of CPU training cannot learn all four equally well.
        # At an equal 150 s budget, held-out box-guided IoU 0.511 vs 0.478 with the even mix; with the tiny
        # preset's high-noise timestep skew as well, 0.557 vs the tight box's 0.543 (4 seeds x 91 samples).
        model_cfg = ModelConfig.tiny()
        sample_cfg = dataclasses.replace(SampleConfig.tiny(), min_target_area=_one_percent(root, name, version),
                                         guidance_mix=(0.1, 0.6, 0.15, 0.15))
        train_cfg = TrainConfig(steps=2000, batch_size=32, lr=1e-3, warmup_steps=20, checkpoint_every=50,
                                val_every=50, ema_decay=0.99)
    elif preset == "sd15":
        if not base_model:
            raise ValueError("--preset sd15 needs --base-model (a Stable Diffusion 1.5 directory or hub id)")
        model_cfg = ModelConfig.sd15(base_model)
        sample_cfg, train_cfg = SampleConfig(resolution=model_cfg.resolution), TrainConfig(lr=1e-5)
    else:
        raise ValueError(f"unknown preset {preset!r}: expected tiny or sd15")
    if guidance_mix is not None:  # none / box / blob / scribble
        sample_cfg = dataclasses.replace(sample_cfg, guidance_mix=tuple(guidance_mix))
    overrides = {k: v for k, v in {"steps": steps, "time_budget_s": time_budget_s, "batch_size": batch_size,
                                   "checkpoint_every": checkpoint_every, "val_every": checkpoint_every}.items()
                 if v is not None}
    if not gpu:  # share this machine's cores between the workers instead of oversubscribing them
        overrides["threads_per_worker"] = max(1, (os.cpu_count() or 1) // workers)
    train_cfg = dataclasses.replace(train_cfg, **overrides)
    run_id = run_id or f"{name}-{version[:8]}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = root / "runs" / "kind=train" / f"run={run_id}"
    config = config_dict(model_cfg, sample_cfg, train_cfg) | {
        "lake": str(root), "dataset": name, "dataset_version": version, "run_dir": str(run_dir)}
    with ray_session(address=ray_address):
        out = fit_task(config, workers, gpu, root / "_ray" / "train", run_id, max_failures)
    model_version = register_task(root, out["checkpoint"], config, name, version, run_id, out["metrics"])
    print(f"model {model_version} from dataset {name}@{version} (run {run_id}): {out['metrics']}")
    return {"model_version": model_version, "run_id": run_id, "dataset": name, "dataset_version": version,
            "metrics": out["metrics"]}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--base-model")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--lake")
    ap.add_argument("--run-id")
    ap.add_argument("--steps", type=int)
    a = ap.parse_args()
    print(train(a.dataset, a.preset, a.base_model, a.workers, a.gpu, a.lake, a.run_id, a.steps)["model_version"])
