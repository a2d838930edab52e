"""Benchmark: captioning throughput.

    ./dev sh python bench/bench_captions.py [--scenes 1000]                 # template captioner, one core
    ./dev sh python bench/bench_captions.py --instructblip [--model DIR]    # + InstructBLIP batch 1 vs 32

Template: images/s of `template_captions` over a synthetic dataset's layers table, on one core (target >= 2,000/s).
InstructBLIP (meant for a GPU): images/s at batch 1 and batch 32 through `InstructBlipCaptioner`, the same class
Ray Data runs, with a fixed number of generated tokens so both batch sizes do the same work; the ratio is the
batched path's speed-up (target >= 4x on a GPU). Without `--model` it builds a random-init InstructBLIP with the
default (full-size) configuration, since no weights can be downloaded; `--tiny` uses the tiny test model (a CPU
smoke run of the same code, not a measurement). Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _results import record  # noqa: E402  (bench/ is on sys.path: the script's own folder)


def bench_template(scenes: int) -> dict:
    import pyarrow.parquet as pq

    from smartmask.captioning.stage import template_captions
    from smartmask.config import RebuildConfig, SynthConfig
    from smartmask.lake.paths import dataset_dir
    from smartmask.rebuild import rebuild
    from smartmask.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate(world, scenes, 0, SynthConfig(), workers=os.cpu_count())
        m = rebuild(f"cocoa:{world / 'annotations.json'}", world / "images", "b", Path(tmp) / "lake", RebuildConfig())
        layers = pq.read_table(dataset_dir(Path(tmp) / "lake", "b", m["version"]) / "layers")
    template_captions(layers.slice(0, 500), "template@1")  # warm-up
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = template_captions(layers, "template@1")
        runs.append(out.num_rows / (time.perf_counter() - t0))
    ips = sorted(runs)[1]
    print(f"template captioner: {out.num_rows} images, median of 3 runs {ips:.0f} images/s on one core "
          f"(runs: {', '.join(f'{r:.0f}' for r in runs)}; target >= 2000)")
    return {"template_images_per_s": round(ips, 1), "template_images": out.num_rows}


def _random_full_instructblip(out: Path) -> Path:
    """Full-size InstructBLIP architecture, random weights (nothing can be downloaded), with the tiny test
    tokenizers re-sized to its image size and query count: token ids only need to fall inside the vocabulary."""
    import torch
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration, InstructBlipProcessor

    sys.path.insert(0, str(HERE.parent / "tests"))
    from tiny_models import build_tiny_instructblip

    proc = InstructBlipProcessor.from_pretrained(build_tiny_instructblip(out / "tiny"))
    torch.manual_seed(0)
    cfg = InstructBlipConfig()  # defaults: ViT-g vision tower, BERT-base Q-Former, OPT text model
    cfg.image_token_index = proc.tokenizer.convert_tokens_to_ids("<image>")
    size = cfg.vision_config.image_size
    proc.image_processor.size = {"height": size, "width": size}
    proc.num_query_tokens = cfg.num_query_tokens
    InstructBlipForConditionalGeneration(cfg).save_pretrained(out / "full")
    proc.save_pretrained(out / "full")
    return out / "full"


def bench_instructblip(model: str | None, tiny: bool, n_images: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from smartmask.captioning.instructblip import InstructBlipCaptioner

    tmp = Path(tempfile.mkdtemp(prefix="bench-blip-"))
    atexit.register(shutil.rmtree, tmp, True)  # several GB of weights/checkpoints otherwise left in /tmp
    label = model or ("tiny" if tiny else "random-init full-size (default InstructBlipConfig)")
    if model is None:
        if tiny:
            sys.path.insert(0, str(HERE.parent / "tests"))
            from tiny_models import build_tiny_instructblip

            model = str(build_tiny_instructblip(tmp / "tiny"))
        else:
            model = str(_random_full_instructblip(tmp))
    rng = np.random.default_rng(0)
    uris = []
    for i in range(n_images):
        p = tmp / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(p)
        uris.append(str(p))
    cap = InstructBlipCaptioner(model=model, prompt="Describe this scene in one detailed sentence.",
                                max_new_tokens=30)
    gen = cap.model.generation_config
    gen.min_new_tokens = 30  # equal work per image at both batch sizes, whatever the random weights emit

    def run(bs: int) -> float:
        cap({"image_id": np.array(["w"] * bs), "uri": np.array(uris[:bs])})  # warm-up at this shape
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(0, n_images, bs):
            chunk = uris[s : s + bs]
            cap({"image_id": np.array([str(i) for i in range(len(chunk))]), "uri": np.array(chunk)})
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return n_images / (time.perf_counter() - t0)

    b1, b32 = run(1), run(32)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"instructblip ({label}) on {dev}: "
          f"batch 1 {b1:.2f} images/s, batch 32 {b32:.2f} images/s, ratio {b32 / b1:.2f} (target >= 4 on a GPU)")
    return {"device": dev, "blip_batch1_images_per_s": round(b1, 3), "blip_batch32_images_per_s": round(b32, 3),
            "blip_ratio": round(b32 / b1, 3), "blip_model": label}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=1000)
    ap.add_argument("--instructblip", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--images", type=int, default=64)
    a = ap.parse_args()
    row = {"bench": "captions", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    row |= bench_template(a.scenes)
    if a.instructblip:
        row |= bench_instructblip(a.model, a.tiny, a.images)
    record("bench_captions", row)

if __name__ == "__main__":
    main()
