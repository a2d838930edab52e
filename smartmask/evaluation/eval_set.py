"""Frozen evaluation sets: the identical items every model version and baseline is scored on.

An eval set is built once from a dataset version's held-out (val) split and then never changes. Each item is one
object of a held-out image re-inserted where it was: the layout under it (layers 0..k-1 of the ground truth), its
label, the image's caption as the context, its ground-truth amodal mask, the guidance of each type derived from
that mask by fixed rules, and a seed:

- box:      the mask's tight box (x0, y0, x1, y1, exclusive ends: `smartmask.boxes`);
- point:    the mask's centroid and r = half the mean of the box's sides (the training blob's radius, unjittered);
- scribble: the mask dilated by 4% of the image's longer side (the middle of the training scribble's 2-6%).

Layout on disk, published atomically as one folder under a lock (`lake/evalsets/name=NAME/`):
  manifest.parquet   one row per item (`MANIFEST`)
  shapes.parquet     each class's mean shape from the dataset's train split (the oracle baseline, frozen with it)
  eval_set.json      name, dataset, version, build settings, item count, the content hash of both tables

Immutability: writing a set whose name exists is a no-op when the content hash is the same and refused
(`EvalSetExists`) when it differs; loading re-hashes the tables and refuses a set edited by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from smartmask import masks
from smartmask.boxes import mask_box
from smartmask.conditioning.guidance import dilate
from smartmask.lake.io import utc_stamp, write_json_atomic
from smartmask.lake.locks import lake_lock
from smartmask.lake.paths import dataset_dir

EVAL_SET_CODE_VERSION = "evalset-1"
SIZE_BINS = ("<1%", "1-5%", ">5%")  # the object's amodal area as a share of the image
SCRIBBLE_FRAC = 0.04

MANIFEST = pa.schema([
    ("item_id", pa.string()), ("image_id", pa.string()), ("image_uri", pa.string()), ("width", pa.int32()),
    ("height", pa.int32()), ("k", pa.int32()), ("object", pa.string()), ("context", pa.string()),
    ("gt_rle", pa.string()), ("area_frac", pa.float64()), ("size_bin", pa.string()),
    ("bbox", pa.list_(pa.int32())), ("point", pa.list_(pa.float64())), ("scribble_rle", pa.string()),
    ("seed", pa.int64()), ("layout_from", pa.string()),
])  # fmt: skip


class EvalSetError(ValueError):
    """An eval set that cannot be built or read (one line)."""


class EvalSetExists(EvalSetError):
    """A set of that name exists with other content: eval sets are immutable."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalSetConfig:
    n_items: int = 200
    per_image: int = 2  # at most this many objects of one image: many scenes rather than many objects of few
    min_area_frac: float = 0.0005  # tiny objects stay in (they are reported in their own size bin)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_items < 1 or self.per_image < 1 or not 0.0 <= self.min_area_frac < 1.0:
            raise EvalSetError(f"bad eval set settings: {self}")


@dataclass(frozen=True, eq=False)
class EvalSet:
    name: str
    meta: dict
    items: list[dict] = field(repr=False)
    shapes: object = field(repr=False)  # smartmask.evaluation.oracle.ClassShapes

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def version(self) -> str:
        return self.meta["version"]


def eval_sets_root(lake: Path) -> Path:
    return Path(lake) / "evalsets"


def eval_set_dir(lake: Path, name: str) -> Path:
    return eval_sets_root(lake) / f"name={name}"


def default_name(dataset: str, version: str) -> str:
    """The eval set the training flow scores every new model of `dataset@version` on."""
    return f"{dataset}-{version[:8]}-default"


def size_bin(area_frac: float) -> str:
    return SIZE_BINS[0] if area_frac < 0.01 else SIZE_BINS[1] if area_frac <= 0.05 else SIZE_BINS[2]


