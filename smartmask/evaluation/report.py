"""The markdown report of an evaluation run: Table-1 style (insertion quality) and Table-2 style (mask quality)
tables with our rows and the baselines' side by side, each figure `mean [95% interval]`, the paired differences that
say which gaps are real, and the paper's published rows, labelled as quoted (their data and models: not comparable
with ours, shown for scale)."""

from __future__ import annotations

import math

# SmartMask (CVPR 2024), Table 1: Local-FID ↓ / CLIP-Score ↑ / Norm. L2-BG ↓ on their test set.
PAPER_TABLE1 = [
    ("SD Inpaint", 22.31, 0.249, 0.374), ("SDXL Inpaint", 21.84, 0.235, 0.623),
    ("Blended L-Diffusion", 39.77, 0.253, 0.451), ("Adobe SmartBrush", 17.94, 0.262, 0.304),
    ("Adobe Gen-Fill", None, 0.268, 0.289), ("SmartMask (paper)", 19.21, 0.261, 0.098),
]  # fmt: skip
# Table 2 is a user study: SmartMask's masks against each baseline's, win / draw / lose for SmartMask.
PAPER_TABLE2 = [
    ("SD Inpaint + HQSAM", "92.04%", "5.12%", "2.84%"), ("Blended L-Diff + HQSAM", "88.91%", "8.33%", "2.75%"),
    ("SmartBrush + HQSAM", "63.89%", "27.78%", "8.34%"), ("SmartBrush mask", "91.67%", "2.78%", "5.56%"),
]  # fmt: skip

INSERTION = [("local_fid", "Local-FID ↓"), ("clip_score", "CLIP-Score ↑"), ("l2_bg", "Norm. L2-BG ↓"),
             ("bg_mse", "BG MSE ↓")]
MASKS = [("iou", "IoU ↑"), ("boundary_f", "boundary F ↑"), ("best_of_n_iou", "best-of-N IoU ↑"),
         ("diversity", "diversity"), ("plausibility", "plausibility ↑")]
_GUIDANCE_ORDER = ["none", "box", "point", "scribble"]
_SIZE_ORDER = ["<1%", "1-5%", ">5%"]
GUIDANCE_NAMES = {"none": "mask-free", "box": "box", "point": "point (coarse spatial)", "scribble": "scribble"}


