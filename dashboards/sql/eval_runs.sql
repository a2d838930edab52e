-- One row per evaluation run: what it scored and how much of it.
-- Columns: run, eval_set, dataset_version, model_version (null for a baselines-only run), config_hash,
-- code_version, items, rows, ok_rows, failed_rows, methods, guidance, summary_rows.
WITH summary AS (SELECT run, count(*) AS n FROM eval_summary GROUP BY ALL)
SELECT e.run, any_value(e.eval_set) AS eval_set, any_value(e.dataset_version) AS dataset_version,
       min(e.model_version) FILTER (WHERE e.method = 'smartmask') AS model_version,
       any_value(e.config_hash) AS config_hash, any_value(e.code_version) AS code_version,
       count(DISTINCT e.item_id) AS items, count(*) AS rows,
       count(*) FILTER (WHERE e.status = 'ok') AS ok_rows,
       count(*) FILTER (WHERE e.status <> 'ok' OR e.status IS NULL) AS failed_rows,
       string_agg(DISTINCT e.method, ',' ORDER BY e.method) AS methods,
       string_agg(DISTINCT e.guidance, ',' ORDER BY e.guidance) AS guidance,
       coalesce(any_value(s.n), 0) AS summary_rows
FROM eval_items e LEFT JOIN summary s ON s.run = e.run
GROUP BY e.run
ORDER BY e.run
