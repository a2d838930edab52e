"""Dataset cards: a statistics table (long form, queryable across versions) and a CARD.md per version.

Written into the staging directory just before publish, so the card appears atomically with its version.
The diff is against the previous published version of the same dataset name (newest `created_at`) that has images.
Paths reach DuckDB through its relation API, never through SQL text, and everything the card shows from the data
(labels, names, sources, reject codes) is escaped, because it comes from other people's files.
"""

from __future__ import annotations

import html
import json
import re
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
        if man.get("status") == "no_accepted_records":  # holds only rejects: nothing to diff against
            continue
        if man["version"] != exclude and (best is None or man["created_at"] > best[0]):
            best = (man["created_at"], man["version"], m.parent)
    return (best[1], best[2]) if best else None


def _views(con: duckdb.DuckDBPyConnection, prefix: str, folder: Path, tables: tuple[str, ...]) -> None:
    """`<prefix><table>` views over `folder/<table>/*.parquet`, registered through the relation API with the files
    listed by Python: the path never becomes SQL text or a DuckDB glob, so a lake path with a quote, a semicolon or
    a `[` in it is just a path."""
    for table in tables:
        files = sorted(str(p) for p in (folder / table).glob("*.parquet"))
        con.read_parquet(files).create_view(f"{prefix}{table}")


def compute_stats(staging: Path, previous: tuple[str, Path] | None) -> list[dict]:
    con = duckdb.connect()
    _views(con, "", staging, ("images", "layers", "rejects", "captions"))
    rows: list[dict] = []

    def add(section: str, key: str, value: float | None, text: str | None = None) -> None:
        rows.append({"section": section, "key": key, "value": None if value is None else float(value), "text": text})

    (n_img, cycles, with_cycles, mean_layers), = _q(
        con, "SELECT count(*), coalesce(sum(cycles_broken), 0), count_if(cycles_broken > 0), avg(n_layers) FROM images")
    clipped = "coalesce(sum(visible_clipped_pixels), 0)" if "visible_clipped_pixels" in con.table("layers").columns \
        else "0"
    (n_inst, n_cls, occluded, mean_occ, n_stuff, n_clipped), = _q(
        con, f"SELECT count(*), count(DISTINCT label), count_if(occlusion_rate > 0), avg(occlusion_rate), "
             f"count_if(is_stuff), {clipped} FROM layers")
    (n_rej,), = _q(con, "SELECT count(*) FROM rejects")
    for key, value in [("images", n_img), ("instances", n_inst), ("classes", n_cls), ("stuff_instances", n_stuff),
                       ("layers_per_image_mean", mean_layers), ("occluded_instances", occluded),
                       ("occlusion_rate_mean", mean_occ), ("cycles_broken", cycles),
                       ("images_with_cycles", with_cycles), ("visible_pixels_clipped", n_clipped),
                       ("rejects", n_rej)]:
        add("summary", key, value)
    for label, n, stuff in _q(con, "SELECT label, count(*), bool_or(is_stuff) FROM layers GROUP BY label "
                                   "ORDER BY count(*) DESC, label"):
        add("class", label, n, "stuff" if stuff else "thing")
    for n_layers, n in _q(con, "SELECT n_layers, count(*) FROM images GROUP BY n_layers ORDER BY n_layers"):
        add("layers_per_image", f"{n_layers:03d}", n)
    for captioner, n, example in _q(con, "SELECT captioner, count(*), min(caption) FROM captions "
                                         "GROUP BY captioner ORDER BY captioner"):
        add("captions", captioner, n, example)
    for reason, kind, n in _q(con, "SELECT reason, record_kind, count(*) FROM rejects "
                                   "GROUP BY ALL ORDER BY count(*) DESC, reason"):
        add("rejects", f"{kind}:{reason}", n)
    if previous:
        pv, pdir = previous
        _views(con, "prev_", pdir, ("images", "layers"))
        (added,), = _q(con, "SELECT count(*) FROM images a ANTI JOIN prev_images b USING (image_id)")
        (removed,), = _q(con, "SELECT count(*) FROM prev_images b ANTI JOIN images a USING (image_id)")
        (changed,), = _q(con, "SELECT count(*) FROM images a JOIN prev_images b USING (image_id) "
                              "WHERE a.sha256 IS DISTINCT FROM b.sha256")
        (p_inst,), = _q(con, "SELECT count(*) FROM prev_layers")
        add("diff", "previous_version", None, pv)
        for key, value in [("images_added", added), ("images_removed", removed), ("images_changed", changed),
                           ("instances_delta", n_inst - p_inst)]:
            add("diff", key, value, pv)
        for label, delta in _q(con, "SELECT label, sum(d) FROM (SELECT label, 1 AS d FROM layers UNION ALL "
                                    "SELECT label, -1 FROM prev_layers) GROUP BY label HAVING sum(d) != 0 "
                                    "ORDER BY label"):
            add("diff", f"class:{label}", delta, pv)
    con.close()
    return rows


