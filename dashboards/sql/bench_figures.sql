-- Every numeric figure of every benchmark record, long form, with the headline figures' labels and targets
-- (the table mirrors bench/render_results.py HEADLINES, plus bench_bulk's targets as bench/bench_bulk.py prints
-- them; a record's own target field, target_key, overrides the default).
-- `met`: the figure meets its target (op '>=': at least, '<=': at most); null without a target.
-- Columns: run, bench, at, key, value, headline, label, op, target, met.
WITH headlines(bench, key, label, op, target, target_key, ord) AS (
    VALUES
    ('bench_sampler', 'samples_per_s', 'samples/s', '>=', 250.0, 'target_per_s', 1),
    ('bench_rebuild', 'images_per_s', 'images/s', '>=', 100.0, NULL, 1),
    ('bench_rebuild', 'ratio_vs_decode', 'rebuild / decode', '<=', 3.0, NULL, 2),
    ('bench_captions', 'template_images_per_s', 'template img/s', '>=', 2000.0, NULL, 1),
    ('bench_captions', 'blip_ratio', 'BLIP b32 / b1', '>=', 4.0, NULL, 2),
    ('bench_train_cpu', 'ratio_2v1', '2 vs 1', '>=', 1.6, NULL, 1),
    ('bench_train_cpu', 'ray_overhead', 'overhead', '<=', 0.10, NULL, 2),
    ('bench_train_cpu', 'rounds', 'rounds', NULL, NULL, NULL, 3),
    ('bench_eval', 'items_per_s', 'metric items/s', NULL, NULL, NULL, 1),
    ('bench_eval', 'metrics_share', 'metrics share', '<=', 0.10, 'share_target', 2),
    ('bench_eval', 'rows_per_s', 'rows/s', NULL, NULL, NULL, 3),
    ('bench_dashboard', 'build_s', 'build (s)', '<=', 10.0, 'build_target_s', 1),
    ('bench_dashboard', 'ratio', 'build / DuckDB queries', '<=', 2.0, 'ratio_target', 2),
    ('bench_dashboard', 'html_mb', 'HTML (MB)', '<=', 20.0, 'html_target_mb', 3),
    ('bench_bulk', 'scaling_2v1', '2 vs 1 workers', '>=', 1.6, 'scaling_target', 1),
    ('bench_bulk', 'ray_over_loop', 'Ray 1 worker / loop, time per item', '<=', 1.15, 'overhead_target', 2),
    ('bench_bulk', 'driver_rss_ratio', 'driver RSS 10k / 1k', '<=', 1.2, 'memory_target', 3),
    ('gpu_suggest', 'ratio', 'speed-up vs SD inpaint', '>=', 2.0, 'target', 1),
    ('gpu_suggest', 'ours_latency_s', 'our latency (s)', NULL, NULL, NULL, 2),
    ('gpu_train_step', 'ratio', 'throughput vs IP2P step', '>=', 1.0, NULL, 1),
    ('gpu_train_step', 'ours_mfu', 'MFU', '>=', 0.40, NULL, 2),
    ('gpu_train_step', 'ours_samples_per_s', 'samples/s', NULL, NULL, NULL, 3)
), fields AS (
    SELECT b.run, b.bench, b.at, f.key, f.type, f.value AS raw
    FROM bench b, json_each(to_json(b)) f
), figures AS (
    SELECT run, bench, "at", key, CAST(raw AS DOUBLE) AS value
    FROM fields
    WHERE type IN ('DOUBLE', 'BIGINT', 'UBIGINT', 'INTEGER', 'UINTEGER')
      AND key NOT IN ('kind', 'run', 'bench', 'at') AND key NOT LIKE 'machine\_%' ESCAPE '\'
), targets AS (
    SELECT f.run, f.bench, f.at, f.key, f.value, h.key IS NOT NULL AS headline, h.ord,
           coalesce(h.label, f.key) AS label, h.op,
           coalesce(t.value, h.target) AS target
    FROM figures f
    LEFT JOIN headlines h ON h.bench = f.bench AND h.key = f.key
    LEFT JOIN figures t ON t.run = f.run AND t.key = h.target_key
)
SELECT run, bench, "at", key, value, headline, label, op, target,
       CASE WHEN op = '>=' AND target IS NOT NULL THEN value >= target
            WHEN op = '<=' AND target IS NOT NULL THEN value <= target END AS met
FROM targets
ORDER BY bench, "at", run, headline DESC, ord NULLS LAST, key
