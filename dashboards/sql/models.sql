-- Model versions, oldest first: lineage, losses, and the version registered before each one.
-- Columns: version, ordinal (1 = oldest), created_at, preset, dataset, dataset_version, run_id, steps,
-- final_loss, val_loss, code_version, previous_version, train_run (the train_metrics run with this run_id),
-- eval_runs, bulk_runs (how many runs of each kind scored / used this version).
WITH eval_runs AS (
    SELECT model_version, count(DISTINCT run) AS n
    FROM eval_items WHERE method = 'smartmask' GROUP BY ALL
), bulk_runs AS (
    SELECT model_version, count(DISTINCT run) AS n FROM insert_items GROUP BY ALL
), train_runs AS (
    SELECT run_id, min(run) AS run FROM train_metrics GROUP BY ALL
)
SELECT
    m.version,
    row_number() OVER (ORDER BY m.created_at NULLS FIRST, m.version) AS ordinal,
    m.created_at, m.preset, m.dataset, m.dataset_version, m.run_id, m.steps, m.final_loss, m.val_loss,
    m.code_version,
    lag(m.version) OVER (ORDER BY m.created_at NULLS FIRST, m.version) AS previous_version,
    t.run AS train_run,
    coalesce(e.n, 0) AS eval_runs,
    coalesce(b.n, 0) AS bulk_runs
FROM models m
LEFT JOIN train_runs t ON t.run_id = m.run_id
LEFT JOIN eval_runs e ON e.model_version = m.version
LEFT JOIN bulk_runs b ON b.model_version = m.version
ORDER BY ordinal
