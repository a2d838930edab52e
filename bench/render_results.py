"""Regenerate bench/RESULTS.md from the records in bench/results/*.json.

    ./dev sh python bench/render_results.py            # rewrite bench/RESULTS.md
    ./dev sh python bench/render_results.py --check    # exit 1 when bench/RESULTS.md is out of date

One section per benchmark script (bench/bench_*.py, bench/gpu_*.py; what it measures is its docstring's first
line), then a table of its records, oldest first: date, code version, machine, each headline figure with its
target, and the figure divided by its target ("≥" targets are met at 1× or more, "≤" limits at 1× or less).
The output depends only on the records and the scripts' docstrings (no clock, no machine), so it is reproducible.
Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OUT = HERE / "RESULTS.md"
_STAMP = re.compile(r"^(?P<name>.+)-\d{8}-\d{6}$")
_OPS = {">=": "≥", "<=": "≤"}


@dataclass(frozen=True)
class Figure:
    key: str  # a field of the record
    label: str
    fmt: str = "{:.3g}"
    op: str | None = None  # ">=" or "<=": how the target reads; None: no target
    target: float | None = None
    target_key: str | None = None  # a record field that overrides `target` when present
    percent: bool = False

    def value(self, rec: dict) -> float | None:
        v = rec.get(self.key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    def target_of(self, rec: dict) -> float | None:
        t = rec.get(self.target_key) if self.target_key else None
        return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else self.target

    def show(self, v: float | None) -> str:
        if v is None:
            return "–"
        return f"{v * 100:+.1f}%" if self.percent else self.fmt.format(v)

    def header(self) -> str:
        if self.op is None or self.target is None:
            return self.label
        return f"{self.label} ({_OPS[self.op]} {self.show(self.target).lstrip('+')})"


def _samples_per_s_2w(rec: dict) -> dict:
    if isinstance(rec.get("batch"), int | float) and isinstance(rec.get("step_s_ray2"), int | float):
        return {"samples_per_s_2w": rec["batch"] / rec["step_s_ray2"]}
    return {}


# Headline figures per benchmark (the targets are the ones each script prints).
HEADLINES: dict[str, list[Figure]] = {
    "bench_sampler": [Figure("samples_per_s", "samples/s", "{:.0f}", ">=", 250.0, "target_per_s")],
    "bench_rebuild": [Figure("images_per_s", "images/s", "{:.1f}", ">=", 100.0),
                      Figure("ratio_vs_decode", "rebuild / decode", "{:.2f}", "<=", 3.0)],
    "bench_captions": [Figure("template_images_per_s", "template img/s", "{:.0f}", ">=", 2000.0),
                       Figure("blip_ratio", "BLIP b32 / b1", "{:.2f}", ">=", 4.0)],
    "bench_train_cpu": [Figure("ratio_2v1", "2 vs 1", "{:.2f}", ">=", 1.6),
                        Figure("ray_overhead", "overhead", op="<=", target=0.10, percent=True),
                        Figure("samples_per_s_2w", "2w samples/s", "{:.1f}"),
                        Figure("rounds", "rounds", "{:.0f}")],
    "bench_eval": [Figure("items_per_s", "metric items/s", "{:.2f}"),
                   Figure("metrics_share", "metrics share", "{:.1%}", "<=", 0.10, "share_target"),
                   Figure("rows_per_s", "rows/s", "{:.1f}")],
    "bench_dashboard": [Figure("build_s", "build (s)", "{:.3g}", "<=", 10.0, "build_target_s"),
                        Figure("ratio", "build / DuckDB queries", "{:.3g}", "<=", 2.0, "ratio_target"),
                        Figure("html_mb", "HTML (MB)", "{:.3g}", "<=", 20.0, "html_target_mb")],
    "bench_quality": [Figure("context_world", "context world", "{:.0f}"), Figure("steps", "steps", "{:.0f}"),
                      Figure("target_floor", "smallest target", "{:.2%}"),
                      Figure("context_model_minus_oracle", "context classes: model − oracle", "{:+.3f}"),
                      Figure("person_big_model_minus_oracle", "people ≥ 1%: model − oracle", "{:+.3f}"),
                      Figure("all_model_minus_box", "all: model − box", "{:+.3f}")],
    "gpu_suggest": [Figure("ratio", "speed-up vs SD inpaint", "{:.2f}", ">=", 2.0, "target"),
                    Figure("ours_latency_s", "our latency (s)", "{:.3f}")],
    "gpu_train_step": [Figure("ratio", "throughput vs IP2P step", "{:.2f}", ">=", 1.0),
                       Figure("ours_mfu", "MFU", "{:.1%}", ">=", 0.40),
                       Figure("ours_samples_per_s", "samples/s", "{:.1f}")],
}
# A line under a benchmark's description, where its records need one to be read right.
NOTES = {
    "bench_train_cpu": ("\"2 vs 1\": 2 Ray workers vs 1 at the same global batch (throughput); overhead: Ray "
                        "Train with 1 worker vs the same loop in-process (per step). Records without `rounds` ran "
                        "each configuration once, in one order, and this VM's speed drifts by up to ~30% within "
                        "minutes: read them as noisy."),
    "bench_quality": ("Model − oracle and model − box: mean IoU differences at image resolution (intervals in the "
                      "records). Records without a smallest target trained on the tiny preset's floor of the day, 1% "
                      "of the image; the two of 17:37 ran on an intermediate context world (dogs beside a person "
                      "with probability 0.7, no lamp rule)."),
}
# Derived fields, computed from a record before its figures are read.
DERIVED = {"bench_train_cpu": _samples_per_s_2w,
           "bench_quality": lambda rec: rec | {"target_floor": rec.get("target_floor") or rec.get("min_area_frac")}}
_META = {"bench", "at", "code_version", "machine", "backfilled", "cpus", "host", "processor", "cores", "device"}


def _docstring(script: Path) -> tuple[str, str | None]:
    """(first line, the first command line it shows) of a script's module docstring."""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    lines = doc.splitlines()
    first = lines[0].strip() if lines else script.stem
    command = next((ln.strip().split("  #")[0].strip() for ln in lines if ln.startswith("    ")
                    and "bench/" in ln and "python" in ln), None)
    return first, command


