// The dashboard page: draws the panels from the JSON data block (every aggregate was computed by DuckDB at build
// time; this script only selects and draws). Safety rules:
//  - every string from the data enters the DOM as a text node or a property (textContent, option.text, img.alt);
//    never through innerHTML or an HTML-parsing API;
//  - Plotly reads some HTML-like tags in its text (titles, ticks, legends, hover labels): every data string given
//    to Plotly goes through pt(), which escapes & < > so Plotly shows it as the characters it is;
//  - an image source must be a data:image/png|jpeg base64 URI made by the build, or it is not shown.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("data").textContent);
  const PLOT_CONFIG = { displaylogo: false, responsive: true, showLink: false, showSendToCloud: false,
                        modeBarButtonsToRemove: ["sendDataToCloud"] };
  const DATA_URI = /^data:image\/(png|jpeg);base64,[A-Za-z0-9+/=]+$/;
  const ATTRS = new Set(["id", "class", "title", "colspan", "type", "min", "max", "step", "value", "open",
                         "aria-label"]);

  // ---- small helpers ------------------------------------------------------------------------------------------
  function rows(name) {
    const t = (DATA.tables || {})[name];
    if (!t) return [];
    return t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c, r[i]])));
  }
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = String(v);
      else if (k.startsWith("data-") || ATTRS.has(k)) e.setAttribute(k, String(v));
      else throw new Error("attribute not allowed: " + k);
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      e.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }
  function pt(s) {  // a data string as Plotly text: shown literally, never as markup
    return String(s === null || s === undefined ? "" : s)
      .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  function num(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return v.toLocaleString("en-US");
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    return v.toFixed(digits === undefined ? 3 : digits);
  }
  function signed(v) { return v === null || v === undefined ? "–" : (v > 0 ? "+" : "") + num(v); }
  function short(v) { return v && /^[0-9a-f]{16}$/.test(v) ? v.slice(0, 8) : v; }
  function img(uri, alt) {
    if (typeof uri !== "string" || !DATA_URI.test(uri)) return null;
    const i = document.createElement("img");
    i.src = uri;
    i.alt = alt || "";
    return i;
  }
  function placeholder(why) { return h("div", { class: "ph" }, why || "not available"); }
  function empty(text) { return h("p", { class: "empty", "data-empty": "true" }, text); }
  function table(columns, data, opts) {
    // columns: [{label, get(row) -> string|Node, cls}]
    const o = opts || {};
    return h("div", { class: "table-wrap" },
      h("table", { "data-table": o.name || null },
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c.label)))),
        h("tbody", {}, data.map((r) => h("tr", {}, columns.map((c) => {
          const v = c.get(r);
          return h("td", { class: c.cls || null }, v instanceof Node ? v : (v === null || v === undefined ? "–" : String(v)));
        }))))));
  }
  function chart(name, cls) { return h("div", { class: "chart" + (cls ? " " + cls : ""), "data-chart": name }); }
  function noTags(v) {  // the safety net under pt(): a raw < or > never reaches Plotly (idempotent on pt() output)
    if (typeof v === "string") return v.replace(/</g, "&lt;").replace(/>/g, "&gt;");
    return Array.isArray(v) ? v.map(noTags) : v;
  }
  function plot(div, traces, layout) {
    for (const t of traces) {
      for (const k of ["x", "y", "text", "hovertext", "name", "customdata", "labels"]) if (k in t) t[k] = noTags(t[k]);
    }
    // no Plotly titles (the page's headings name each chart); the legend sits above the plot, left of the mode bar
    const base = { margin: { l: 56, r: 16, t: 40, b: 48 }, font: { size: 12 }, hoverlabel: { namelength: -1 },
                   legend: { orientation: "h", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom" } };
    Plotly.react(div, traces, Object.assign(base, layout || {}), PLOT_CONFIG);
  }
  function setBody(panel, ...kids) {
    const sec = document.getElementById("panel-" + panel);
    const body = sec.querySelector(".body");
    if (sec.dataset.plotted) for (const d of body.querySelectorAll(".js-plotly-plot")) Plotly.purge(d);
    body.replaceChildren(...kids.flat(Infinity).filter((k) => k));
    sec.dataset.plotted = "1";
    return body;
  }
  function fillSelect(sel, options, value) {
    sel.replaceChildren(...options.map((o) => {
      const opt = document.createElement("option");
      opt.value = o.value;
      opt.text = o.label;
      return opt;
    }));
    if (options.some((o) => o.value === value)) sel.value = value;
  }
  function uniq(xs) { return [...new Set(xs.filter((x) => x !== null && x !== undefined))]; }
  function groupBy(xs, key) {
    const m = new Map();
    for (const x of xs) { const k = key(x); if (!m.has(k)) m.set(k, []); m.get(k).push(x); }
    return m;
  }
  function interval(r) {
    return r.low === null || r.low === undefined ? "" : " [" + num(r.low) + ", " + num(r.high) + "]";
  }
  function errorBars(rs, key) {
    const k = key || "value";
    return { type: "data", symmetric: false, array: rs.map((r) => (r.high === null ? null : r.high - r[k])),
             arrayminus: rs.map((r) => (r.low === null ? null : r[k] - r.low)), visible: true };
  }

  // ---- state and data ------------------------------------------------------------------------------------------
  const T = {};
  for (const name of Object.keys(DATA.tables || {})) T[name] = rows(name);
  const models = T.models || [];
  const ordinal = new Map(models.map((m) => [m.version, m.ordinal]));
  const HIGHER = new Map();
  for (const r of T.eval_aggregate || []) HIGHER.set(r.metric, r.higher_is_better);
  const METRIC_ORDER = ["iou", "boundary_f", "best_of_n_iou", "iou_gap_closed", "diversity", "plausibility",
                        "l2_bg", "bg_mse", "clip_score", "local_fid"];
  const GUIDANCE_ORDER = ["none", "box", "point", "scribble"];
  function byOrder(order) { return (a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99) || String(a).localeCompare(String(b)); }
  function versionSort(a, b) {
    const oa = ordinal.get(a), ob = ordinal.get(b);
    if (oa !== undefined && ob !== undefined) return oa - ob;
    if (oa !== undefined) return -1;
    if (ob !== undefined) return 1;
    return String(a).localeCompare(String(b));
  }
  function label(v) {
    if (v === null || v === undefined) return "–";
    return ordinal.has(v) ? "v" + ordinal.get(v) + " " + short(v) : v;
  }
  const state = {};
  const ctl = {
    evalSet: document.getElementById("eval-set"), a: document.getElementById("version-a"),
    b: document.getElementById("version-b"), guidance: document.getElementById("guidance"),
    metric: document.getElementById("metric"),
  };
  const evalRows = (name) => (T[name] || []).filter((r) => r.eval_set === state.evalSet);

  function versionsOfSet() {
    return uniq((T.eval_aggregate || []).filter((r) => r.eval_set === state.evalSet).map((r) => r.model_version)
      .concat((T.eval_paired || []).filter((r) => r.eval_set === state.evalSet).map((r) => r.version_a)))
      .sort(versionSort);
  }
  function setupControls() {
    const sets = uniq((T.eval_aggregate || []).map((r) => r.eval_set).concat((T.eval_paired || []).map((r) => r.eval_set)));
    const g = DATA.gallery && DATA.gallery[0];
    state.evalSet = g ? g.eval_set : sets[sets.length - 1];
    fillSelect(ctl.evalSet, sets.map((s) => ({ value: s, label: s })), state.evalSet);
    state.evalSet = ctl.evalSet.value || null;
    resetVersionControls();
    ctl.evalSet.addEventListener("change", () => { state.evalSet = ctl.evalSet.value; resetVersionControls(); renderEval(); });
    for (const [key, sel] of [["a", ctl.a], ["b", ctl.b]]) {
      sel.addEventListener("change", () => { state[key] = sel.value; renderModels(); renderCompare(); renderBreakdown(); renderGallery(); });
    }
    ctl.guidance.addEventListener("change", () => { state.guidance = ctl.guidance.value; renderModels(); renderBreakdown(); renderTrends(); });
    ctl.metric.addEventListener("change", () => { state.metric = ctl.metric.value; renderBreakdown(); renderTrends(); });
  }
  function resetVersionControls() {
    const versions = versionsOfSet();
    const models_ = versions.filter((v) => ordinal.has(v) || !String(v).startsWith("baseline:"));
    const g = (DATA.gallery || []).find((e) => e.eval_set === state.evalSet);
    const a = (g && g.version_a) || models_[models_.length - 1] || versions[0];
    const b = (g && g.version_b) || models_.filter((v) => v !== a).pop()
      || versions.find((v) => v === "baseline:box") || versions.find((v) => v !== a);
    const opts = versions.map((v) => ({ value: v, label: label(v) }));
    fillSelect(ctl.a, opts, a);
    fillSelect(ctl.b, opts, b);
    state.a = ctl.a.value || null;
    state.b = ctl.b.value || null;
    const gs = uniq(evalRows("eval_aggregate").map((r) => r.guidance)).sort(byOrder(GUIDANCE_ORDER));
    fillSelect(ctl.guidance, gs.map((x) => ({ value: x, label: x })), gs.includes("box") ? "box" : gs[0]);
    state.guidance = ctl.guidance.value || null;
    const ms = uniq(evalRows("eval_aggregate").map((r) => r.metric)).sort(byOrder(METRIC_ORDER));
    fillSelect(ctl.metric, ms.map((x) => ({ value: x, label: x })), ms.includes("iou") ? "iou" : ms[0]);
    state.metric = ctl.metric.value || null;
  }

  // ---- panels ---------------------------------------------------------------------------------------------------
  function renderModels() {
    const kids = [];
    if (!models.length) kids.push(empty("No model versions registered in this lake yet."));
    else {
      kids.push(table([
        { label: "#", get: (m) => m.ordinal, cls: "num" }, { label: "version", get: (m) => m.version, cls: "mono" },
        { label: "created", get: (m) => m.created_at }, { label: "preset", get: (m) => m.preset },
        { label: "dataset", get: (m) => (m.dataset || "–") + "@" + (m.dataset_version || "–") },
        { label: "train run", get: (m) => m.run_id }, { label: "steps", get: (m) => num(m.steps), cls: "num" },
        { label: "final loss", get: (m) => num(m.final_loss, 4), cls: "num" },
        { label: "val loss", get: (m) => num(m.val_loss, 4), cls: "num" },
        { label: "previous", get: (m) => short(m.previous_version), cls: "mono" },
        { label: "eval runs", get: (m) => m.eval_runs, cls: "num" }, { label: "bulk runs", get: (m) => m.bulk_runs, cls: "num" },
      ], models, { name: "models" }));
    }
    const agg = evalRows("eval_aggregate").filter((r) => r.guidance === state.guidance);
    if (!agg.length) {
      kids.push(empty("No evaluation summaries yet: run `smartmask evaluate` to score a model version."));
      setBody("models", kids);
      return;
    }
    kids.push(h("h3", {}, "Every metric, guidance “", state.guidance, "”, eval set ", state.evalSet,
                " (bars: mean; whiskers: stored 95% bootstrap interval)"));
    const grid = h("div", { class: "grid" });
    kids.push(grid);
    const metrics = uniq(agg.map((r) => r.metric)).sort(byOrder(METRIC_ORDER));
    const sel = agg.filter((r) => r.model_version === state.a);
    kids.push(h("h3", {}, "Version ", h("span", { class: "slot-a" }, label(state.a)),
                ": differences against the previous version, the box baseline and the oracle"));
    kids.push(sel.length ? table([
      { label: "metric", get: (r) => r.metric + (r.higher_is_better === false ? " (lower is better)" : "") },
      { label: "value [95% CI]", get: (r) => num(r.value) + interval(r), cls: "num" },
      { label: "n", get: (r) => r.n, cls: "num" },
      { label: "previous version", get: (r) => short(r.previous_version), cls: "mono" },
      { label: "Δ previous", get: (r) => h("span", { class: r.better_than_previous === null ? null : (r.better_than_previous ? "good" : "bad") }, signed(r.delta_previous)), cls: "num" },
      { label: "box", get: (r) => num(r.box_value), cls: "num" }, { label: "Δ box", get: (r) => signed(r.delta_box), cls: "num" },
      { label: "oracle", get: (r) => num(r.oracle_value), cls: "num" }, { label: "Δ oracle", get: (r) => signed(r.delta_oracle), cls: "num" },
    ], sel.sort((x, y) => byOrder(METRIC_ORDER)(x.metric, y.metric)), { name: "deltas" })
      : empty("Version A has no summary under this guidance."));
    setBody("models", kids);
    for (const metric of metrics) {
      const rs = agg.filter((r) => r.metric === metric).sort((x, y) => versionSort(x.model_version, y.model_version));
      const div = chart("metric-" + metric, "small");
      grid.appendChild(h("div", {}, h("h4", {}, metric, rs[0] && rs[0].higher_is_better === false ? " (lower is better)" : ""), div));
      plot(div, [{
        type: "bar", x: rs.map((r) => pt(label(r.model_version))), y: rs.map((r) => r.value), error_y: errorBars(rs),
        marker: { color: rs.map((r) => (r.model_version === state.a ? "#d6336c" : r.model_version === state.b ? "#1c7ed6"
                                    : r.is_baseline ? "#adb5bd" : "#748ffc")) },
        customdata: rs.map((r) => r.n), hovertemplate: "%{x}<br>%{y:.4f} (n = %{customdata})<extra></extra>",
      }], { xaxis: { type: "category", automargin: true }, yaxis: { automargin: true }, showlegend: false,
            margin: { l: 56, r: 16, t: 24, b: 48 } });
    }
  }

  function renderCompare() {
    const kids = [];
    const paired = evalRows("eval_paired").filter((r) => r.version_a === state.a && r.version_b === state.b);
    const stored = evalRows("eval_paired_stored").filter((r) => r.version_a === state.a && r.version_b === state.b);
    if (!state.a || !state.b || state.a === state.b) {
      kids.push(empty(state.a ? "Choose two different versions to compare." : "No evaluated versions to compare yet."));
      setBody("compare", kids);
      return;
    }
    kids.push(h("p", {}, h("span", { class: "slot-a" }, "A = ", label(state.a)), "  vs  ",
                h("span", { class: "slot-b" }, "B = ", label(state.b)), " on eval set ", state.evalSet, "."));
    kids.push(h("p", { class: "note" }, "Mean of the per-item differences A − B over the items both scored, with a ",
                h("b", {}, "normal-approximation 95% interval"), " (mean ± 1.96·sd/√n), computed by DuckDB from the item rows. ",
                "“Bootstrap” columns: the paired rows an evaluation run stored (95% percentile bootstrap over jointly ",
                "resampled items), when one exists for this pair. Significant: 0 lies outside the interval."));
    if (!paired.length && !stored.length) {
      kids.push(empty("These two have no items in common on this eval set."));
      setBody("compare", kids);
      return;
    }
    const key = (r) => r.metric + "\u0000" + r.guidance;
    const storedBy = new Map(stored.map((r) => [key(r), r]));
    const all = new Map(paired.map((r) => [key(r), { p: r, s: storedBy.get(key(r)) }]));
    for (const s of stored) if (!all.has(key(s))) all.set(key(s), { p: null, s });
    const list = [...all.values()].map((x) => Object.assign({ metric: (x.p || x.s).metric, guidance: (x.p || x.s).guidance }, x))
      .sort((x, y) => byOrder(METRIC_ORDER)(x.metric, y.metric) || byOrder(GUIDANCE_ORDER)(x.guidance, y.guidance));
    const verdict = (metric, low, high, sig) => {
      if (!sig) return h("span", { class: "no" }, "no");
      const better = HIGHER.get(metric) === false ? high < 0 : low > 0;
      return h("span", { class: "yes" }, "yes: ", better ? "A better" : "B better");
    };
    const fchart = chart("compare-forest");
    kids.push(fchart);
    kids.push(table([
      { label: "metric", get: (x) => x.metric }, { label: "guidance", get: (x) => x.guidance },
      { label: "n", get: (x) => (x.p ? x.p.n : "–"), cls: "num" },
      { label: "mean A − B", get: (x) => (x.p ? signed(x.p.mean) : "–"), cls: "num" },
      { label: "normal approx. 95% CI", get: (x) => (x.p ? "[" + num(x.p.low) + ", " + num(x.p.high) + "]" : "–"), cls: "num" },
      { label: "significant (normal)", get: (x) => (x.p ? verdict(x.metric, x.p.low, x.p.high, x.p.significant) : "–") },
      { label: "bootstrap A − B", get: (x) => (x.s ? signed(x.s.value) : "–"), cls: "num" },
      { label: "bootstrap 95% CI", get: (x) => (x.s ? "[" + num(x.s.low) + ", " + num(x.s.high) + "]" : "–"), cls: "num" },
      { label: "significant (bootstrap)", get: (x) => (x.s ? verdict(x.metric, x.s.low, x.s.high, x.s.significant) : "–") },
    ], list, { name: "compare" }));
    setBody("compare", kids);
    const withP = list.filter((x) => x.p);
    const ylab = (x) => pt(x.metric + " · " + x.guidance);
    plot(fchart, [
      { type: "scatter", mode: "markers", name: "normal approx. 95%", x: withP.map((x) => x.p.mean), y: withP.map(ylab),
        error_x: { type: "data", symmetric: false, array: withP.map((x) => x.p.high - x.p.mean),
                   arrayminus: withP.map((x) => x.p.mean - x.p.low) }, marker: { color: "#d6336c" } },
      { type: "scatter", mode: "markers", name: "stored bootstrap 95%", x: list.filter((x) => x.s).map((x) => x.s.value),
        y: list.filter((x) => x.s).map(ylab), marker: { color: "#1c7ed6", symbol: "diamond" },
        error_x: { type: "data", symmetric: false, array: list.filter((x) => x.s).map((x) => x.s.high - x.s.value),
                   arrayminus: list.filter((x) => x.s).map((x) => x.s.value - x.s.low) } },
    ], { height: Math.max(280, 24 * list.length + 120),
         xaxis: { zeroline: true, zerolinewidth: 2, automargin: true },
         yaxis: { type: "category", automargin: true, autorange: "reversed" } });  // top to bottom, as the table
  }

  function renderBreakdown() {
    const kids = [];
    const br = evalRows("eval_breakdown").filter((r) => r.metric === state.metric);
    const agg = evalRows("eval_aggregate").filter((r) => r.metric === state.metric);
    if (!br.length && !agg.length) {
      setBody("breakdown", empty("No evaluation summaries yet."));
      return;
    }
    const shown = uniq([state.a, state.b, "baseline:box", "baseline:oracle"]);
    const colours = { [state.a]: "#d6336c", [state.b]: "#1c7ed6", "baseline:box": "#adb5bd", "baseline:oracle": "#495057" };
    const charts = [];
    const bars = (rs, keyOf, keys) => shown.map((v) => {
      const sel = keys.map((k) => rs.find((r) => r.model_version === v && keyOf(r) === k) || null);
      return { type: "bar", name: pt(label(v)), x: keys.map(pt), y: sel.map((r) => (r ? r.value : null)),
               marker: { color: colours[v] },
               error_y: { type: "data", symmetric: false, array: sel.map((r) => (r && r.high !== null ? r.high - r.value : null)),
                          arrayminus: sel.map((r) => (r && r.low !== null ? r.value - r.low : null)) },
               customdata: sel.map((r) => (r ? r.n : null)), hovertemplate: "%{x}: %{y:.4f} (n = %{customdata})" };
    }).filter((t) => t.y.some((y) => y !== null));
    const cls = br.filter((r) => r.dimension === "class" && r.guidance === state.guidance);
    const classes = uniq(cls.map((r) => r.key)).sort();
    kids.push(h("h3", {}, "By class (", state.metric, ", guidance ", state.guidance, ")"));
    if (classes.length) { const d = chart("by-class"); kids.push(d); charts.push([d, bars(cls, (r) => r.key, classes), "class"]); }
    else kids.push(empty("No per-class figures for this guidance."));
    const gs = uniq(agg.map((r) => r.guidance)).sort(byOrder(GUIDANCE_ORDER));
    kids.push(h("h3", {}, "By guidance type (", state.metric, ")"));
    const dg = chart("by-guidance"); kids.push(dg); charts.push([dg, bars(agg, (r) => r.guidance, gs), "guidance"]);
    const sz = br.filter((r) => r.dimension === "size_bin" && r.guidance === state.guidance);
    const bins = uniq(sz.map((r) => r.key)).sort(byOrder(["<1%", "1-5%", ">5%"]));
    kids.push(h("h3", {}, "By object size (", state.metric, ", guidance ", state.guidance, ")"));
    if (bins.length) { const d = chart("by-size"); kids.push(d); charts.push([d, bars(sz, (r) => r.key, bins), "size"]); }
    else kids.push(empty("No per-size figures for this guidance."));
    setBody("breakdown", kids);
    for (const [div, traces, what] of charts) {
      plot(div, traces, { barmode: "group", xaxis: { type: "category", automargin: true, title: { text: what } },
                          yaxis: { title: { text: pt(state.metric) }, automargin: true } });
    }
  }

  function renderTrends() {
    const agg = evalRows("eval_aggregate").filter((r) => r.metric === state.metric);
    const versions = agg.filter((r) => !r.is_baseline && r.ordinal !== null);
    if (!versions.length) {
      setBody("trends", empty("No model version has an evaluation summary on this eval set yet."));
      return;
    }
    const div = chart("trend");
    setBody("trends", h("p", { class: "note" }, state.metric, " of each model version in registration order, one line per ",
                        "guidance type (whiskers: stored 95% bootstrap intervals); dashed: the baselines under guidance ",
                        state.guidance, "."), div);
    const order = uniq(versions.map((r) => r.model_version)).sort(versionSort);
    const xs = order.map((v) => pt(label(v)));
    const traces = [];
    for (const [g, rs] of [...groupBy(versions, (r) => r.guidance)].sort((x, y) => byOrder(GUIDANCE_ORDER)(x[0], y[0]))) {
      const sel = order.map((v) => rs.find((r) => r.model_version === v) || { value: null, low: null, high: null });
      traces.push({ type: "scatter", mode: "lines+markers", name: pt(g), x: xs, y: sel.map((r) => r.value),
                    error_y: errorBars(sel), connectgaps: true });
    }
    for (const r of agg.filter((x) => x.is_baseline && x.guidance === state.guidance)) {
      traces.push({ type: "scatter", mode: "lines", name: pt(r.model_version + " (" + r.guidance + ")"), x: xs,
                    y: xs.map(() => r.value), line: { dash: "dash" } });
    }
    plot(div, traces, { xaxis: { type: "category", automargin: true }, yaxis: { title: { text: pt(state.metric) }, automargin: true } });
  }

  function renderEval() { renderModels(); renderCompare(); renderBreakdown(); renderTrends(); renderGallery(); }

  function renderTraining() {
    const curves = T.train_curves || [];
    if (!curves.length) { setBody("training", empty("No training runs in this lake yet.")); return; }
    const div = chart("loss");
    setBody("training", h("p", { class: "note" }, "Each point is the mean over a bucket of steps (at most a few hundred ",
                                                  "points per run); validation loss at the checkpoints."), div);
    const traces = [];
    for (const [run, rs] of groupBy(curves, (r) => r.run)) {
      const name = rs[0].model_version ? label(rs[0].model_version) : run;
      traces.push({ type: "scatter", mode: "lines", name: pt(name + " loss"), x: rs.map((r) => r.step), y: rs.map((r) => r.loss) });
      const v = rs.filter((r) => r.val_loss !== null);
      if (v.length) traces.push({ type: "scatter", mode: "lines+markers", name: pt(name + " val loss"),
                                  x: v.map((r) => r.step), y: v.map((r) => r.val_loss), line: { dash: "dot" } });
    }
    plot(div, traces, { xaxis: { title: { text: "step" } }, yaxis: { title: { text: "loss" }, type: "log" } });
  }

  function renderLineage() {
    const nodes = T.lineage || [];
    if (!nodes.length) { setBody("lineage", empty("Nothing in this lake yet: no dataset versions, models or runs.")); return; }
    const byId = new Map(nodes.map((n) => [n.kind + "\u0000" + n.id, n]));
    const children = groupBy(nodes.filter((n) => n.parent_id !== null), (n) => n.parent_kind + "\u0000" + n.parent_id);
    const item = (n, depth) => {
      const kids = (children.get(n.kind + "\u0000" + n.id) || []).slice(0, 200);
      return h("li", { "data-kind": n.kind, "data-id": n.id },
        h("span", { class: "kind" }, n.kind.replace("_", " ")), h("span", { class: "mono" }, n.label),
        n.detail ? h("span", { class: "note" }, "  ", n.detail) : null,
        kids.length && depth < 4 ? h("ul", { class: "tree" }, kids.map((k) => item(k, depth + 1))) : null);
    };
    const roots = nodes.filter((n) => n.parent_id === null);
    const orphans = nodes.filter((n) => n.parent_id !== null && !byId.has(n.parent_kind + "\u0000" + n.parent_id));
    setBody("lineage",
      h("ul", { class: "tree", "data-tree": "lineage" }, roots.map((n) => item(n, 0))),
      orphans.length ? [h("h3", {}, "Parent not in this lake"),
                        h("ul", { class: "tree" }, orphans.map((n) => h("li", {}, h("span", { class: "note" },
                          n.parent_kind, " ", n.parent_id, " →"), h("ul", { class: "tree" }, item(n, 0)))))] : null,
      (T.eval_runs || []).length ? [h("h3", {}, "Evaluation runs"), table([
        { label: "run", get: (r) => r.run, cls: "mono" }, { label: "eval set", get: (r) => r.eval_set },
        { label: "model version", get: (r) => r.model_version || "baselines only", cls: "mono" },
        { label: "items", get: (r) => r.items, cls: "num" }, { label: "rows", get: (r) => r.rows, cls: "num" },
        { label: "failed rows", get: (r) => r.failed_rows, cls: "num" }, { label: "methods", get: (r) => r.methods },
        { label: "guidance", get: (r) => r.guidance }, { label: "summary rows", get: (r) => r.summary_rows, cls: "num" },
      ], T.eval_runs, { name: "eval_runs" })] : null);
  }

  function renderDatasets() {
    const cards = T.datasets || [];
    const stats = T.dataset_stats || [];
    const versions = uniq(cards.map((c) => c.name + "@" + c.version)
      .concat(stats.map((s) => s.name + "@" + s.version), (T.dataset_classes || []).map((s) => s.name + "@" + s.version)));
    if (!versions.length) { setBody("datasets", empty("No dataset versions in this lake yet: run `smartmask rebuild`.")); return; }
    const sel = h("select", { id: "dataset-version" });
    const detail = h("div", {});
    const kids = [table([
      { label: "name", get: (c) => c.name }, { label: "version", get: (c) => c.version, cls: "mono" },
      { label: "newest", get: (c) => (c.newest ? "yes" : "") }, { label: "status", get: (c) => c.status },
      { label: "created", get: (c) => c.created_at },
      { label: "images ok / rejected", get: (c) => num(c.images_accepted) + " / " + num(c.images_rejected), cls: "num" },
      { label: "instances ok / rejected", get: (c) => num(c.instances_accepted) + " / " + num(c.instances_rejected), cls: "num" },
      { label: "classes", get: (c) => num(c.classes_accepted), cls: "num" }, { label: "captioner", get: (c) => c.captioner },
      { label: "source", get: (c) => c.source, cls: "wrap" },
    ], cards, { name: "datasets" }), h("div", { class: "filters" }, h("label", {}, "dataset version ", sel)), detail];
    setBody("datasets", kids);
    const newest = cards.find((c) => c.newest);
    fillSelect(sel, versions.map((v) => ({ value: v, label: v })), newest ? newest.name + "@" + newest.version : versions[0]);
    const draw = () => {
      for (const d of detail.querySelectorAll(".js-plotly-plot")) Plotly.purge(d);
      const [name, version] = [sel.value.slice(0, sel.value.lastIndexOf("@")), sel.value.slice(sel.value.lastIndexOf("@") + 1)];
      const mine = (r) => r.name === name && r.version === version;
      const st = stats.filter(mine);
      const cls = (T.dataset_classes || []).filter(mine);
      const rej = (T.dataset_rejects || []).filter(mine);
      const card = (T.cards || []).find(mine);
      const out = [];
      const summary = st.filter((s) => s.section === "summary");
      if (summary.length) out.push(h("h3", {}, "Card summary"), table([{ label: "statistic", get: (s) => s.key },
        { label: "value", get: (s) => num(s.value), cls: "num" }], summary, { name: "card-summary" }));
      const dc = chart("classes");
      out.push(h("h3", {}, "Instances per class"), cls.length ? dc : empty("No layers in this version."));
      const dr = chart("rejects");
      out.push(h("h3", {}, "Rejected records by reason"), rej.length ? dr : empty("No rejected records."));
      if (rej.length) out.push(table([{ label: "stage", get: (r) => r.stage }, { label: "record", get: (r) => r.record_kind },
        { label: "reason", get: (r) => r.reason }, { label: "n", get: (r) => r.n, cls: "num" }], rej, { name: "rejects" }));
      const diff = st.filter((s) => s.section === "diff" && s.key !== "previous_version");
      const prev = st.find((s) => s.section === "diff" && s.key === "previous_version");
      out.push(h("h3", {}, "Diff against the previous version", prev ? " (" + prev.text + ")" : ""));
      out.push(diff.length ? table([{ label: "what", get: (s) => s.key }, { label: "change", get: (s) => signed(s.value), cls: "num" }],
                                   diff, { name: "diff" }) : empty(prev ? "No differences." : "The first version of this dataset: nothing to diff against."));
      if (card && card.text) out.push(h("details", {}, h("summary", {}, "CARD.md"), h("pre", {}, card.text)));
      detail.replaceChildren(...out);
      if (cls.length) {
        const labels = cls.map((r) => pt(r.label));
        const traces = [{ type: "bar", name: "this version", x: labels, y: cls.map((r) => r.n) }];
        if (cls.some((r) => r.previous_version)) traces.push({ type: "bar", name: "previous version", x: labels, y: cls.map((r) => r.previous_n) });
        plot(dc, traces, { barmode: "group", xaxis: { type: "category", automargin: true } });
      }
      if (rej.length) plot(dr, [{ type: "bar", x: rej.map((r) => pt(r.reason + " (" + r.stage + ")")), y: rej.map((r) => r.n) }],
                           { xaxis: { type: "category", automargin: true }, showlegend: false });
    };
    sel.addEventListener("change", draw);
    draw();
  }

  function renderBulk() {
    const runs = T.bulk_runs || [];
    if (!runs.length) { setBody("bulk", empty("No bulk insertion runs in this lake yet.")); return; }
    const dt = chart("throughput");
    const dr = chart("bulk-rejects");
    const rej = T.bulk_rejects || [];
    const samples = DATA.bulk_samples || [];
    setBody("bulk", table([
      { label: "run", get: (r) => r.run, cls: "mono" }, { label: "model", get: (r) => short(r.model_version), cls: "mono" },
      { label: "rows", get: (r) => r.rows, cls: "num" }, { label: "inserted", get: (r) => r.inserted, cls: "num" },
      { label: "rejected", get: (r) => r.rejected, cls: "num" }, { label: "first row", get: (r) => r.first_at },
      { label: "last row", get: (r) => r.last_at }, { label: "rows/s", get: (r) => num(r.rows_per_s, 2), cls: "num" },
      { label: "inserted/s", get: (r) => num(r.inserted_per_s, 2), cls: "num" },
      { label: "s/item suggest", get: (r) => num(r.t_suggest_s), cls: "num" },
      { label: "s/item insert", get: (r) => num(r.t_insert_s), cls: "num" },
      { label: "inpainter", get: (r) => r.inpainter },
    ], runs, { name: "bulk_runs" }),
    h("h3", {}, "Throughput (rows committed per second, over the run)"), dt,
    h("h3", {}, "Rejects by reason"), rej.length ? dr : empty("No rejected rows."),
    h("h3", {}, "A sample of outputs"),
    samples.length ? h("div", { class: "tiles", "data-samples": "bulk" }, samples.map((s) => h("div", { class: "tile" },
      h("div", { class: "tiles" }, img(s.image, "input") || placeholder(s.image_note), img(s.output, "inserted") || placeholder(s.output_note)),
      h("span", { class: "cap" }, s.object, " · ", s.context || ""),
      h("span", { class: "cap" }, s.run, " · ", s.file || "")))) : empty("No inserted outputs."));
    const traces = [];
    for (const [run, rs] of groupBy(T.bulk_throughput || [], (r) => r.run)) {
      traces.push({ type: "scatter", mode: "lines+markers", name: pt(run), x: rs.map((r) => r.t), y: rs.map((r) => r.rows_per_s) });
    }
    plot(dt, traces, { xaxis: { title: { text: "seconds since the run's first row" } }, yaxis: { title: { text: "rows/s" } } });
    if (rej.length) {
      const reasons = uniq(rej.map((r) => r.reject_reason + " (" + r.reject_stage + ")"));
      const rt = [];
      for (const [run, rs] of groupBy(rej, (r) => r.run)) {
        rt.push({ type: "bar", name: pt(run), x: reasons.map(pt),
                  y: reasons.map((k) => (rs.find((r) => r.reject_reason + " (" + r.reject_stage + ")" === k) || { n: 0 }).n) });
      }
      plot(dr, rt, { barmode: "stack", xaxis: { type: "category", automargin: true } });
    }
  }

  function renderBench() {
    const recs = T.bench_records || [];
    const figs = T.bench_figures || [];
    if (!recs.length) { setBody("bench", empty("No benchmark records in this lake yet (bench/*.py --lake)."));  return; }
    const kids = [];
    const draws = [];
    for (const [bench, rs] of groupBy(recs, (r) => r.bench)) {
      const f = figs.filter((x) => x.bench === bench);
      const headline = f.some((x) => x.headline) ? f.filter((x) => x.headline) : f;
      const keys = uniq(headline.map((x) => x.key));
      const div = chart("bench-" + bench);
      kids.push(h("h3", {}, bench), div);
      const machine = (r) => [r.machine_description, r.machine_cpu, r.machine_cores ? r.machine_cores + " cores" : null,
                              r.machine_memory_gib ? r.machine_memory_gib + " GiB" : null,
                              r.machine_gpu ? "GPU " + r.machine_gpu : "no GPU"].filter((x) => x).join(", ");
      kids.push(table([{ label: "at", get: (r) => r.at }, { label: "code", get: (r) => r.code_version, cls: "mono" },
        { label: "machine", get: machine, cls: "wrap" },
        ...keys.map((k) => ({ label: (headline.find((x) => x.key === k) || {}).label || k, cls: "num", get: (r) => {
          const x = f.find((y) => y.run === r.run && y.key === k);
          if (!x) return "–";
          const target = x.target === null ? "" : " (" + x.op + " " + num(x.target) + (x.met === null ? "" : x.met ? ", met" : ", not met") + ")";
          return h("span", { class: x.met === null ? null : (x.met ? "good" : "bad") }, num(x.value) + target);
        } }))], rs, { name: "bench-" + bench }));
      draws.push([div, keys.map((k) => {
        const xs = headline.filter((x) => x.key === k);
        const traces = [{ type: "scatter", mode: "lines+markers", name: pt(xs[0].label), x: xs.map((x) => pt(x.at)), y: xs.map((x) => x.value) }];
        if (xs.some((x) => x.target !== null)) traces.push({ type: "scatter", mode: "lines", name: pt(xs[0].label + " target " + xs[0].op),
                                                              x: xs.map((x) => pt(x.at)), y: xs.map((x) => x.target), line: { dash: "dash" } });
        return traces;
      }).flat()]);
    }
    setBody("bench", kids);
    for (const [div, traces] of draws) plot(div, traces, { xaxis: { type: "category", automargin: true } });
  }

  const galleryFilter = { cls: "", guidance: "", min: 0 };
  function renderGallery() {
    const entries = (DATA.gallery || []).filter((e) => e.eval_set === state.evalSet);
    if (!entries.length) { setBody("gallery", empty("No evaluated items to show yet.")); return; }
    const iouOf = (e, v) => { const m = e.methods.find((x) => x.model_version === v); return m && m.ok ? m.iou : null; };
    const gap = (e) => { const a = iouOf(e, state.a), b = iouOf(e, state.b);
                         return a === null && b === null ? null : Math.abs((a || 0) - (b || 0)); };
    const fClass = h("select", { id: "gallery-class" });
    const fGuid = h("select", { id: "gallery-guidance" });
    const fMin = h("input", { id: "gallery-min-disagreement", type: "number", min: "0", max: "1", step: "0.05" });
    fMin.value = String(galleryFilter.min);  // the filters outlive a re-render (a new version A or B)
    fillSelect(fClass, [{ value: "", label: "all" }].concat(uniq(entries.map((e) => e.object)).sort().map((c) => ({ value: c, label: c }))), galleryFilter.cls);
    fillSelect(fGuid, [{ value: "", label: "all" }].concat(uniq(entries.map((e) => e.guidance)).sort(byOrder(GUIDANCE_ORDER)).map((c) => ({ value: c, label: c }))), galleryFilter.guidance);
    const list = h("div", { class: "cards", "data-gallery": "cards" });
    const count = h("span", { class: "note" });
    setBody("gallery",
      h("p", { class: "note" }, "Chosen at build time where the two newest versions disagree most (|IoU difference|); ",
        "sorted here by the disagreement of ", h("span", { class: "slot-a" }, "A"), " and ", h("span", { class: "slot-b" }, "B"),
        ". Green: ground truth; pink: a version's rank-1 mask."),
      h("div", { class: "filters" }, h("label", {}, "class ", fClass), h("label", {}, "guidance ", fGuid),
        h("label", {}, "min |IoU A − IoU B| ", fMin), count), list);
    const tile = (node, cap) => h("div", { class: "tile" }, node, h("span", { class: "cap" }, cap));
    const stack = (e, over, note, withGt) => {
      const base = img(e.image, "input");
      const layer = img(over, "mask");
      if (!layer) return placeholder(note || (base ? "no mask" : e.image_note));
      if (!base) return h("div", { class: "stack", title: e.image_note || null }, layer);
      return h("div", { class: "stack" }, base, layer, withGt ? img(e.gt_outline, "ground truth outline") : null);
    };
    const versionTile = (e, v, slot) => {
      const m = e.methods.find((x) => x.model_version === v);
      const cap = [h("span", { class: "slot-" + slot }, slot.toUpperCase(), " "), label(v), ": ",
                   m ? (m.ok ? "IoU " + num(m.iou) : "failed") : "not scored"];
      return tile(m ? stack(e, m.mask, m.mask_note, true) : placeholder("not scored by this version"), cap);
    };
    const draw = () => {
      Object.assign(galleryFilter, { cls: fClass.value, guidance: fGuid.value, min: Number(fMin.value) || 0 });
      const minGap = galleryFilter.min;
      const shown = entries.filter((e) => (!fClass.value || e.object === fClass.value) && (!fGuid.value || e.guidance === fGuid.value)
                                          && (minGap <= 0 || (gap(e) !== null && gap(e) >= minGap)))
        .sort((x, y) => (gap(y) === null ? -1 : gap(y)) - (gap(x) === null ? -1 : gap(x)) || x.rank - y.rank);
      count.textContent = shown.length + " of " + entries.length + " items";
      list.replaceChildren(...shown.map((e) => h("div", { class: "card", "data-item": e.item_id, "data-guidance": e.guidance,
                                                          "data-class": e.object },
        h("div", { class: "card-head" }, h("span", { class: "mono" }, e.item_id), h("span", {}, "object: ", e.object),
          h("span", {}, "guidance: ", e.guidance), h("span", {}, "size: ", e.size_bin),
          h("span", {}, "|ΔIoU| ", num(gap(e))), h("span", { class: "note" }, e.file || "")),
        h("div", { class: "tiles" },
          tile(img(e.image, "input") || placeholder(e.image_note), "input"),
          tile(img(e.layout, "layout") || placeholder(e.layout_note), ["layout: ", (e.layout_labels || []).join(", ")]),
          tile(stack(e, e.gt, e.gt_note, false), "ground truth"),
          versionTile(e, state.a, "a"), versionTile(e, state.b, "b"),
          (e.outputs || []).length ? e.outputs.map((o) => tile(img(o.image, "inserted output") || placeholder(o.image_note),
                                                                ["inserted by ", label(o.model_version), " (", o.run, ")"]))
            : tile(placeholder("eval runs store no images; no bulk output of this image and object"), "inserted output")))));
    };
    for (const c of [fClass, fGuid]) c.addEventListener("change", draw);
    fMin.addEventListener("input", draw);
    draw();
  }

  // ---- start ----------------------------------------------------------------------------------------------------
  const meta = DATA.meta || {};
  document.getElementById("meta").textContent = "lake " + (meta.lake || "?") + " · built " + (meta.generated_at || "?")
    + (meta.warnings && meta.warnings.length ? " · " + meta.warnings.join("; ") : "");
  for (const sec of document.querySelectorAll("section.panel")) {
    sec.dataset.rows = String(((DATA.panels || {})[sec.dataset.panel] || {}).rows || 0);
  }
  setupControls();
  const steps = [renderEval, renderTraining, renderLineage, renderDatasets, renderBulk, renderBench];
  for (const step of steps) {
    try { step(); } catch (err) {  // one broken panel must not blank the others
      console.error(err);
    }
  }
  document.body.dataset.ready = "true";
})();
