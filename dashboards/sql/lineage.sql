-- The lineage graph as parent → child rows: dataset version → model version → evaluation runs and bulk runs.
-- A node whose parent is not in the lake keeps its parent's id (the page shows it at the top, marked).
-- Columns: kind ('dataset' | 'model' | 'eval_run' | 'bulk_run'), id, label, parent_kind, parent_id, detail.
WITH datasets AS (
    SELECT DISTINCT name, version FROM images
    UNION SELECT DISTINCT name, version FROM rejects
    UNION SELECT DISTINCT name, version FROM stats
), eval_runs AS (
    SELECT run, any_value(eval_set) AS eval_set, any_value(dataset_version) AS dataset_version,
           min(model_version) FILTER (WHERE method = 'smartmask') AS model_version,
           count(DISTINCT item_id) AS items
    FROM eval_items GROUP BY run
), bulk_runs AS (
    SELECT run, min(model_version) AS model_version, count(*) AS rows,
           count(*) FILTER (WHERE status = 'inserted') AS inserted
    FROM insert_items GROUP BY run
)
SELECT 'dataset' AS kind, version AS id, name || '@' || version AS label, NULL AS parent_kind, NULL AS parent_id,
       NULL AS detail
FROM datasets
UNION ALL
SELECT 'model', version, version, 'dataset', dataset_version,
       concat_ws(' ', preset, 'trained on', dataset || '@' || dataset_version, created_at)
FROM models
UNION ALL
SELECT 'eval_run', run, run,
       CASE WHEN model_version IS NULL THEN 'dataset' ELSE 'model' END,
       coalesce(model_version, dataset_version),
       concat_ws(' ', 'eval set', eval_set, '·', items, 'items')
FROM eval_runs
UNION ALL
SELECT 'bulk_run', run, run, 'model', model_version,
       concat_ws(' ', inserted, 'of', rows, 'rows inserted')
FROM bulk_runs
ORDER BY kind, id
