-- One row per bulk insertion run: what it ran with, how many rows it committed, inserted and rejected, its
-- throughput (committed rows per second between its first and last row) and the mean seconds an inserted item
-- spent in each stage.
-- Columns: run, model_version, config_hash, inpainter, segmenter, code_version, rows, inserted, rejected,
-- first_at, last_at, seconds, rows_per_s, inserted_per_s, t_decode_s, t_layout_s, t_suggest_s, t_insert_s,
-- t_write_s.
WITH runs AS (
    SELECT run, min(model_version) AS model_version, min(config_hash) AS config_hash, min(inpainter) AS inpainter,
           min(segmenter) AS segmenter, max(code_version) AS code_version, count(*) AS rows,
           count(*) FILTER (WHERE status = 'inserted') AS inserted,
           count(*) FILTER (WHERE status = 'rejected') AS rejected,
           min(try_cast(created_at AS TIMESTAMP)) AS first_at, max(try_cast(created_at AS TIMESTAMP)) AS last_at,
           avg(t_decode_s) FILTER (WHERE status = 'inserted') AS t_decode_s,
           avg(t_layout_s) FILTER (WHERE status = 'inserted') AS t_layout_s,
           avg(t_suggest_s) FILTER (WHERE status = 'inserted') AS t_suggest_s,
           avg(t_insert_s) FILTER (WHERE status = 'inserted') AS t_insert_s,
           avg(t_write_s) FILTER (WHERE status = 'inserted') AS t_write_s
    FROM insert_items GROUP BY run
)
SELECT run, model_version, config_hash, inpainter, segmenter, code_version, rows, inserted, rejected,
       strftime(first_at, '%Y-%m-%dT%H:%M:%SZ') AS first_at, strftime(last_at, '%Y-%m-%dT%H:%M:%SZ') AS last_at,
       epoch(last_at) - epoch(first_at) AS seconds,
       rows / nullif(epoch(last_at) - epoch(first_at), 0) AS rows_per_s,
       inserted / nullif(epoch(last_at) - epoch(first_at), 0) AS inserted_per_s,
       t_decode_s, t_layout_s, t_suggest_s, t_insert_s, t_write_s
FROM runs
ORDER BY first_at NULLS LAST, run
