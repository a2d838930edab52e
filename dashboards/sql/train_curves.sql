-- Training and validation loss curves, at most $points points per training run: the steps are cut into equal
-- buckets and each point is a bucket's mean (val_loss: the mean of the checkpoints inside the bucket, null when
-- it holds none). model_version: the registered version trained by the run, if any.
-- Columns: run, run_id, dataset, dataset_version, model_version, step (the bucket's last step), loss, val_loss,
-- lr, samples_per_s, steps_in_bucket.
WITH bounds AS (
    SELECT run, min(step) AS lo, max(step) AS hi FROM train_metrics GROUP BY ALL
), points AS (
    SELECT t.run, any_value(t.run_id) AS run_id, any_value(t.dataset) AS dataset,
           any_value(t.dataset_version) AS dataset_version, max(t.step) AS step,
           avg(t.loss) FILTER (WHERE isfinite(t.loss)) AS loss,
           avg(t.val_loss) FILTER (WHERE isfinite(t.val_loss)) AS val_loss,
           avg(t.lr) AS lr, avg(t.samples_per_s) AS samples_per_s, count(*) AS steps_in_bucket
    FROM train_metrics t JOIN bounds b ON b.run = t.run
    GROUP BY t.run, CAST(floor((t.step - b.lo) * $points / (b.hi - b.lo + 1)) AS BIGINT)
), trained AS (
    SELECT run_id, min(version) AS model_version FROM models GROUP BY ALL
)
SELECT p.run, p.run_id, p.dataset, p.dataset_version, m.model_version, p.step, p.loss, p.val_loss, p.lr,
       p.samples_per_s, p.steps_in_bucket
FROM points p LEFT JOIN trained m ON m.run_id = p.run_id
ORDER BY p.run, p.step