def _item_seed(set_seed: int, item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{set_seed}:{item_id}".encode()).digest()[:4], "big") >> 1


def select_items(lake: Path, dataset: str, version: str, cfg: EvalSetConfig) -> list[dict]:
    """Held-out items (module doc), chosen deterministically from `cfg.seed`: images in a seeded order, up to
    `per_image` thing layers (k ≥ 1) of each, until `n_items`."""
    d = dataset_dir(lake, dataset, version)
    images = pq.read_table(d / "images", columns=["image_id", "uri", "split", "height", "width"]).to_pylist()
    val = {r["image_id"]: r for r in images if r["split"] == "val"}
    if not val:
        raise EvalSetError(f"dataset {dataset}@{version} has no held-out (val) images to build an eval set from")
    captions: dict[str, str] = {}
    if (d / "captions").exists():
        captions = {r["image_id"]: r["caption"] for r in pq.read_table(d / "captions").to_pylist()}
    rng = np.random.default_rng(cfg.seed)
    order = sorted(val)
    order = [order[i] for i in rng.permutation(len(order))]
    out: list[dict] = []
    for start in range(0, len(order), 64):  # decode a few images' layers at a time: memory follows the batch
        ids = order[start:start + 64]
        layers = pq.read_table(d / "layers", columns=["image_id", "layer", "label", "is_stuff", "rle", "area"],
                               filters=[("image_id", "in", ids)]).to_pylist()
        by_image: dict[str, list[dict]] = {}
        for r in layers:
            img = val[r["image_id"]]
            if not r["is_stuff"] and r["layer"] > 0 and r["area"] >= cfg.min_area_frac * img["height"] * img["width"]:
                by_image.setdefault(r["image_id"], []).append(r)
        for image_id in ids:
            cands = sorted(by_image.get(image_id, []), key=lambda r: r["layer"])
            picks = sorted(int(p) for p in rng.choice(len(cands), size=min(cfg.per_image, len(cands)), replace=False))
            for j in picks:
                out.append(_item(dataset, version, val[image_id], cands[j], captions.get(image_id, ""), cfg.seed))
                if len(out) >= cfg.n_items:
                    return out
    return out


def _item(dataset: str, version: str, img: dict, layer: dict, caption: str, set_seed: int) -> dict:
    H, W = int(img["height"]), int(img["width"])
    mask = masks.decode({"size": [H, W], "counts": layer["rle"]}).astype(bool)
    x0, y0, x1, y1 = mask_box(mask)
    ys, xs = np.nonzero(mask)
    cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
    r = 0.25 * ((x1 - x0) + (y1 - y0))
    scribble = dilate(mask, max(1, round(SCRIBBLE_FRAC * max(H, W))))
    area = float(mask.sum()) / (H * W)
    item_id = f"{img['image_id']}-k{int(layer['layer'])}"
    return {"item_id": item_id, "image_id": img["image_id"], "image_uri": img["uri"], "width": W, "height": H,
            "k": int(layer["layer"]), "object": layer["label"].strip(), "context": caption,
            "gt_rle": layer["rle"], "area_frac": area, "size_bin": size_bin(area),
            "bbox": [int(x0), int(y0), int(x1), int(y1)], "point": [round(cx, 3), round(cy, 3), round(r, 3)],
            "scribble_rle": masks.encode(scribble)["counts"], "seed": _item_seed(set_seed, item_id),
            "layout_from": f"{dataset}@{version}:{img['image_id']}:{int(layer['layer'])}"}


def table_hash(table: pa.Table) -> str:
    """sha256 over the rows as canonical JSON: the same content hashes the same whatever the file encoding."""
    h = hashlib.sha256()
    for row in table.to_pylist():
        h.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def build_eval_set(lake: Path, name: str, dataset: str, version: str, cfg: EvalSetConfig | None = None) -> EvalSet:
    """Select, fit the oracle's class shapes on the train split, and publish; an existing set of that name with
    the same content is returned as is, one with other content is refused."""
    from smartmask.evaluation.oracle import ClassShapes

    lake = Path(lake)
    cfg = cfg or EvalSetConfig()
    _check_name(name)
    items = select_items(lake, dataset, version, cfg)
    if not items:
        raise EvalSetError(f"dataset {dataset}@{version} has no held-out thing objects to evaluate on")
    manifest = pa.Table.from_pylist(items, schema=MANIFEST)
    shapes = ClassShapes.fit(lake, dataset, version, split="train").to_table()
    meta = {"name": name, "dataset": dataset, "version": version, "settings": asdict(cfg),
            "items": manifest.num_rows, "code_version": EVAL_SET_CODE_VERSION,
            "manifest_sha256": table_hash(manifest), "shapes_sha256": table_hash(shapes)}
    meta["content_hash"] = hashlib.sha256(f"{meta['manifest_sha256']}:{meta['shapes_sha256']}".encode()).hexdigest()
    return publish(lake, name, manifest, shapes, meta)


def publish(lake: Path, name: str, manifest: pa.Table, shapes: pa.Table, meta: dict) -> EvalSet:
    """Write the set's folder atomically (staging folder, then one rename) unless it exists; see module doc."""
    final = eval_set_dir(lake, name)
    with lake_lock(lake, "evalset", name, wait_s=600.0, what=f"eval set {name}"):
        if final.exists():
            old = json.loads((final / "eval_set.json").read_text())
            if old["content_hash"] != meta["content_hash"]:
                raise EvalSetExists(
                    f"eval set {name!r} exists with other content (items or shapes differ: {old['content_hash'][:12]}"
                    f" != {meta['content_hash'][:12]}); eval sets never change: choose another name")
            return load_eval_set(lake, name)
        stage = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        pq.write_table(manifest, stage / "manifest.parquet", compression="zstd")
        pq.write_table(shapes, stage / "shapes.parquet", compression="zstd")
        write_json_atomic(meta | {"created_at": utc_stamp()},
                          stage / "eval_set.json")
        os.replace(stage, final)
    return load_eval_set(lake, name)


def load_eval_set(lake: Path, name: str) -> EvalSet:
    from smartmask.evaluation.oracle import ClassShapes

    d = eval_set_dir(lake, name)
    if not (d / "eval_set.json").exists():
        have = sorted(p.name[5:] for p in eval_sets_root(lake).glob("name=*")) if eval_sets_root(lake).exists() else []
        raise EvalSetError(f"no eval set {name!r} in the lake (have: {', '.join(have) or 'none'})")
    meta = json.loads((d / "eval_set.json").read_text())
    manifest = pq.read_table(d / "manifest.parquet").cast(MANIFEST)
    shapes = pq.read_table(d / "shapes.parquet")
    if table_hash(manifest) != meta["manifest_sha256"] or table_hash(shapes) != meta["shapes_sha256"]:
        raise EvalSetError(f"eval set {name!r} was modified after it was written (content hash mismatch)")
    return EvalSet(name, meta, manifest.to_pylist(), ClassShapes.from_table(shapes))


def ensure_default(lake: Path, dataset: str, version: str) -> EvalSet:
    """The default eval set of `dataset@version`, built on first use."""
    name = default_name(dataset, version)
    if (eval_set_dir(lake, name) / "eval_set.json").exists():
        return load_eval_set(lake, name)
    return build_eval_set(lake, name, dataset, version)


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise EvalSetError(f"eval set name {name!r}: use letters, digits, '-', '_', '.'")
