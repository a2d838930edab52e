"""The stages of a bulk insertion, each a function (or a class built once per worker) over a batch of work rows.

    read → decode and check → layout → suggest → insert → write

A work row (`WORK` schema) carries the canonical item and whatever the stages so far produced: decoded pixels
as raw bytes (H, W, 3 uint8), the layout and the suggestions as JSON with RLE masks. A row that fails a stage
becomes `status="rejected"` with (stage, reason, detail) and passes through the remaining stages untouched, so
every catalog row comes out of `write` as exactly one `insert_items` row. The same functions run in a test, in
one process (`run_inline`, the benchmark's baseline) and as Ray Data tasks and actors (`tasks/bulk.py`).

Each model stage builds its `SmartMaskPipeline` inside the worker from plain arguments (lake, config dict), so
each model loads once per actor and nothing heavy is pickled. `AllStages` chains every stage in one worker (the
`fused` placement; see `smartmask.bulk.config`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from smartmask import masks
from smartmask.bulk.access import Access, AccessDenied, file_sha256
from smartmask.bulk.catalog import Reject, item_key, iter_rows, normalise, reject_key
from smartmask.bulk.config import BulkConfig, threads_for
from smartmask.bulk.rows import WORK, add_timing, image_of, reject_row, unpack_bits, work_table  # noqa: F401  (re-exported)
from smartmask.bulk.write import write_rows
from smartmask.inference.errors import BadInput
from smartmask.inference.layout import Region, SceneLayout

# ----------------------------------------------------------------------------------------------------- read


def read_catalog(catalog: Path, cfg: BulkConfig, done: set[str], batch_rows: int = 64) -> Iterator[list[dict]]:
    """Work rows for every catalog row whose key is not in `done` (rows already written by an earlier attempt
    of this run). A row repeating an earlier one (same item key) is rejected as `duplicate_item`."""
    defaults = {"n_suggestions": cfg.n_suggestions, "seed": cfg.seed, "max_n_suggestions": cfg.max_n_suggestions}
    chash = cfg.config_hash()
    seen: dict[str, int] = {}  # item key → rows seen with it (the reader's memory: ~100 bytes per item)
    batch: list[dict] = []
    for line, raw, bad in iter_rows(catalog):
        item = None
        if bad is None:
            item, bad = normalise(raw, defaults)
        if item is not None:
            key = item_key(item, chash)
            n = seen.get(key, 0)
            seen[key] = n + 1
            if n:
                bad = Reject("read", "duplicate_item", f"the same item as an earlier row (item key {key})")
                key = reject_key(line, {"duplicate_of": key, "occurrence": n}, bad.reason)
        else:
            key = reject_key(line, raw, bad.reason)
        if key in done:
            continue
        row = {"row_key": key, "line": line, "status": "ok", "timings": "{}",
               "item": json.dumps(item if item is not None else {"raw": _raw_text(raw)}, sort_keys=True)}
        if bad is not None:
            reject_row(row, bad.stage, bad.reason, bad.detail)
        batch.append(row)
        if len(batch) >= batch_rows:
            yield batch
            batch = []
    if batch:
        yield batch


def _raw_text(raw: dict | None) -> str | None:
    return None if raw is None else json.dumps(raw, default=str)[:2000]


# --------------------------------------------------------------------------------------------- decode, check


def decode_rows(rows: list[dict], cfg: BulkConfig, catalog_dir: str) -> list[dict]:
    """Read each image from an allowed place, decode it within the pixel limit, check the guidance against it."""
    from smartmask.inference.images import load_image, load_mask
    from smartmask.inference.suggest import Control

    access = Access.of(cfg.allow_roots, cfg.allow_schemes, catalog_dir)
    for row in rows:
        if row["status"] != "ok":
            continue
        t0 = time.perf_counter()
        item = json.loads(row["item"])
        try:
            with access.local_copy(item["image_uri"]) as path:
                if not path.is_file():
                    raise BadInput(f"image not found: {item['image_uri']}", "image")
                pixels = load_image(path, cfg.max_image_pixels)
                sha = file_sha256(path)
        except AccessDenied as e:
            reject_row(row, "decode", e.reason, str(e))
            continue
        except BadInput as e:
            reject_row(row, "decode", _image_reason(str(e)), str(e))
            continue
        except Exception as e:  # noqa: BLE001 - a remote read that failed (network, a missing fsspec back end, ...)
            reject_row(row, "decode", "image_unreadable", f"{type(e).__name__}: {e}")
            continue
        H, W = pixels.shape[:2]
        g = item["guidance"]
        try:
            scribble = None
            if g["kind"] == "scribble":
                with access.local_copy(g["uri"]) as spath:
                    scribble = load_mask(spath, (H, W), cfg.max_image_pixels)
            Control.parse(H, W, bbox=",".join(map(repr, g["bbox"])) if g["kind"] == "box" else None,
                          point=",".join(map(repr, g["point"])) if g["kind"] == "point" else None,
                          scribble_HW=scribble)
        except AccessDenied as e:
            reject_row(row, "decode", e.reason, f"scribble: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - a remote scribble that could not be read
            if not isinstance(e, BadInput):
                reject_row(row, "decode", "bad_guidance", f"scribble: {type(e).__name__}: {e}")
                continue
            reason = {"box": "box_outside_image", "point": "point_outside_image"}.get(e.field, "bad_guidance")
            if e.field in ("box", "point") and "outside" not in str(e):
                reason = "bad_guidance"
            reject_row(row, "decode", reason, str(e))
            continue
        alpha = getattr(pixels, "alpha", None)
        row.update(image_sha256=sha, height=H, width=W, image=np.ascontiguousarray(pixels).tobytes(),
                   alpha=None if alpha is None else alpha.tobytes(),
                   scribble=None if scribble is None else np.packbits(scribble).tobytes())
        add_timing(row, "decode", time.perf_counter() - t0)
    return rows


def _image_reason(message: str) -> str:
    if "exceeds the limit" in message or "decompression bomb" in message:
        return "image_too_large"
    if message.startswith("image not found"):
        return "image_not_found"
    return "image_unreadable"


def control_of(row: dict, item: dict):
    from smartmask.inference.suggest import Control

    g, H, W = item["guidance"], row["height"], row["width"]
    if g["kind"] == "box":
        return Control("box", box=tuple(g["bbox"]))
    if g["kind"] == "point":
        p = g["point"]
        return Control("point", point=(p[0], p[1], p[2] if len(p) == 3 else None))
    if g["kind"] == "scribble":
        return Control("scribble", scribble_HW=unpack_bits(row["scribble"], H, W))
    return Control("none")


# ----------------------------------------------------------------------------------------------- model stages


class _ModelStage:
    """Builds the pipeline once (per actor), then maps batches. Subclasses set `stage` and `_one`."""

    stage = ""

    def __init__(self, lake: str, config: dict):
        import torch

        from smartmask.inference.pipeline import SmartMaskPipeline

        self.cfg = BulkConfig.from_dict(config)
        torch.set_num_threads(threads_for(self.cfg.stage(self.stage).num_cpus))
        self.pipe = self._build(SmartMaskPipeline, Path(lake))

    def _build(self, cls, lake: Path):
        return cls.from_lake(lake, self.cfg.model_version, segmenter=self.cfg.segmenter, device=self.cfg.device)

    def __call__(self, rows: list[dict]) -> list[dict]:
        for row in rows:
            if row["status"] != "ok":
                continue
            t0 = time.perf_counter()
            try:
                self._one(row, json.loads(row["item"]))
            except BadInput as e:
                reject_row(row, self.stage, self.bad_input_reason, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - one item's model failure is that item's reject, not the job's
                reject_row(row, self.stage, self.failure_reason, f"{type(e).__name__}: {e}")
                continue
            add_timing(row, self.stage, time.perf_counter() - t0)
        return rows


class LayoutStage(_ModelStage):
    """S_I per image: the annotated layout (`layout_from`) or the segmenter's."""

    stage, bad_input_reason, failure_reason = "layout", "layout_failed", "segmenter_failed"

    def _build(self, cls, lake: Path):
        return cls.from_lake(lake, self.cfg.model_version, segmenter=self.cfg.segmenter, device=self.cfg.device,
                             layout_only=True)

    def _one(self, row: dict, item: dict) -> None:
        from smartmask.registry import NotFound

        try:
            scene = self.pipe.layout(image_of(row) if not item["layout_from"] else None, item["layout_from"])
        except NotFound as e:  # the dataset of a layout_from reference is not in the lake
            raise BadInput(str(e), "layout") from None
        if (scene.height, scene.width) != (row["height"], row["width"]):
            raise BadInput(f"layout {item['layout_from']} is {scene.width}x{scene.height}, the image "
                           f"{row['width']}x{row['height']}", "layout")
        row["layout"] = scene_to_json(scene)


