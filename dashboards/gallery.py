"""The gallery's and the bulk panel's pictures: turns the rows of `sql/gallery.sql` and `sql/bulk_samples.sql`
into JSON-able entries whose images are `data:` URIs (`dashboards.images`).

A gallery entry is one (eval item, guidance type): the input image, its layout (layers 0..k−1), the ground truth
(layer k) as an overlay, every method's rank-1 mask as an overlay (the page shows the two chosen versions'), and
the bulk-run outputs of the same image and object. The RLE strings stay here: only thumbnails reach the page.
Anything missing on disk becomes a placeholder reason (`*_note`), never an exception.
"""

from __future__ import annotations

from pathlib import Path

from dashboards.images import (
    ImageUnavailable,
    file_name,
    inside,
    layout_uri,
    local_path,
    mask_thumb,
    overlay_uri,
    photo_uri,
    thumb_size,
)
from smartmask.masks import MaskError


def _try(fn, *args, **kwargs) -> tuple[str | None, str | None]:
    """(data URI, None) or (None, why not)."""
    try:
        return fn(*args, **kwargs), None
    except ImageUnavailable as e:
        return None, str(e)
    except (MaskError, ValueError, TypeError, KeyError, OSError) as e:  # a corrupt RLE or row: a placeholder
        return None, f"cannot draw it ({type(e).__name__})"


def _run_dir(lake: Path, run: str) -> Path:
    return lake / "runs" / "kind=bulk_insert" / f"run={run}"


def _local_photo(uri: str | None, size: tuple[int, int] | None = None) -> str:
    return photo_uri(local_path(uri), size)


def _run_photo(lake: Path, run: str, relative: str | None) -> str:
    return photo_uri(inside(_run_dir(lake, run), relative))


def _overlay(rle: str, height: int, width: int, size: tuple[int, int]) -> str:
    return overlay_uri(mask_thumb(rle, height, width, size))


def _overlays(rle: str, height: int, width: int, size: tuple[int, int], **kw) -> tuple[str, str]:
    """(fill, outline-only) overlays of one mask, sampled once."""
    m = mask_thumb(rle, height, width, size)
    return overlay_uri(m, **kw), overlay_uri(m, outline_only=True, **kw)


class Pictures:
    """Thumbnails drawn once per build however many entries show them (a bulk output can be both a gallery
    entry's and a sample's; an image, several entries')."""

    def __init__(self, lake: Path):
        self.lake = lake
        self._seen: dict[tuple, tuple[str | None, str | None]] = {}

    def get(self, key: tuple, fn, *args, **kwargs) -> tuple[str | None, str | None]:
        if key not in self._seen:
            self._seen[key] = _try(fn, *args, **kwargs)
        return self._seen[key]

    def output(self, run: str, relative: str | None) -> tuple[str | None, str | None]:
        return self.get(("run", run, relative), _run_photo, self.lake, run, relative)


def _output(pictures: Pictures, row: dict) -> dict:
    uri, note = pictures.output(row["run"], row.get("inserted_path"))
    return {"run": row.get("run"), "model_version": row.get("model_version"), "path": row.get("inserted_path"),
            "image": uri, "image_note": note}


def gallery_entries(pictures: Pictures, rows: list[dict]) -> list[dict]:
    """The page's gallery entries from the rows of `sql/gallery.sql` (see the module doc)."""
    out = []
    for row in rows:
        width, height = row.get("width"), row.get("height")
        size = thumb_size(width, height) if width and height else None
        layers = sorted(row.get("layers") or [], key=lambda r: r["layer"])
        k = row.get("k")
        gt = next((r for r in layers if r["layer"] == k), None)
        below = [r for r in layers if k is not None and r["layer"] < k]
        key = (row.get("dataset_version"), row.get("image_id"))
        if size is None:
            photo, layout = (None, "the image is not in the dataset version"), (None, "no layout")
        else:  # an image (and a layout: the image and k) is drawn once however many entries show it
            photo = pictures.get(("photo", *key, size), _local_photo, row.get("uri"), size)
            layout = (pictures.get(("layout", *key, k), layout_uri, below, size) if below or k == 0
                      else (None, "no layers"))
        if gt is not None and size is not None:
            pair, gt_note = _try(_overlays, gt["rle"], gt["height"], gt["width"], size, gt=True)
            gt_uri, gt_line = pair or (None, None)
        else:
            gt_uri, gt_line, gt_note = None, None, "no ground-truth layer"
        methods = []
        for m in row.get("methods") or []:
            mask, note = None, m.get("error") or ("failed" if not m.get("ok") else None)
            if m.get("ok") and m.get("mask_rle") and size is not None:
                mask, note = _try(_overlay, m["mask_rle"], height, width, size)
            elif m.get("ok") and size is not None:
                note = "empty mask" if m.get("empty") else "no mask stored"
            methods.append({"model_version": m.get("model_version"), "method": m.get("method"), "ok": m.get("ok"),
                            "iou": m.get("iou"), "boundary_f": m.get("boundary_f"), "empty": m.get("empty"),
                            "mask": mask, "mask_note": note})
        out.append({
            "rank": row.get("rank"), "eval_set": row.get("eval_set"), "item_id": row.get("item_id"),
            "guidance": row.get("guidance"), "image_id": row.get("image_id"), "object": row.get("object"),
            "size_bin": row.get("size_bin"), "dataset": row.get("dataset"),
            "dataset_version": row.get("dataset_version"), "k": k, "file": file_name(row.get("uri")),
            "width": width, "height": height, "thumb": list(size) if size else None,
            "version_a": row.get("version_a"), "version_b": row.get("version_b"),
            "disagreement": row.get("disagreement"),
            "image": photo[0], "image_note": photo[1], "layout": layout[0], "layout_note": layout[1],
            "layout_labels": sorted({r["label"] for r in below if r.get("label") is not None}),
            "gt": gt_uri, "gt_outline": gt_line, "gt_note": gt_note,
            "methods": methods,
            "outputs": [_output(pictures, o) for o in (row.get("outputs") or [])],
        })
    return out


def bulk_samples(pictures: Pictures, rows: list[dict]) -> list[dict]:
    """The bulk panel's sample outputs from the rows of `sql/bulk_samples.sql`: each inserted output (read inside
    its run's folder only) and its input image (a local path only)."""
    out = []
    for row in rows:
        sample = {k: row.get(k) for k in ("run", "item_id", "object", "context", "guidance", "model_version",
                                          "chosen_rank", "score", "mask_area", "inserted_path")}
        sample["file"] = file_name(row.get("image_uri"))
        sample["image"], sample["image_note"] = pictures.get(("input", row.get("image_uri")), _local_photo,
                                                             row.get("image_uri"))
        sample["output"], sample["output_note"] = pictures.output(row["run"], row.get("inserted_path"))
        out.append(sample)
    return out
