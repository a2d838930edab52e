"""The dashboard (`dashboards/`, `smartmask dashboard`) over a small lake written here row by row, following the
schemas: two dataset versions, two model versions with training curves, two evaluation runs (items and summaries),
a bulk insertion run and benchmark records. Labels, captions, object names and file names carry HTML payloads; the
page must hold them only inside its escaped JSON. No browser here (the page tests drive chromium elsewhere).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from smartmask import masks
from smartmask.lake import schemas

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
PAYLOADS = (SCRIPT, IMG)
DS_V1, DS_V2 = "d1d1d1d1d1d1d1d1", "d2d2d2d2d2d2d2d2"
M1, M2 = "m1m1m1m1m1m1m1m1", "m2m2m2m2m2m2m2m2"
EVAL_SET = "synth-d2d2d2d2-default"
W, H = 64, 48


def _write(rows: list[dict], schema: pa.Schema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _box_rle(x0: int, y0: int, x1: int, y1: int) -> str:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return masks.encode(m)["counts"]


# image id -> (file name on disk, the layers' labels back to front)
IMAGES = {
    "i0": ("plain.png", ["grass", "dog", SCRIPT]),
    "i1": (f"{IMG}.png", ["grass", IMG, "car"]),
    "i2": ("plain2.png", ["grass", "dog", "car"]),
    "i3": ("missing.png", ["grass", "dog", "car"]),  # never written: the gallery shows a placeholder
}


def _dataset(lake: Path, images_dir: Path, version: str, previous: str | None, created: str) -> None:
    root = lake / "datasets" / "name=synth" / f"version={version}"
    images, layers = [], []
    for i, (image_id, (file_name, labels)) in enumerate(IMAGES.items()):
        images.append({"image_id": image_id, "file_name": file_name if i else SCRIPT, "uri": str(images_dir / file_name),
                       "width": W, "height": H, "sha256": f"sha-{image_id}", "source": "cocoa:/x/annotations.json",
                       "split": "val", "n_layers": len(labels), "n_rejected_regions": 0, "order_source": "source:order",
                       "order_pairs": 1, "cycles_broken": 0, "source_caption": SCRIPT})
        boxes = [(0, 24, W, H), (8 + i, 10, 30 + i, 40), (34, 12 + i, 60, 44)]
        for k, (label, box) in enumerate(zip(labels, boxes, strict=True)):
            layers.append({"image_id": image_id, "layer": k, "region_id": f"{image_id}:{k}", "label": label,
                           "label_raw": label, "label_id": k + 1, "is_stuff": k == 0, "height": H, "width": W,
                           "rle": _box_rle(*box), "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                                           float(box[3] - box[1])],
                           "area": (box[2] - box[0]) * (box[3] - box[1]), "visible_rle": None, "visible_area": None,
                           "visible_clipped_pixels": 0, "occlusion_rate": 0.0, "order_source": "source:order"})
    _write(images, schemas.IMAGES, root / "images" / "part-0.parquet")
    _write(layers, schemas.LAYERS, root / "layers" / "part-0.parquet")
    labels = sorted({r["label"] for r in layers})
    vocab = [{"label_id": j + 1, "label": lab, "is_stuff": lab == "grass", "r": 40 * j % 256, "g": 200, "b": 90,
              "instances": sum(r["label"] == lab for r in layers)} for j, lab in enumerate(labels)]
    _write(vocab, schemas.VOCABULARY, root / "vocabulary" / "part-0.parquet")
    _write([{"image_id": r["image_id"], "captioner": "template@1", "prompt": None, "caption": SCRIPT,
             "relations": "[]"} for r in images], schemas.CAPTIONS, root / "captions" / "part-0.parquet")
    rejects = [{"source": "cocoa:/x", "record_kind": "region", "record_key": IMG, "image_id": "i9", "stage": "validate",
                "reason": "empty_mask", "detail": SCRIPT, "record": "{}"},
               {"source": "cocoa:/x", "record_kind": "image", "record_key": "7", "image_id": "7", "stage": "parse",
                "reason": IMG, "detail": "x", "record": "{}"}]
    _write(rejects, schemas.REJECTS, root / "rejects" / "part-0.parquet")
    stats = [{"section": "summary", "key": "images", "value": float(len(images)), "text": None},
             {"section": "summary", "key": "instances", "value": float(len(layers)), "text": None}]
    stats += [{"section": "class", "key": lab, "value": float(v["instances"]), "text": "thing"}
              for lab, v in zip(labels, vocab, strict=True)]
    if previous:
        stats += [{"section": "diff", "key": "previous_version", "value": None, "text": previous},
                  {"section": "diff", "key": "images_added", "value": 1.0, "text": previous},
                  {"section": "diff", "key": f"class:{SCRIPT}", "value": 2.0, "text": previous}]
    _write(stats, schemas.STATS, root / "stats" / "part-0.parquet")
    (root / "CARD.md").write_text(f"# synth@{version}\n\nlabels: {SCRIPT}\n")
    (root / "_manifest.json").write_text(json.dumps({
        "name": "synth", "version": version, "status": "published", "created_at": created,
        "source": f"cocoa:/x/{IMG}", "captioner": "template@1",
        "counts": {"image": {"in": 5, "accepted": 4, "rejected": 1}, "region": {"in": 13, "accepted": 12, "rejected": 1}},
    }))


def _model(lake: Path, version: str, dataset_version: str, run_id: str, created: str) -> None:
    root = lake / "models" / f"version={version}"
    row = {"preset": "tiny", "dataset": "synth", "dataset_version": dataset_version, "run_id": run_id, "steps": 40,
           "final_loss": 0.5, "val_loss": 0.6, "created_at": created, "code_version": "data-1", "path": str(root)}
    _write([row], schemas.MODELS, root / "model.parquet")
    (root / "lineage.json").write_text(json.dumps({
        "version": version, "preset": "tiny", "dataset": "synth", "dataset_version": dataset_version, "run_id": run_id,
        "steps": 40, "metrics": {"loss": 0.5, "val_loss": 0.6}, "created_at": created, "code_version": "data-1"}))
    curve = [{"run_id": run_id, "dataset": "synth", "dataset_version": dataset_version, "step": s,
              "loss": 1.0 / (s + 1), "val_loss": 1.2 / (s + 1) if s % 10 == 0 else None, "lr": 1e-4,
              "step_seconds": 0.1, "samples_per_s": 80.0, "world_size": 1} for s in range(40)]
    _write(curve, schemas.TRAIN_METRICS, lake / "runs" / "kind=train" / f"run=r-{version[:4]}" / "metrics" / "part-0.parquet")


def eval_rows(model_version: str, seed: int) -> list[dict]:
    """One evaluation run's item rows: 4 images x 2 objects, SmartMask under none+box, box and oracle under box."""
    rng = np.random.default_rng(seed)
    rows = []
    for image_id, (_, labels) in IMAGES.items():
        for k in (1, 2):
            item = {"eval_set": EVAL_SET, "dataset_version": DS_V2, "config_hash": f"cfg{seed}", "code_version": "eval-1",
                    "item_id": f"{image_id}-k{k}", "image_id": image_id, "object": labels[k],
                    "size_bin": "1-5%" if k == 1 else ">5%", "area_frac": 0.04 * k}
            for method, version, guidance in [("smartmask", model_version, "none"), ("smartmask", model_version, "box"),
                                              ("box", "baseline:box", "box"), ("oracle", "baseline:oracle", "box")]:
                failed = method == "smartmask" and image_id == "i2" and k == 2 and seed == 2
                x0 = int(rng.integers(0, 30))
                r = {"guidance": guidance, "method": method, "model_version": version,
                     "status": "failed" if failed else "ok", "error": "boom" if failed else ""}
                if not failed:
                    r |= {"n_masks": 4 if method == "smartmask" else 1, "empty": False,
                          "mask_rle": _box_rle(x0, 8, x0 + 20, 40),
                          "iou": float(rng.uniform(0.2, 0.9)), "boundary_f": float(rng.uniform(0, 1)),
                          "best_of_n_iou": float(rng.uniform(0.5, 1)), "clip_score": float(rng.uniform(0.1, 0.3)),
                          "diversity": float(rng.uniform(0, 1)) if method == "smartmask" else None,
                          "plausibility": float(rng.uniform(0, 1)) if guidance == "none" else None,
                          "l2_bg": float(rng.uniform(0, 0.1)), "bg_mse": float(rng.uniform(0, 0.01)),
                          "clip_backbone": "tiny-random-clip(seed=0)", "seconds_inference": 0.5}
                rows.append(item | r)
    return rows