class SuggestStage(_ModelStage):
    """N ranked suggestions per item; the chosen one is the best non-empty."""

    stage, bad_input_reason, failure_reason = "suggest", "suggest_failed", "model_failed"

    def _one(self, row: dict, item: dict) -> None:
        from smartmask.inference.suggest import SuggestConfig

        cfg = SuggestConfig(n=item["n_suggestions"], steps=self.cfg.steps, scheduler=self.cfg.scheduler,
                            seed=item["seed"], fit_box=self.cfg.fit_box)
        found = self.pipe.suggest(item["object"], item["context"], scene=scene_from_json(row["layout"]),
                                  control=control_of(row, item), config=cfg)
        sugg = [s.record() | {"rle": masks.encode(s.mask_HW)["counts"]} for s in found.result.suggestions]
        row["suggestions"] = json.dumps(sugg)
        chosen = next((s["rank"] for s in sugg if not s["empty"]), None)
        if chosen is None:
            raise BadInput(f"all {len(sugg)} suggestion(s) are empty: the model placed no {item['object']}", "pick")
        row["chosen_rank"] = chosen
        row["layout"] = None  # not needed downstream: keep the rows that travel small


class InsertStage(_ModelStage):
    """The inpainter inside the chosen mask; outside the dilated mask the pixels stay the input's."""

    stage, bad_input_reason, failure_reason = "insert", "insert_failed", "inpainter_failed"

    def _build(self, cls, lake: Path):
        pipe = cls.from_lake(lake, with_model=False, inpainter=self.cfg.inpainter, inpaint_config=self.cfg.inpaint,
                             device=self.cfg.device)
        pipe.inpainter  # noqa: B018  (loaded now: a broken inpainter fails the actor, not every item)
        return pipe

    def _one(self, row: dict, item: dict) -> None:
        H, W = row["height"], row["width"]
        chosen = json.loads(row["suggestions"])[row["chosen_rank"] - 1]
        mask = masks.decode({"size": [H, W], "counts": chosen["rle"]}).astype(bool)
        alpha = None if row["alpha"] is None else np.frombuffer(row["alpha"], np.uint8).reshape(H, W)
        done = self.pipe.insert(item["object"], item["context"], image=image_of(row), mask=mask,
                                mask_source=f"smartmask:{self.cfg.model_version}#{chosen['rank']}",
                                seed=item["seed"], alpha=alpha)
        row.update(inserted=np.ascontiguousarray(done.image).tobytes(),
                   inserted_alpha=None if done.alpha is None else done.alpha.tobytes(),
                   dilated=np.packbits(done.dilated).tobytes(), insert=json.dumps(done.result.record()))