def _machine(rec: dict) -> str:
    """One line describing a record's `machine`."""
    m = rec.get("machine")
    if not isinstance(m, dict):
        return f"not recorded (device: {rec['device']})" if rec.get("device") else "not recorded"
    parts = [str(m["description"])] if m.get("description") else []
    parts.append(str(m.get("cpu") or "CPU model not recorded"))
    if m.get("cores"):
        parts.append(f"{m['cores']} cores")
    if m.get("memory_gib"):
        parts.append(f"{m['memory_gib']:g} GiB")
    parts.append(f"GPU {m['gpu']}" if m.get("gpu") else "no GPU")
    if m.get("platform"):
        parts.append(str(m["platform"]))
    if m.get("host"):
        parts.append(f"host {m['host']}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _vs_target(fig: Figure, rec: dict, v: float | None) -> str:
    t = fig.target_of(rec)
    if v is None or t is None or fig.op is None or t <= 0:
        return "–"
    met = "met" if (v >= t if fig.op == ">=" else v <= t) else "not met"
    return met if v <= 0 else f"{v / t:.2f}× {met}"  # a ratio to a limit says nothing when the figure is <= 0


def load_records(results: Path = RESULTS) -> dict[str, list[tuple[str, dict]]]:
    """Benchmark name → [(file name, record)], oldest first (by `at`, then file name)."""
    out: dict[str, list[tuple[str, dict]]] = {}
    for path in sorted(results.glob("*.json")):
        m = _STAMP.match(path.stem)
        name = m.group("name") if m else path.stem
        out.setdefault(name, []).append((path.name, json.loads(path.read_text(encoding="utf-8"))))
    for recs in out.values():
        recs.sort(key=lambda r: (str(r[1].get("at", "")), r[0]))
    return out


def _generic(recs: list[dict]) -> list[Figure]:
    """For a benchmark without a HEADLINES entry: its first four numeric top-level fields."""
    keys: list[str] = []
    for rec in recs:
        for k, v in rec.items():
            if k not in _META and k not in keys and isinstance(v, int | float) and not isinstance(v, bool):
                keys.append(k)
    return [Figure(k, k) for k in keys[:4]]


def section(name: str, script: Path | None, records: list[tuple[str, dict]], machines: dict[str, str]) -> list[str]:
    what, command = _docstring(script) if script is not None else (f"(no script bench/{name}.py)", None)
    lines = [f"## {name}", "", what]
    if command:
        lines += ["", f"Run: `{command}`"]
    if name in NOTES:
        lines += ["", *textwrap.wrap(NOTES[name], 116)]
    lines.append("")
    if not records:
        return lines + ["No records yet.", ""]
    recs = [rec | DERIVED.get(name, lambda r: {})(rec) for _, rec in records]
    figures = HEADLINES.get(name) or _generic(recs)
    head = ["UTC date", "code", "machine"]
    for f in figures:
        head.append(f.header())
        if f.op is not None:
            head.append("vs target")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    backfilled = False
    for rec in recs:
        at = str(rec.get("at", ""))
        date = at[:16].replace("T", " ") if at else "?"
        code = str(rec.get("code_version") or "unknown")
        if rec.get("backfilled"):
            code += "†"
            backfilled = True
        row = [date, code, machines[_machine(rec)]]
        for f in figures:
            v = f.value(rec)
            row.append(f.show(v))
            if f.op is not None:
                row.append(_vs_target(f, rec, v))
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    if backfilled:
        lines += ["", "† code version added after the run: the commit that added the record's file."]
    return lines + [""]


def render(results: Path = RESULTS, bench_dir: Path = HERE) -> str:
    records = load_records(results)
    scripts = {p.stem: p for p in sorted([*bench_dir.glob("bench_*.py"), *bench_dir.glob("gpu_*.py")])}
    names = sorted(set(scripts) | set(records))
    machines: dict[str, str] = {}  # description -> M1, M2, ... in order of first appearance
    for name in names:
        for _, rec in records.get(name, []):
            machines.setdefault(_machine(rec), f"M{len(machines) + 1}")
    lines = ["# Benchmark results", "",
             "Generated from `bench/results/*.json` by `bench/render_results.py`; do not edit by hand. Regenerate",
             "with `./dev sh python bench/render_results.py`. Each benchmark writes one JSON record per run",
             "(`bench/_results.py`), with the code version and the machine it ran on. \"vs target\" is the figure",
             "divided by its target: a \"≥\" target is met at 1× or more, a \"≤\" limit at 1× or less.", "",
             "Machines:", ""]
    lines += [f"- **{label}**: {desc}" for desc, label in machines.items()] + [""]
    for name in names:
        lines += section(name, scripts.get(name), records.get(name, []), machines)
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when bench/RESULTS.md is out of date")
    a = ap.parse_args()
    text = render()
    if a.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is out of date: run python bench/render_results.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