def make_lake(root: Path) -> dict:
    """The small lake every test reads (see the module doc); returns its paths and the eval rows of both runs."""
    from smartmask.evaluation.summary import aggregate_rows, compare_versions

    lake, images_dir = root / "lake", root / "images"
    images_dir.mkdir(parents=True)
    for image_id, (file_name, _) in IMAGES.items():
        if image_id != "i3":
            Image.fromarray(np.full((H, W, 3), 60 + 40 * int(image_id[1]), np.uint8)).save(images_dir / file_name)
    _dataset(lake, images_dir, DS_V1, None, "2026-01-01T00:00:00Z")
    _dataset(lake, images_dir, DS_V2, DS_V1, "2026-01-02T00:00:00Z")
    _model(lake, M1, DS_V1, "run-a", "2026-01-03T00:00:00Z")
    _model(lake, M2, DS_V2, SCRIPT, "2026-01-04T00:00:00Z")
    runs = {}
    for version, seed in ((M1, 1), (M2, 2)):
        rows = eval_rows(version, seed)
        run = f"{EVAL_SET}--{version}--cfg{seed}"
        folder = lake / "runs" / "kind=eval" / f"run={run}"
        _write(rows, schemas.EVAL_ITEMS, folder / "items" / "part-00000.parquet")
        summary = aggregate_rows(rows, n_boot=50)
        if version == M2:
            summary += compare_versions(rows, runs[M1], n_boot=50)
        _write(summary, schemas.EVAL_SUMMARY, folder / "summary.parquet")
        runs[version] = rows
    bulk = lake / "runs" / "kind=bulk_insert" / "run=bulk-1"
    out_png = bulk / "outputs" / "ab" / "abcd" / "inserted.png"
    out_png.parent.mkdir(parents=True)
    Image.fromarray(np.full((H, W, 3), 200, np.uint8)).save(out_png)
    items = []
    for j in range(6):
        ok = j != 5
        items.append({"item_key": f"k{j}", "line": j + 1, "item_id": f"b{j}", "image_uri": str(images_dir / f"{IMG}.png"),
                      "object": SCRIPT if j == 0 else "car", "context": IMG, "guidance": '{"kind": "none"}',
                      "model_version": M2, "config_hash": "bulkcfg", "status": "inserted" if ok else "rejected",
                      "image_sha256": "sha-i1", "width": W, "height": H, "chosen_rank": 0 if ok else None,
                      "inserted_path": ("outputs/ab/abcd/inserted.png" if j < 3 else "../../../../etc/passwd")
                      if ok else None, "mask_rle": _box_rle(5, 5, 20, 20) if ok else None,
                      "t_decode_s": 0.01, "t_suggest_s": 0.2, "t_insert_s": 0.1, "t_write_s": 0.01,
                      "reject_stage": None if ok else "decode", "reject_reason": None if ok else SCRIPT,
                      "reject_detail": None if ok else IMG, "created_at": f"2026-01-05T00:00:{10 + 2 * j:02d}Z",
                      "code_version": "bulk-1"})
    _write(items, schemas.INSERT_ITEMS, bulk / "items" / "part-0.parquet")
    for stamp, ratio in (("20260101-000000", 1.7), ("20260102-000000", 1.5)):
        rec = pa.Table.from_pylist([{"bench": "bench_train_cpu", "at": f"2026-01-0{stamp[7]}T00:00:00Z",
                                     "ratio_2v1": ratio, "ray_overhead": 0.05, "code_version": "abc1234",
                                     "machine_cpu": SCRIPT, "machine_cores": 2, "machine_gpu": None,
                                     "runs": {"a": 1}}])
        rec = rec.set_column(rec.schema.get_field_index("machine_gpu"), "machine_gpu",
                             pa.array([None], pa.string()))  # as bench/_results.py types an all-null column
        folder = lake / "runs" / "kind=bench" / f"run=bench_train_cpu-{stamp}"
        folder.mkdir(parents=True)
        pq.write_table(rec, folder / "items.parquet")
    return {"lake": lake, "images": images_dir, "rows": runs}