def scene_to_json(scene: SceneLayout) -> str:
    return json.dumps({"h": scene.height, "w": scene.width, "source": scene.source, "regions": [
        {"label": r.label, "source_label": r.source_label, "is_stuff": r.is_stuff, "score": r.score,
         "rle": masks.encode(r.mask_HW)["counts"]} for r in scene.regions]})


def scene_from_json(text: str) -> SceneLayout:
    d = json.loads(text)
    H, W = d["h"], d["w"]
    regions = tuple(Region(r["label"], r["source_label"], masks.decode({"size": [H, W], "counts": r["rle"]})
                           .astype(bool), r["is_stuff"], r["score"]) for r in d["regions"])
    return SceneLayout(H, W, regions, d["source"])


class AllStages:
    """decode → layout → suggest → insert → write in one worker (the `fused` placement: one Ray actor per pipeline
    replica, and the in-process loop): work rows in, `insert_items` rows out. Each model loads once."""

    def __init__(self, lake: str, config: dict, catalog_dir: str, run_dir: str, run: str):
        self.cfg, self.config = BulkConfig.from_dict(config), config
        self.catalog_dir, self.run_dir, self.run = catalog_dir, Path(run_dir), run
        self.stages: list[Callable[[list[dict]], list[dict]]] = [
            LayoutStage(lake, config), SuggestStage(lake, config), InsertStage(lake, config)]

    def __call__(self, rows: list[dict]) -> list[dict]:
        rows = decode_rows(rows, self.cfg, self.catalog_dir)
        for stage in self.stages:
            rows = stage(rows)
        return write_rows(rows, self.run_dir, self.run, self.config)


def run_inline(rows: Iterable[list[dict]], lake: Path, cfg: BulkConfig, catalog_dir: str, out_dir: Path,
               run: str) -> Iterator[list[dict]]:
    """Every stage in this process, batch after batch: what the Ray pipeline does, without Ray (tests, the
    benchmark's baseline, a debugging aid)."""
    worker = AllStages(str(lake), cfg.to_dict(), catalog_dir, str(out_dir), run)
    for batch in rows:
        yield worker(batch)
