"""The pyarrow schema of every table the lake holds (where each lives: `smartmask.lake.paths`; what each column
means: datasets/README.md)."""

from __future__ import annotations

import pyarrow as pa

IMAGES = pa.schema(
    [
        ("image_id", pa.string()),
        ("file_name", pa.string()),
        ("uri", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        ("n_layers", pa.int32()),
        ("n_rejected_regions", pa.int32()),
        ("order_source", pa.string()),
        ("order_pairs", pa.int32()),
        ("cycles_broken", pa.int32()),
        ("source_caption", pa.string()),
    ]
)

LAYERS = pa.schema(
    [
        ("image_id", pa.string()),
        ("layer", pa.int32()),  # 0 = back-most
        ("region_id", pa.string()),
        ("label", pa.string()),
        ("label_raw", pa.string()),
        ("label_id", pa.int32()),
        ("is_stuff", pa.bool_()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("rle", pa.string()),  # COCO compressed RLE counts of the amodal mask
        ("bbox", pa.list_(pa.float64(), 4)),  # x, y, w, h of the amodal mask
        ("area", pa.int64()),
        ("visible_rle", pa.string()),  # null where the source gives no visible mask
        ("visible_area", pa.int64()),
        ("visible_clipped_pixels", pa.int64()),  # visible pixels outside the amodal mask, clipped (in the band)
        ("occlusion_rate", pa.float32()),
        ("order_source", pa.string()),
    ]
)

REJECTS = pa.schema(
    [
        ("source", pa.string()),
        ("record_kind", pa.string()),  # image | annotation | region
        ("record_key", pa.string()),
        ("image_id", pa.string()),
        ("stage", pa.string()),  # parse | validate | caption
        ("reason", pa.string()),  # a stable code, see datasets/README.md
        ("detail", pa.string()),
        ("record", pa.string()),  # the offending record, JSON, truncated
    ]
)

VOCABULARY = pa.schema(
    [
        ("label_id", pa.int32()),
        ("label", pa.string()),
        ("is_stuff", pa.bool_()),
        ("r", pa.uint8()),
        ("g", pa.uint8()),
        ("b", pa.uint8()),
        ("instances", pa.int64()),
    ]
)

CAPTIONS = pa.schema(
    [
        ("image_id", pa.string()),
        ("captioner", pa.string()),  # template@<v> or instructblip:<model>@<revision>
        ("prompt", pa.string()),  # the instruction given to a model captioner; null for the template
        ("caption", pa.string()),
        ("relations", pa.string()),  # JSON list of [subject layer, relation, object layer]; template only
    ]
)

# Dataset-card statistics in long form, so DuckDB can compare versions: section, key → value (and text).
STATS = pa.schema(
    [
        ("section", pa.string()),  # summary | class | layers_per_image | captions | rejects | diff
        ("key", pa.string()),
        ("value", pa.float64()),
        ("text", pa.string()),
    ]
)

# The caption cache outlives dataset versions: an unchanged image is never captioned twice by the same
# captioner and prompt. <lake>/caption_cache/captioner=<key>/part-*.parquet
CAPTION_CACHE = pa.schema(
    [
        ("sha256", pa.string()),
        ("captioner", pa.string()),
        ("prompt", pa.string()),
        ("caption", pa.string()),
    ]
)

# The loss curve of a training run: <lake>/runs/kind=train/run=<run id>/metrics/part-<step>.parquet
TRAIN_METRICS = pa.schema(
    [
        ("run_id", pa.string()),
        ("dataset", pa.string()),
        ("dataset_version", pa.string()),
        ("step", pa.int64()),
        ("loss", pa.float64()),
        ("val_loss", pa.float64()),
        ("lr", pa.float64()),
        ("step_seconds", pa.float64()),
        ("samples_per_s", pa.float64()),
        ("world_size", pa.int32()),
    ]
)

# One row per registered model version: <lake>/models/version=<id>/model.parquet (the folder holds the rest).
MODELS = pa.schema(
    [
        ("preset", pa.string()),
        ("dataset", pa.string()),
        ("dataset_version", pa.string()),
        ("run_id", pa.string()),
        ("steps", pa.int64()),
        ("final_loss", pa.float64()),
        ("val_loss", pa.float64()),
        ("created_at", pa.string()),
        ("code_version", pa.string()),
        ("path", pa.string()),
    ]
)

DATASET_TABLES: dict[str, pa.Schema] = {
    "images": IMAGES,
    "layers": LAYERS,
    "rejects": REJECTS,
    "vocabulary": VOCABULARY,
    "captions": CAPTIONS,
    "stats": STATS,
}

# One row per catalog row of a bulk insertion run, inserted or rejected (the view adds `kind` and `run` from the path):
# <lake>/runs/kind=bulk_insert/run=<name>/items/part-*.parquet (the PNGs under outputs/, paths relative to the run).
INSERT_ITEMS = pa.schema(
    [
        ("item_key", pa.string()),  # sha256 of (canonical item, config hash); unique within a run
        ("line", pa.int64()),  # the catalog row (data row for Parquet, file line for CSV/JSONL)
        ("item_id", pa.string()),
        ("image_uri", pa.string()),
        ("object", pa.string()),
        ("context", pa.string()),
        ("guidance", pa.string()),  # JSON: {"kind": "box", "bbox": [...]} | point | scribble | none
        ("layout_from", pa.string()),  # null: the segmenter's layout
        ("n_suggestions", pa.int32()),
        ("seed", pa.int64()),
        ("model_version", pa.string()),
        ("config_hash", pa.string()),
        ("inpainter", pa.string()),
        ("segmenter", pa.string()),
        ("image_sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("chosen_rank", pa.int32()),
        ("scores", pa.list_(pa.float64())),  # every suggestion's score, by rank
        ("mask_rle", pa.string()),  # COCO compressed RLE counts of the chosen mask (size = height, width)
        ("mask_bbox", pa.list_(pa.int32(), 4)),  # x0, y0, x1, y1 (exclusive) of the chosen mask
        ("mask_area", pa.int64()),
        ("dilated_area", pa.int64()),
        ("dilated_rle", pa.string()),  # RLE counts of the dilated mask: outside it the output equals the input
        ("changed_pixels", pa.int64()),  # pixels whose value differs from the input's
        ("changed_outside", pa.int64()),  # of those, outside the dilated mask: 0 by construction
        ("inserted_path", pa.string()),
        ("mask_path", pa.string()),
        ("suggestion_paths", pa.list_(pa.string())),
        ("t_decode_s", pa.float64()),
        ("t_layout_s", pa.float64()),
        ("t_suggest_s", pa.float64()),
        ("t_insert_s", pa.float64()),
        ("t_write_s", pa.float64()),
        ("status", pa.string()),  # inserted | rejected
        ("reject_stage", pa.string()),  # read | decode | layout | suggest | insert | write
        ("reject_reason", pa.string()),  # a stable code (docs/bulk_insert.md)
        ("reject_detail", pa.string()),
        ("created_at", pa.string()),
        ("code_version", pa.string()),
    ]
)

# Evaluation (smartmask/evaluation): one row per (eval item, method, guidance) of a run; `run` comes from the path.
EVAL_ITEMS = pa.schema(
    [
        ("eval_set", pa.string()),
        ("dataset_version", pa.string()),
        ("config_hash", pa.string()),
        ("code_version", pa.string()),
        ("item_id", pa.string()),
        ("image_id", pa.string()),
        ("object", pa.string()),
        ("size_bin", pa.string()),  # "<1%", "1-5%", ">5%": the object's amodal area as a share of the image
        ("area_frac", pa.float64()),
        ("guidance", pa.string()),  # none | box | point | scribble
        ("method", pa.string()),  # smartmask | box | oracle | sd-inpaint | sdxl-inpaint | inpaint-segment
        ("model_version", pa.string()),  # the model version, or "baseline:<name>"
        ("status", pa.string()),  # ok | failed
        ("error", pa.string()),
        ("n_masks", pa.int32()),
        ("empty", pa.bool_()),  # the rank-1 mask is empty: nothing was inserted
        ("mask_rle", pa.string()),  # RLE counts of the rank-1 mask (size: the image's)
        ("iou", pa.float64()),
        ("boundary_f", pa.float64()),
        ("best_of_n_iou", pa.float64()),
        ("diversity", pa.float64()),
        ("plausibility", pa.float64()),  # mask-free guidance: share of the N masks obeying the support rules
        ("l2_bg", pa.float64()),
        ("bg_psnr", pa.float64()),
        ("bg_mse", pa.float64()),
        ("clip_score", pa.float64()),
        ("clip_backbone", pa.string()),
        ("fid_extractor", pa.string()),
        ("real_feat", pa.list_(pa.float32())),  # Local-FID features of the input's object crop
        ("fake_feat", pa.list_(pa.float32())),  # ... and of the output's
        ("seconds_inference", pa.float64()),
        ("seconds_metrics", pa.float64()),
    ]
)

# One row per aggregate of a run: a metric of a method under a guidance type, over all items or one class / size
# bin ("*" = all), with its 95% bootstrap interval. Paired rows (stat "paired") hold the difference of two methods
# (or of two runs' model versions) on the same items: value = mean(a − b), the interval of that difference.
EVAL_SUMMARY = pa.schema(
    [
        ("stat", pa.string()),  # aggregate | paired | gap
        ("eval_set", pa.string()),
        ("dataset_version", pa.string()),
        ("model_version", pa.string()),  # a model version or "baseline:<name>" (paired: the first of the two)
        ("method", pa.string()),
        ("against", pa.string()),  # paired: the model version / baseline subtracted; else null
        ("metric", pa.string()),
        ("guidance", pa.string()),
        ("class", pa.string()),
        ("size_bin", pa.string()),
        ("value", pa.float64()),
        ("low", pa.float64()),
        ("high", pa.float64()),
        ("n", pa.int64()),
        ("significant", pa.bool_()),  # paired: 0 lies outside the interval
        ("extractor", pa.string()),  # local_fid: the feature extractor; clip_score: the CLIP backbone
        ("higher_is_better", pa.bool_()),
    ]
)

# A stored layered layout (smartmask.design.store), one row per layer, back to front:
# <lake>/layouts/layout=<id>/version=<n>/layers.parquet (beside layout.json, layout.parquet and the pictures).
# In the `layout_layers` view `layout` and `version` come from the folder names (text, like every lake version).
LAYOUT_LAYERS = pa.schema(
    [
        ("layout_id", pa.string()),
        ("version", pa.int32()),
        ("order", pa.int32()),  # 0 = back-most; the visible label of a pixel is that of its highest layer
        ("label", pa.string()),
        ("is_stuff", pa.bool_()),
        ("origin", pa.string()),  # design | background | photo | user
        ("rle", pa.string()),  # COCO compressed RLE counts of the amodal mask on the canvas (size: height, width)
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("area", pa.int64()),
        ("visible_area", pa.int64()),  # pixels where this layer is the front-most one
        ("box_x0", pa.float64()),  # the planner's box (designed layers only; else null)
        ("box_y0", pa.float64()),
        ("box_x1", pa.float64()),
        ("box_y1", pa.float64()),
        ("seed", pa.int64()),
        ("planner", pa.string()),
        ("score", pa.float64()),
        # a layer moved or scaled partly off the canvas: its whole mask (RLE of full_height x full_width) with its
        # top-left at canvas pixel (full_x, full_y); null while the layer lies wholly on the canvas
        ("full_rle", pa.string()),
        ("full_x", pa.int64()),
        ("full_y", pa.int64()),
        ("full_height", pa.int32()),
        ("full_width", pa.int32()),
    ]
)

# One row per stored layout version: <lake>/layouts/layout=<id>/version=<n>/layout.parquet (layout.json's fields).
LAYOUTS = pa.schema(
    [
        ("layout_id", pa.string()),
        ("version", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("context", pa.string()),
        ("parent", pa.int32()),  # the version this one was edited from; null for a first version
        ("note", pa.string()),
        ("op", pa.string()),  # the operation that made it: design | add | remove | move | scale | reorder | ...
        ("operation", pa.string()),  # JSON: the operation with its arguments
        ("n_layers", pa.int32()),
        ("vocabulary", pa.string()),  # where its colours come from: model:<version> | dataset:<name>@<version>
        ("created_at", pa.string()),
    ]
)
