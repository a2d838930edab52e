"""Dataset cards: a statistics table (long form, queryable across versions) and a CARD.md per version.

Written into the staging directory just before publish, so the card appears atomically with its version.
The diff is against the previous published version of the same dataset name (newest `created_at`).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from smartmask.lake.io import rows_to_table, write_parquet_atomic
from smartmask.lake.paths import dataset_dir
from smartmask.lake.schemas import STATS


def _q(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


def previous_version(lake: Path, name: str, exclude: str) -> tuple[str, Path] | None:
    best = None
    for m in (lake / "datasets" / f"name={name}").glob("version=*/_manifest.json"):
        man = json.loads(m.read_text())
        if man["version"] != exclude and (best is None or man["created_at"] > best[0]):
            best = (man["created_at"], man["version"], m.parent)
    return (best[1], best[2]) if best else None


def compute_stats(staging: Path, previous: tuple[str, Path] | None) -> list[dict]:
    con = duckdb.connect()
    t = {k: f"read_parquet('{staging / k}/*.parquet')" for k in ("images", "layers", "rejects", "captions")}
    rows: list[dict] = []

    def add(section: str, key: str, value: float | None, text: str | None = None) -> None:
        rows.append({"section": section, "key": key, "value": None if value is None else float(value), "text": text})

    (n_img, cycles, with_cycles, mean_layers), = _q(
        con, f"SELECT count(*), coalesce(sum(cycles_broken), 0), count_if(cycles_broken > 0), avg(n_layers) FROM {t['images']}")
    (n_inst, n_cls, occluded, mean_occ, n_stuff), = _q(
        con, f"SELECT count(*), count(DISTINCT label), count_if(occlusion_rate > 0), avg(occlusion_rate), "
             f"count_if(is_stuff) FROM {t['layers']}")
    (n_rej,), = _q(con, f"SELECT count(*) FROM {t['rejects']}")
    for key, value in [("images", n_img), ("instances", n_inst), ("classes", n_cls), ("stuff_instances", n_stuff),
                       ("layers_per_image_mean", mean_layers), ("occluded_instances", occluded),
                       ("occlusion_rate_mean", mean_occ), ("cycles_broken", cycles),
                       ("images_with_cycles", with_cycles), ("rejects", n_rej)]:
        add("summary", key, value)
    for label, n, stuff in _q(con, f"SELECT label, count(*), bool_or(is_stuff) FROM {t['layers']} GROUP BY label "
                                   f"ORDER BY count(*) DESC, label"):
        add("class", label, n, "stuff" if stuff else "thing")
    for n_layers, n in _q(con, f"SELECT n_layers, count(*) FROM {t['images']} GROUP BY n_layers ORDER BY n_layers"):
        add("layers_per_image", f"{n_layers:03d}", n)
    for captioner, n, example in _q(con, f"SELECT captioner, count(*), min(caption) FROM {t['captions']} "
                                         f"GROUP BY captioner ORDER BY captioner"):
        add("captions", captioner, n, example)
    for reason, kind, n in _q(con, f"SELECT reason, record_kind, count(*) FROM {t['rejects']} "
                                   f"GROUP BY ALL ORDER BY count(*) DESC, reason"):
        add("rejects", f"{kind}:{reason}", n)
    if previous:
        pv, pdir = previous
        p_img, p_lay = f"read_parquet('{pdir}/images/*.parquet')", f"read_parquet('{pdir}/layers/*.parquet')"
        (added,), = _q(con, f"SELECT count(*) FROM {t['images']} a ANTI JOIN {p_img} b USING (image_id)")
        (removed,), = _q(con, f"SELECT count(*) FROM {p_img} b ANTI JOIN {t['images']} a USING (image_id)")
        (changed,), = _q(con, f"SELECT count(*) FROM {t['images']} a JOIN {p_img} b USING (image_id) "
                              f"WHERE a.sha256 IS DISTINCT FROM b.sha256")
        (p_inst,), = _q(con, f"SELECT count(*) FROM {p_lay}")
        add("diff", "previous_version", None, pv)
        for key, value in [("images_added", added), ("images_removed", removed), ("images_changed", changed),
                           ("instances_delta", n_inst - p_inst)]:
            add("diff", key, value, pv)
        for label, delta in _q(con, f"SELECT label, sum(d) FROM (SELECT label, 1 AS d FROM {t['layers']} UNION ALL "
                                    f"SELECT label, -1 FROM {p_lay}) GROUP BY label HAVING sum(d) != 0 ORDER BY label"):
            add("diff", f"class:{label}", delta, pv)
    return rows


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_card(manifest: dict, stats: list[dict]) -> str:
    by = {}
    for r in stats:
        by.setdefault(r["section"], []).append(r)
    s = {r["key"]: r["value"] for r in by.get("summary", [])}
    out = [f"# Dataset `{_md(manifest['name'])}` version `{manifest['version']}`", "",
           f"- created: {manifest['created_at']}; source: `{_md(manifest['source'])}`",
           f"- code version: `{manifest['code_version']}`; captioner: `{_md(manifest['captioner'])}`",
           f"- images: {int(s['images'])}; instances: {int(s['instances'])} ({int(s['stuff_instances'])} stuff); "
           f"classes: {int(s['classes'])}; layers per image: {s['layers_per_image_mean'] or 0:.1f}",
           f"- occluded instances: {int(s['occluded_instances'])}; mean occlusion rate: "
           f"{s['occlusion_rate_mean'] or 0:.3f}; order cycles broken: {int(s['cycles_broken'])} "
           f"(in {int(s['images_with_cycles'])} images)", "", "## Records", "",
           "| kind | in | accepted | rejected |", "|---|---|---|---|"]
    out += [f"| {k} | {v['in']} | {v['accepted']} | {v['rejected']} |" for k, v in manifest["counts"].items()]
    sections = [("Classes", "class", "label", "instances"), ("Layers per image", "layers_per_image", "layers", "images"),
                ("Captions", "captions", "captioner", "images"), ("Reject reasons", "rejects", "kind:reason", "count")]
    for title, sec, kcol, vcol in sections:
        out += ["", f"## {title}", "", f"| {kcol} | {vcol} |", "|---|---|"]
        out += [f"| {_md(r['key'].lstrip('0') or '0') if sec == 'layers_per_image' else _md(r['key'])} | "
                f"{int(r['value'])} |" for r in by.get(sec, [])] or ["| (none) | 0 |"]
    diff = by.get("diff")
    out += ["", "## Changes since the previous version", ""]
    if not diff:
        out.append("First version of this dataset.")
    else:
        out.append(f"Previous version: `{diff[0]['text']}`")
        out += [""] + [f"- {_md(r['key'])}: {int(r['value']):+d}" for r in diff[1:]]
    return "\n".join(out) + "\n"


def write_card(lake: Path, name: str, version: str, staging: Path, manifest: dict) -> list[dict]:
    prev = previous_version(lake, name, version)
    if prev and not (dataset_dir(lake, name, prev[0]) / "images").exists():
        prev = None
    stats = compute_stats(staging, prev)
    write_parquet_atomic(rows_to_table(stats, STATS), staging / "stats" / "part-00000.parquet")
    tmp = staging / ".CARD.md.tmp"
    tmp.write_text(render_card(manifest, stats))
    tmp.replace(staging / "CARD.md")
    return stats