# --- the tests ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """The small lake, its dashboard built once, the page's HTML and its parsed data block."""
    from dashboards.build import build_dashboard

    root = tmp_path_factory.mktemp("dash")
    made = make_lake(root)
    out = root / "out" / "dashboard.html"
    summary = build_dashboard(made["lake"], out, gallery=24)
    html = out.read_text(encoding="utf-8")
    return made | {"out": out, "summary": summary, "html": html, "data": _data_block(html)}


def _data_block(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.DOTALL)
    assert m, "no data block"
    return json.loads(m.group(1))


def _table(data: dict, name: str) -> list[dict]:
    t = data["tables"][name]
    return [dict(zip(t["columns"], r, strict=True)) for r in t["rows"]]


PANELS = ("models", "compare", "breakdown", "trends", "training", "lineage", "datasets", "bulk", "bench", "gallery")


def test_every_panel_gets_its_data(built):
    html, data, summary = built["html"], built["data"], built["summary"]
    for panel in PANELS:
        assert f'id="panel-{panel}"' in html and f'data-panel="{panel}"' in html
        assert summary["panels"][panel] > 0, panel
    assert {r["version"] for r in _table(data, "models")} == {M1, M2}
    assert _table(data, "models")[1]["previous_version"] == M1
    agg = _table(data, "eval_aggregate")
    iou = {r["model_version"]: r for r in agg if r["metric"] == "iou" and r["guidance"] == "box"}
    assert set(iou) == {M1, M2, "baseline:box", "baseline:oracle"}
    assert iou[M2]["previous_version"] == M1
    assert iou[M2]["delta_previous"] == pytest.approx(iou[M2]["value"] - iou[M1]["value"], rel=1e-5)
    assert iou[M2]["delta_oracle"] == pytest.approx(iou[M2]["value"] - iou["baseline:oracle"]["value"], rel=1e-5)
    assert any(r["metric"] == "iou_gap_closed" for r in agg)
    assert {r["dimension"] for r in _table(data, "eval_breakdown")} == {"class", "size_bin"}
    assert any(r["version_a"] == M2 and r["version_b"] == M1 for r in _table(data, "eval_paired_stored"))
    assert {r["run"] for r in _table(data, "train_curves")} == {"r-m1m1", "r-m2m2"}
    kinds = {(r["kind"], r["parent_id"]) for r in _table(data, "lineage")}
    assert ("model", DS_V1) in kinds and ("eval_run", M1) in kinds and ("bulk_run", M2) in kinds
    assert {r["version"] for r in _table(data, "datasets")} == {DS_V1, DS_V2}
    classes = {(r["version"], r["label"]): r for r in _table(data, "dataset_classes")}
    assert classes[(DS_V2, "dog")]["previous_n"] == 3 and classes[(DS_V2, "dog")]["delta"] == 0
    assert {r["reason"] for r in _table(data, "dataset_rejects")} == {"empty_mask", IMG}
    bulk = _table(data, "bulk_runs")[0]
    assert (bulk["rows"], bulk["inserted"], bulk["rejected"]) == (6, 5, 1)
    assert bulk["rows_per_s"] == pytest.approx(6 / 10)
    assert _table(data, "bulk_rejects")[0]["reject_reason"] == SCRIPT
    figures = {(r["run"], r["key"]): r for r in _table(data, "bench_figures")}
    assert figures[("bench_train_cpu-20260102-000000", "ratio_2v1")]["met"] is False
    assert figures[("bench_train_cpu-20260101-000000", "ratio_2v1")]["target"] == 1.6
    assert _table(data, "bench_records")[0]["machine_cpu"] == SCRIPT
    assert len(data["gallery"]) == summary["gallery"] == 16  # 8 items x 2 guidance types
    assert len(data["bulk_samples"]) == 5


