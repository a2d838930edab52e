-- Rows each bulk run committed over time, in at most $points equal time buckets per run.
-- Columns: run, t (seconds since the run's first row, the bucket's start), seconds (bucket width), inserted,
-- rejected, rows_per_s.
WITH timed AS (
    SELECT run, status, epoch(try_cast(created_at AS TIMESTAMP)) AS t FROM insert_items
), bounds AS (
    SELECT run, min(t) AS lo, greatest(max(t) - min(t), 1.0) / $points AS width FROM timed GROUP BY ALL
)
SELECT x.run, floor((x.t - b.lo) / b.width) * b.width AS t, b.width AS seconds,
       count(*) FILTER (WHERE x.status = 'inserted') AS inserted,
       count(*) FILTER (WHERE x.status = 'rejected') AS rejected,
       count(*) / b.width AS rows_per_s
FROM timed x JOIN bounds b ON b.run = x.run
WHERE x.t IS NOT NULL
GROUP BY x.run, b.lo, b.width, floor((x.t - b.lo) / b.width)
ORDER BY x.run, t
