"""An evaluation run's aggregates from its item rows: every metric with its 95% bootstrap interval, the paired
differences that say whether a gap between two methods (or two model versions) on the same items is real, and the
fraction of the box→oracle gap the model closes.

Rows follow `EVAL_SUMMARY` (lake/schemas.py). `stat`:
  aggregate  mean of a per-item metric (or Local-FID, a set statistic) for one method under one guidance type,
             over all items (class = size_bin = "*"), one class, or one size bin
  paired     mean(a − b) over the items both a and b scored, with the interval of that difference (items resampled
             jointly); `significant` when 0 lies outside it. Local-FID: FID(a) − FID(b) on jointly resampled items
  gap        (model − box) / (oracle − box) of mean IoU: the share of the way from the box to the class-shape oracle
Failed rows are not scored; `n` says how many items each figure rests on.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from smartmask.evaluation.fid import frechet_distance
from smartmask.evaluation.intervals import bootstrap_mean, bootstrap_statistic, paired_difference, significant

# metric -> higher is better. bg_psnr is left out of the aggregates: it is +inf on an untouched background.
METRICS: dict[str, bool] = {
    "iou": True, "boundary_f": True, "best_of_n_iou": True, "diversity": True, "plausibility": True,
    "l2_bg": False, "bg_mse": False, "clip_score": True,
}  # fmt: skip
FID_MAX_BOOT = 200  # Local-FID is recomputed per resample: fewer resamples than the per-item means get


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Scored rows by (method, model version, guidance), each group in item order: the bootstrap resamples item
    positions, so the same items in any file order must give the same numbers."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["item_id"]):
        if r.get("status") == "ok":
            out[(r["method"], r["model_version"], r["guidance"])].append(r)
    return out


def _fid_rows(sel: list[dict]) -> tuple[np.ndarray, np.ndarray] | None:
    got = [r for r in sel if r.get("fake_feat") is not None and r.get("real_feat") is not None]
    if len(got) < 2:
        return None
    return (np.asarray([r["real_feat"] for r in got], np.float64), np.asarray([r["fake_feat"] for r in got], np.float64))


def aggregate_rows(rows: list[dict], *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """`aggregate` and `gap` rows (module doc) of one run's item rows, plus `paired` rows of the model against
    every baseline under each guidance type."""
    out: list[dict] = []
    groups = _groups(rows)
    for (method, version, guidance), sel in sorted(groups.items()):
        common = {"stat": "aggregate", "method": method, "model_version": version, "guidance": guidance,
                  "against": None, "significant": None, "eval_set": sel[0].get("eval_set"),
                  "dataset_version": sel[0].get("dataset_version")}
        slices = [("*", "*", sel)]
        for key, col in (("class", "object"), ("size_bin", "size_bin")):
            by: dict[str, list[dict]] = defaultdict(list)
            for r in sel:
                by[r[col]].append(r)
            slices += [(v, "*", s) if key == "class" else ("*", v, s) for v, s in sorted(by.items())]
        for cls, size, s in slices:
            for metric, higher in METRICS.items():
                iv = bootstrap_mean([_num(r.get(metric)) for r in s], n_boot=n_boot, seed=seed)
                if iv.n == 0:
                    continue
                out.append(common | {"metric": metric, "class": cls, "size_bin": size, "value": iv.value,
                                     "low": iv.low, "high": iv.high, "n": iv.n, "higher_is_better": higher,
                                     "extractor": s[0].get("clip_backbone") if metric == "clip_score" else None})
            feats = _fid_rows(s) if cls == "*" else None
            if feats is not None:
                iv = bootstrap_statistic(frechet_distance, *feats, n_boot=min(n_boot, FID_MAX_BOOT), seed=seed)
                out.append(common | {"metric": "local_fid", "class": cls, "size_bin": size, "value": iv.value,
                                     "low": iv.low, "high": iv.high, "n": iv.n, "higher_is_better": False,
                                     "extractor": s[0].get("fid_extractor")})
    for guidance in sorted({g for _, _, g in groups}):
        models = [(m, v) for (m, v, g) in groups if g == guidance and m == "smartmask"]
        bases = [(m, v) for (m, v, g) in groups if g == guidance and m != "smartmask"]
        for m, v in models:
            for bm, bv in bases:
                out += paired_rows(groups[(m, v, guidance)], groups[(bm, bv, guidance)], n_boot=n_boot, seed=seed)
            box, oracle = groups.get(("box", "baseline:box", guidance)), groups.get(("oracle", "baseline:oracle",
                                                                                    guidance))
            if box and oracle:
                out += gap_rows(groups[(m, v, guidance)], box, oracle, n_boot=n_boot, seed=seed)
            if box:  # the margin over the box and the gap closed by object size: small objects gain least
                for size in sorted({r["size_bin"] for r in groups[(m, v, guidance)]}):
                    sel = [r for r in groups[(m, v, guidance)] if r["size_bin"] == size]
                    box_s = [r for r in box if r["size_bin"] == size]
                    rows_s = paired_rows(sel, box_s, n_boot=n_boot, seed=seed)
                    if oracle:
                        rows_s += gap_rows(sel, box_s, [r for r in oracle if r["size_bin"] == size], n_boot=n_boot,
                                           seed=seed)
                    out += [r | {"size_bin": size} for r in rows_s]
    return out


def _aligned(a: list[dict], b: list[dict]) -> tuple[list[dict], list[dict]]:
    bb = {r["item_id"]: r for r in b}
    pairs = [(r, bb[r["item_id"]]) for r in sorted(a, key=lambda r: r["item_id"]) if r["item_id"] in bb]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def paired_rows(a: list[dict], b: list[dict], *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """`paired` rows: a − b on the items both scored (a and b: one method / version under one guidance type)."""
    a, b = _aligned(a, b)
    if not a:
        return []
    head = a[0]
    common = {"stat": "paired", "method": head["method"], "model_version": head["model_version"],
              "against": b[0]["model_version"], "guidance": head["guidance"], "class": "*", "size_bin": "*",
              "eval_set": head.get("eval_set"), "dataset_version": head.get("dataset_version")}
    out = []
    for metric, higher in METRICS.items():
        iv = paired_difference([_num(r.get(metric)) for r in a], [_num(r.get(metric)) for r in b], n_boot=n_boot,
                               seed=seed)
        if iv.n == 0:
            continue
        out.append(common | {"metric": metric, "value": iv.value, "low": iv.low, "high": iv.high, "n": iv.n,
                             "significant": significant(iv), "higher_is_better": higher, "extractor": None})
    both = [(x, y) for x, y in zip(a, b, strict=True) if x.get("fake_feat") is not None
            and y.get("fake_feat") is not None]
    if len(both) >= 2 and both[0][0].get("fid_extractor") == both[0][1].get("fid_extractor"):
        real = np.asarray([x["real_feat"] for x, _ in both], np.float64)
        fa = np.asarray([x["fake_feat"] for x, _ in both], np.float64)
        fb = np.asarray([y["fake_feat"] for _, y in both], np.float64)
        iv = bootstrap_statistic(lambda r, p, q: frechet_distance(r, p) - frechet_distance(r, q), real, fa, fb,
                                 n_boot=min(n_boot, FID_MAX_BOOT), seed=seed)
        out.append(common | {"metric": "local_fid", "value": iv.value, "low": iv.low, "high": iv.high, "n": iv.n,
                             "significant": significant(iv), "higher_is_better": False,
                             "extractor": both[0][0].get("fid_extractor")})
    return out


def gap_rows(model: list[dict], box: list[dict], oracle: list[dict], *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """The share of the box→oracle IoU gap the model closes, on the items all three scored."""
    bo = {r["item_id"]: r for r in box}
    orc = {r["item_id"]: r for r in oracle}
    ids = sorted(r["item_id"] for r in model if r["item_id"] in bo and r["item_id"] in orc)
    if len(ids) < 2:
        return []
    mm = {r["item_id"]: r for r in model}
    m, b, o = (np.asarray([_num(d[i]["iou"]) for i in ids]) for d in (mm, bo, orc))

    def frac(m, b, o):
        gap = o.mean() - b.mean()
        return float("nan") if abs(gap) < 1e-12 else float((m.mean() - b.mean()) / gap)

    iv = bootstrap_statistic(frac, m, b, o, n_boot=n_boot, seed=seed)
    head = model[0]
    return [{"stat": "gap", "method": head["method"], "model_version": head["model_version"],
             "against": "baseline:box..baseline:oracle", "metric": "iou_gap_closed", "guidance": head["guidance"],
             "class": "*", "size_bin": "*", "value": iv.value, "low": iv.low, "high": iv.high, "n": iv.n,
             "significant": None, "higher_is_better": True, "extractor": None,
             "eval_set": head.get("eval_set"), "dataset_version": head.get("dataset_version")}]


def compare_versions(rows_a: list[dict], rows_b: list[dict], *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Paired rows of the SmartMask rows of run a against those of run b (two model versions, the same eval set),
    per guidance type."""
    ga = {k: v for k, v in _groups(rows_a).items() if k[0] == "smartmask"}
    gb = {k[2]: v for k, v in _groups(rows_b).items() if k[0] == "smartmask"}
    out = []
    for (_, _, guidance), sel in sorted(ga.items()):
        if guidance in gb:
            out += paired_rows(sel, gb[guidance], n_boot=n_boot, seed=seed)
    return out