_MD_SPECIAL = re.compile(r"([\\`*_\[\]()!#|~{}])")


def _md(text: object) -> str:
    """Data in a table cell or a sentence, shown as the text it is: HTML-escaped (Markdown renders raw HTML), then
    Markdown's punctuation backslash-escaped (no links, images, emphasis or headings from a label), one line."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(str(text).split()), quote=False))


def _code(text: object) -> str:
    """Data inside a `code span`: HTML is not rendered there, but a backtick would end the span."""
    return " ".join(str(text).split()).replace("`", "'")


def _cell(section: str, key: str) -> str:
    if section == "layers_per_image":
        return key.lstrip("0") or "0"
    if section in ("rejects", "captions"):  # our reason codes and captioner ids: code spans
        return f"`{_code(key)}`".replace("|", "\\|")
    return _md(key)


def _int(v: float | None) -> int:
    return 0 if v is None else int(v)


def render_card(manifest: dict, stats: list[dict]) -> str:
    by: dict[str, list[dict]] = {}
    for r in stats:
        by.setdefault(r["section"], []).append(r)
    s = {r["key"]: r["value"] for r in by.get("summary", [])}
    out = [f"# Dataset `{_code(manifest['name'])}` version `{_code(manifest['version'])}`", ""]
    if manifest.get("status") == "no_accepted_records":
        out += ["**No record of the source was accepted**: this version holds only its rejects (below). "
                "It is never resolved as a dataset's newest version and cannot be trained on.", ""]
    out += [f"- created: {_md(manifest['created_at'])}; source: `{_code(manifest['source'])}`",
            f"- code version: `{_code(manifest['code_version'])}`; captioner: `{_code(manifest['captioner'])}`",
            f"- images: {_int(s.get('images'))}; instances: {_int(s.get('instances'))} "
            f"({_int(s.get('stuff_instances'))} stuff); classes: {_int(s.get('classes'))}; "
            f"layers per image: {s.get('layers_per_image_mean') or 0:.1f}",
            f"- occluded instances: {_int(s.get('occluded_instances'))}; mean occlusion rate: "
            f"{s.get('occlusion_rate_mean') or 0:.3f}; order cycles broken: {_int(s.get('cycles_broken'))} "
            f"(in {_int(s.get('images_with_cycles'))} images)",
            f"- visible pixels clipped to their amodal mask (boundary noise): {_int(s.get('visible_pixels_clipped'))}",
            "", "## Records", "", "| kind | in | accepted | rejected |", "|---|---|---|---|"]
    out += [f"| {_md(k)} | {v['in']} | {v['accepted']} | {v['rejected']} |" for k, v in manifest["counts"].items()]
    if manifest.get("source_notes"):  # e.g. the context world's rules: what shapes depend on
        out += ["", "## Source notes", ""] + [f"- {_md(n)}" for n in manifest["source_notes"]]
    sections = [("Classes", "class", "label", "instances"), ("Layers per image", "layers_per_image", "layers", "images"),
                ("Captions", "captions", "captioner", "images"), ("Reject reasons", "rejects", "kind:reason", "count")]
    for title, sec, kcol, vcol in sections:
        out += ["", f"## {title}", "", f"| {kcol} | {vcol} |", "|---|---|"]
        out += [f"| {_cell(sec, r['key'])} | {_int(r['value'])} |" for r in by.get(sec, [])] or ["| (none) | 0 |"]
    diff = by.get("diff")
    out += ["", "## Changes since the previous version", ""]
    if not diff:
        out.append("First version of this dataset.")
    else:
        out.append(f"Previous version: `{_code(diff[0]['text'])}`")
        out += [""] + [f"- {_md(r['key'])}: {_int(r['value']):+d}" for r in diff[1:]]
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