def test_gallery_draws_what_exists_and_placeholders_the_rest(built):
    gallery = built["data"]["gallery"]
    top = gallery[0]
    assert (top["version_a"], top["version_b"]) == (M2, M1)  # the two newest versions
    assert [e["disagreement"] for e in gallery] == sorted((e["disagreement"] for e in gallery), reverse=True)
    uri = re.compile(r"^data:image/(png|jpeg);base64,[A-Za-z0-9+/=]+$")
    for e in gallery:
        assert {m["model_version"] for m in e["methods"]} >= {M1, M2}
        if e["image_id"] == "i3":  # its file was never written
            assert e["image"] is None and e["image_note"] == "file not found"
        else:
            assert uri.match(e["image"])
        assert uri.match(e["layout"]) and uri.match(e["gt"]) and uri.match(e["gt_outline"])
        for m in e["methods"]:
            assert (m["mask"] is None) == (not m["ok"]), m
    by_item = {e["item_id"]: e for e in gallery}
    assert by_item["i0-k1"]["layout_labels"] == ["grass"] and by_item["i0-k2"]["layout_labels"] == ["dog", "grass"]
    assert by_item["i0-k1"]["layout"] != by_item["i0-k2"]["layout"]
    # the ground truth overlay covers layer k's mask, at the thumbnail's size (64 x 48: not scaled)
    import base64
    import io

    gt = np.asarray(Image.open(io.BytesIO(base64.b64decode(by_item["i0-k1"]["gt"].split(",", 1)[1]))).convert("RGBA"))
    ys, xs = np.nonzero(gt[..., 3])
    assert gt.shape[:2] == (H, W) and (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (8, 10, 30, 40)
    failed = [m for e in gallery for m in e["methods"] if not m["ok"]]
    assert failed and all(m["mask_note"] == "boom" for m in failed)
    # the bulk run's outputs of the same image and object
    outputs = [o for e in gallery for o in e["outputs"]]
    assert outputs and all(uri.match(o["image"]) for o in outputs if o["path"] == "outputs/ab/abcd/inserted.png")
    notes = {s["output_note"] for s in built["data"]["bulk_samples"] if s["output"] is None}
    assert notes == {"path outside its run folder"}  # ../../../../etc/passwd is never read


class _Attrs(HTMLParser):
    """Every tag's attributes, and every stylesheet's text, of a page."""

    def __init__(self):
        super().__init__()
        self.attrs: list[tuple[str, str, str]] = []
        self.styles: list[str] = []
        self.scripts: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        self._in = tag if tag in ("style", "script") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self.styles.append(data)
        elif self._in == "script":
            self.scripts.append(data)


def test_payloads_are_data_never_markup(built):
    html, data = built["html"], built["data"]
    for payload in PAYLOADS:
        assert payload not in html
        escaped = json.dumps(payload, ensure_ascii=False)[1:-1]
        for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            escaped = escaped.replace(ch, esc)
        assert escaped in html  # present, but only as escaped JSON text
    # they reached the data of every kind of panel, as plain strings
    text = json.dumps(data, ensure_ascii=False)
    for where in ("dataset_classes", "dataset_rejects", "bulk_rejects", "bench_records", "models", "eval_breakdown"):
        assert SCRIPT in json.dumps(data["tables"][where], ensure_ascii=False) or IMG in json.dumps(
            data["tables"][where], ensure_ascii=False), where
    assert SCRIPT in text and IMG in text
    assert any(e["object"] == SCRIPT for e in data["gallery"]) and any(e["file"] == f"{IMG}.png" for e in data["gallery"])
    assert any(SCRIPT in r[2] for r in data["tables"]["cards"]["rows"])
    # the page holds exactly its three scripts (data, plotly.js, the page's own) and no markup from the data
    assert html.count("</script>") == 3 and html.lower().count("<script") == 3
    assert "\u2028" not in html and "\u2029" not in html


def test_nothing_points_outside_the_page(built):
    parser = _Attrs()
    parser.feed(built["html"])
    for tag, name, value in parser.attrs:
        if name in ("src", "href", "xlink:href", "action", "formaction", "srcset", "poster", "background", "data"):
            assert value.startswith(("data:", "#")), (tag, name, value)
        if name == "style":
            assert all(u.startswith(("data:", "'data:", '"data:')) for u in re.findall(r"url\(\s*([^)]*)", value))
    for css in parser.styles:
        assert all(u.startswith(("data:", "'data:", '"data:')) for u in re.findall(r"url\(\s*([^)]*)", css)), css
    csp = next(v for t, k, v in parser.attrs if t == "meta" and k == "content" and "default-src" in v)
    assert "default-src 'none'" in csp and "img-src data:" in csp and "connect-src 'none'" in csp
    script_src = re.search(r"script-src ([^;]*)", csp).group(1)
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src and "http" not in script_src
    import base64
    import hashlib

    executable = [s for s in parser.scripts if not s.lstrip().startswith("{")]  # the JSON block does not run
    assert len(executable) == 2
    for s in executable:
        digest = base64.b64encode(hashlib.sha256(s.encode("utf-8")).digest()).decode("ascii")
        assert f"'sha256-{digest}'" in script_src


def _numpy_paired(rows_a: list[dict], rows_b: list[dict], guidance: str, metric: str) -> tuple[int, float, float]:
    a = {r["item_id"]: r.get(metric) for r in rows_a
         if r["status"] == "ok" and r["method"] == "smartmask" and r["guidance"] == guidance}
    b = {r["item_id"]: r.get(metric) for r in rows_b
         if r["status"] == "ok" and r["method"] == "smartmask" and r["guidance"] == guidance}
    d = np.array([a[i] - b[i] for i in sorted(a.keys() & b.keys())
                  if a[i] is not None and b[i] is not None and np.isfinite(a[i]) and np.isfinite(b[i])])
    return len(d), float(d.mean()), float(d.std(ddof=1))


def test_paired_difference_is_the_numpy_one(built):
    from dashboards.build import run_sql
    from smartmask.lake.query import connect

    con = connect(built["lake"])
    try:
        rows = run_sql(con, "eval_paired").to_pylist()
    finally:
        con.close()
    got = {(r["version_a"], r["version_b"], r["guidance"], r["metric"]): r for r in rows}
    embedded = {(r["version_a"], r["version_b"], r["guidance"], r["metric"]): r
                for r in _table(built["data"], "eval_paired")}
    checked = 0
    for guidance in ("none", "box"):
        for metric in ("iou", "boundary_f", "best_of_n_iou", "diversity", "l2_bg", "bg_mse", "clip_score",
                       "plausibility"):
            n, mean, sd = _numpy_paired(built["rows"][M2], built["rows"][M1], guidance, metric) \
                if metric != "plausibility" or guidance == "none" else (0, 0.0, 0.0)
            if not n:
                assert (M2, M1, guidance, metric) not in got
                continue
            r = got[(M2, M1, guidance, metric)]
            half = 1.96 * sd / np.sqrt(n)
            assert r["n"] == n
            assert r["mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
            assert r["sd"] == pytest.approx(sd, rel=1e-9)
            assert (r["low"], r["high"]) == pytest.approx((mean - half, mean + half), rel=1e-9)
            assert r["significant"] == (mean - half > 0 or mean + half < 0)
            mirror = got[(M1, M2, guidance, metric)]
            assert (mirror["mean"], mirror["low"], mirror["high"]) == pytest.approx((-mean, -mean - half, -mean + half))
            assert embedded[(M2, M1, guidance, metric)]["mean"] == pytest.approx(mean, rel=1e-6, abs=1e-9)
            checked += 1
    assert checked == 15  # 7 metrics under box, 8 under none (plausibility)
    assert got[(M2, M1, "none", "iou")]["n"] == 7  # one of M2's rows failed: only the items both scored count


def test_an_empty_lake_builds_a_page_that_says_so(tmp_path):
    from dashboards.build import build_dashboard

    lake = tmp_path / "lake"
    lake.mkdir()
    summary = build_dashboard(lake, tmp_path / "empty.html")
    assert set(summary["panels"]) == set(PANELS) and not any(summary["panels"].values())
    data = _data_block((tmp_path / "empty.html").read_text(encoding="utf-8"))
    assert all(not t["rows"] for t in data["tables"].values()) and data["gallery"] == []
    assert summary["gallery"] == 0 and summary["bytes"] > 1_000_000  # plotly.js is in it


def test_every_panel_query_is_a_plain_select_over_the_views(built):
    from dashboards.build import SQL_DIR
    from smartmask.lake.query import check_sql, run_query

    files = sorted(SQL_DIR.glob("*.sql"))
    assert len(files) >= 15
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert len(check_sql(text)) == 1, f.name
        if "$" not in text:  # runnable as it is with `smartmask query`
            run_query(built["lake"], text)


def test_safe_json_escapes_what_could_end_the_element():
    from dashboards.build import safe_json

    value = {"a": "</script><!-- \u2028\u2029 & <b>", "b": [1.5, None]}
    text = safe_json(value)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == value


def test_cli_writes_the_page_and_prints_its_path(built, tmp_path):
    from typer.testing import CliRunner

    import flows.cli  # noqa: F401  (the app and its other commands)
    import flows.cli_dashboard  # noqa: F401  (registers `dashboard` on the same app)
    from flows.cli_app import app

    runner = CliRunner()
    out = tmp_path / "page.html"
    res = runner.invoke(app, ["dashboard", "--lake", str(built["lake"]), "--out", str(out), "--gallery", "2"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == str(out.resolve())
    assert len(_data_block(out.read_text(encoding="utf-8"))["gallery"]) == 2
    res = runner.invoke(app, ["dashboard", "--lake", str(built["lake"]), "--out", str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.startswith("error: --out:") and len(res.stderr.strip().splitlines()) == 1
    inside = built["lake"] / "datasets" / "name=synth" / "page.html"
    res = runner.invoke(app, ["dashboard", "--lake", str(built["lake"]), "--out", str(inside)])
    assert res.exit_code == 2 and res.stderr.startswith("error: --out:")
    res = runner.invoke(app, ["dashboard", "--lake", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and res.stderr.startswith("error: --lake:")
    (tmp_path / "lake.txt").write_text("not a lake")
    res = runner.invoke(app, ["dashboard", "--lake", str(tmp_path / "lake.txt")])
    assert res.exit_code == 2 and res.stderr.strip().endswith("is a file, not a lake folder")
    res = runner.invoke(app, ["dashboard", "--lake", str(built["lake"]), "--gallery", "-1"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --gallery:") and len(res.stderr.splitlines()) == 1
    res = runner.invoke(app, ["dashboard", "--lake", str(built["lake"]), "--gallery", "0"])  # the default --out
    assert res.exit_code == 0 and res.stdout.strip().splitlines()[-1] == str(built["lake"].resolve() / "dashboard.html")


def test_serve_serves_that_file_only(built):
    import threading
    import urllib.error
    import urllib.request

    from dashboards.serve import make_server

    server = make_server(built["out"], 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as r:
            assert r.read() == built["out"].read_bytes()
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        for path in ("/etc/passwd", "/../dashboard.html", "/dashboard.html/x"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10)
            assert e.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_mask_thumbnail_is_the_same_decoded_or_read_from_its_runs(monkeypatch):
    """Both paths of `mask_thumb` sample the same 2 x 2 points per thumbnail pixel: the same thumbnail, and a
    thumbnail of a rectangle is the rectangle scaled."""
    import dashboards.images as di

    rng = np.random.default_rng(5)
    cases = [((rng.uniform(size=(480, 640)) < 0.5).astype(np.uint8), (192, 144)),
             ((rng.uniform(size=(37, 53)) < 0.3).astype(np.uint8), (20, 14))]
    box = np.zeros((480, 640), np.uint8)
    box[120:360, 160:480] = 1
    cases.append((box, (192, 144)))
    for m, size in cases:
        rle = masks.encode(m)["counts"]
        decoded = di.mask_thumb(rle, *m.shape, size)
        monkeypatch.setattr(di, "DECODE_PIXELS", 0)
        assert (decoded == di.mask_thumb(rle, *m.shape, size)).all()
        monkeypatch.undo()
    expected = np.zeros((144, 192), bool)
    expected[36:108, 48:144] = True
    assert (decoded == expected).all()


def test_large_masks_are_read_from_their_runs(monkeypatch):
    """Above DECODE_PIXELS a mask is sampled from its RLE runs, never decoded whole: at full size that is exactly the
    decoded mask, and the run lengths are pycocotools' own."""
    import dashboards.images as di

    monkeypatch.setattr(di, "DECODE_PIXELS", 0)
    rng = np.random.default_rng(3)
    for h, w in [(1, 1), (7, 5), (48, 64), (120, 37)]:
        for m in ((rng.uniform(size=(h, w)) < 0.4).astype(np.uint8), np.ones((h, w), np.uint8),
                  np.zeros((h, w), np.uint8)):
            rle = masks.encode(m)["counts"]
            runs = di.rle_counts(rle)
            assert (m == np.repeat(np.arange(runs.size) % 2, runs).reshape(w, h).T).all()
            assert (di.mask_thumb(rle, h, w, (w, h)) == m.astype(bool)).all()
    with pytest.raises(ValueError):
        di.mask_thumb(masks.encode(np.ones((4, 4), np.uint8))["counts"], 5, 5, (5, 5))
