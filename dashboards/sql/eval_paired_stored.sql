-- The stored paired differences (stat 'paired': 95% bootstrap over jointly resampled items, written by the
-- evaluation runs), in both orders: a stored row (a, b) also appears as (b, a) with the value negated and the
-- interval mirrored (`mirrored` = true). Each figure once (as in eval_aggregate.sql).
-- Columns: eval_set, guidance, version_a, version_b, metric, value, low, high, n, significant, extractor, run,
-- mirrored.
WITH stored AS (
    SELECT eval_set, guidance, model_version AS version_a, against AS version_b, metric, value, low, high, n,
           significant, extractor, run
    FROM eval_summary
    WHERE stat = 'paired' AND class = '*' AND size_bin = '*' AND against IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY eval_set, guidance, model_version, against, metric
                               ORDER BY n DESC NULLS LAST, run DESC) = 1
)
SELECT *, false AS mirrored FROM stored
UNION ALL
SELECT eval_set, guidance, version_b, version_a, metric, -value, -high, -low, n, significant, extractor, run,
       true AS mirrored
FROM stored s
WHERE NOT EXISTS (SELECT 1 FROM stored t WHERE t.eval_set = s.eval_set AND t.guidance = s.guidance
                  AND t.version_a = s.version_b AND t.version_b = s.version_a AND t.metric = s.metric)
ORDER BY eval_set, version_a, version_b, metric, guidance
