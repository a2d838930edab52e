-- Aggregates per class and per size bin (stat 'aggregate' with class or size_bin other than '*'), each figure
-- once (as in eval_aggregate.sql).
-- Columns: eval_set, model_version, method, ordinal, metric, guidance, dimension ('class' | 'size_bin'), key,
-- value, low, high, n, higher_is_better.
WITH versions AS (
    SELECT version, row_number() OVER (ORDER BY created_at NULLS FIRST, version) AS ordinal FROM models
)
SELECT s.eval_set, s.model_version, s.method, v.ordinal, s.metric, s.guidance,
       CASE WHEN s.class <> '*' THEN 'class' ELSE 'size_bin' END AS dimension,
       CASE WHEN s.class <> '*' THEN s.class ELSE s.size_bin END AS key,
       s.value, s.low, s.high, s.n, s.higher_is_better
FROM eval_summary s LEFT JOIN versions v ON v.version = s.model_version
WHERE s.stat = 'aggregate' AND (s.class <> '*' OR s.size_bin <> '*')
QUALIFY row_number() OVER (PARTITION BY s.eval_set, s.model_version, s.method, s.metric, s.guidance, s.class,
                                        s.size_bin ORDER BY s.n DESC NULLS LAST, s.run DESC) = 1
ORDER BY s.eval_set, s.metric, s.guidance, dimension, key, v.ordinal NULLS LAST, s.model_version