def fmt(value, low=None, high=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    digits = 2 if abs(value) >= 10 else 3
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _cell(row: dict | None) -> str:
    return "—" if row is None else fmt(row["value"], row["low"], row["high"])


def _method_key(version: str) -> tuple:
    """The model first, then the box, then the other baselines."""
    return version.startswith("baseline:"), version != "baseline:box", version


def _method_order(versions: list[str]) -> list[str]:
    return sorted(versions, key=_method_key)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def render(record: dict, summary: list[dict], counts: dict) -> str:
    """The report of one run: `record` is its run.json, `summary` its summary rows, `counts` its item counts."""
    agg = {(r["model_version"], r["guidance"], r["metric"]): r for r in summary
           if r["stat"] == "aggregate" and r["class"] == "*" and r["size_bin"] == "*"}
    guidance = [g for g in ("none", "box", "point", "scribble") if any(k[1] == g for k in agg)]
    versions = _method_order(sorted({k[0] for k in agg}))
    cfg = record.get("config", {})
    ext = next((r["extractor"] for r in summary if r["metric"] == "local_fid" and r.get("extractor")), "—")
    backbone = next((r["extractor"] for r in summary if r["metric"] == "clip_score" and r.get("extractor")), "—")
    out = [f"# Evaluation report: {record['run']}", "",
           f"- model version: {record.get('model_version') or '— (baselines only)'}; eval set {record['eval_set']} "
           f"({counts.get('items', '?')} items of dataset {record.get('dataset')}@{record.get('dataset_version')}, "
           f"content hash {record.get('eval_set_hash', '')[:12]})",
           f"- {cfg.get('n_suggestions')} suggestions per item ({cfg.get('steps')} {cfg.get('scheduler')} steps), "
           f"inpainter `{cfg.get('inpainter')}`; Local-FID features: `{ext}`; CLIP backbone: `{backbone}` (raw "
           f"cosine); config hash {record.get('config_hash')}",
           f"- rows: {counts.get('ok_rows', '?')} scored, {counts.get('failed_rows', 0)} failed",
           "- every figure: mean [95% bootstrap interval over items]; Local-FID on square crops of the object's box "
           "(10% margin, 299 px), one value per method, its interval from resampled items",
           "- the item is re-inserted where it was: the input is the held-out image, the mask is each method's; "
           "baselines need a coarse region, so they have no mask-free rows", ""]
    out += ["## Insertion quality (Table 1 style)", ""]
    for g in guidance:
        rows = [[v] + [_cell(agg.get((v, g, m))) for m, _ in INSERTION] for v in versions if any((v, g, m) in agg for m, _ in INSERTION)]
        if rows:
            out += [f"### guidance: {GUIDANCE_NAMES[g]}", "", *_table(["method"] + [h for _, h in INSERTION], rows),
                    ""]
    out += ["## Mask quality (Table 2 style)", ""]
    for g in guidance:
        rows = [[v] + [_cell(agg.get((v, g, m))) for m, _ in MASKS] for v in versions if any((v, g, m) in agg for m, _ in MASKS)]
        out += [f"### guidance: {GUIDANCE_NAMES[g]}", "", *_table(["method"] + [h for _, h in MASKS], rows), ""]
    gaps = [r for r in summary if r["stat"] == "gap" and r["size_bin"] == "*"]
    if gaps:
        out += ["## Share of the box → oracle IoU gap the model closes", "",
                *_table(["model", "guidance", "gap closed"],
                        [[r["model_version"], GUIDANCE_NAMES[r["guidance"]], fmt(r["value"], r["low"], r["high"])]
                         for r in gaps]), ""]
    sizes = [r for r in summary if r["stat"] == "aggregate" and r["metric"] == "iou" and r["size_bin"] != "*"]
    if sizes:
        out += ["## IoU by object size (share of the image)", "",
                *_table(["method", "guidance", "size", "IoU", "n"],
                        [[r["model_version"], GUIDANCE_NAMES[r["guidance"]], r["size_bin"],
                          fmt(r["value"], r["low"], r["high"]), str(r["n"])]
                         for r in sorted(sizes, key=lambda r: (_GUIDANCE_ORDER.index(r["guidance"]),
                                                              _SIZE_ORDER.index(r["size_bin"]),
                                                              _method_key(r["model_version"])))]),
                ""]
    by_size = {(r["model_version"], r["guidance"], r["size_bin"], r["stat"]): r for r in summary
               if r["stat"] in ("paired", "gap") and r["size_bin"] != "*" and r["metric"] in ("iou", "iou_gap_closed")
               and r["against"] in ("baseline:box", "baseline:box..baseline:oracle")}
    keys = sorted({k[:3] for k in by_size}, key=lambda k: (_GUIDANCE_ORDER.index(k[1]), _SIZE_ORDER.index(k[2]), k[0]))
    if keys:
        def cell(k, stat):
            r = by_size.get((*k, stat))
            return fmt(r["value"], r["low"], r["high"]) if r else "–"

        out += ["## Margin over the box by object size (IoU, paired on the same items)", "",
                *_table(["model", "guidance", "size", "model − box", "gap closed", "n"],
                        [[k[0], GUIDANCE_NAMES[k[1]], k[2], cell(k, "paired"), cell(k, "gap"),
                          str(by_size[(*k, "paired")]["n"]) if (*k, "paired") in by_size else "–"] for k in keys]),
                ""]
    paired = [r for r in summary if r["stat"] == "paired" and r["size_bin"] == "*"]
    if paired:
        out += ["## Paired differences (a − b on the same items)", "",
                "`yes` when the 95% interval of the difference excludes 0.", "",
                *_table(["a", "b", "guidance", "metric", "a − b", "real?", "n"],
                        [[r["model_version"], r["against"], GUIDANCE_NAMES[r["guidance"]], r["metric"],
                          fmt(r["value"], r["low"], r["high"]), "yes" if r["significant"] else "no", str(r["n"])]
                         for r in paired]), ""]
    out += ["## Quoted from the paper (SmartMask, CVPR 2024) — not comparable with the rows above", "",
            "Their test set, real photographs, Inception features and SD-based models; shown for scale only.", "",
            "Table 1 (insertion):", "",
            *_table(["method (paper)", "Local-FID ↓", "CLIP-Score ↑", "Norm. L2-BG ↓"],
                    [[n, fmt(f), fmt(c), fmt(bg)] for n, f, c, bg in PAPER_TABLE1]), "",
            "Table 2 (user study on mask quality: SmartMask's masks vs each method's):", "",
            *_table(["vs (paper)", "SmartMask wins", "draw", "loses"], [list(r) for r in PAPER_TABLE2]), ""]
    return "\n".join(out)
