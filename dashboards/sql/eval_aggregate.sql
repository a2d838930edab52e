-- Every model version and baseline on every metric (class = size_bin = '*'), with its stored 95% bootstrap
-- interval, and its difference from the previous model version (by registration time, among those with this
-- figure), the box baseline and the oracle on the same eval set, metric and guidance. `iou_gap_closed` (stat 'gap') rows ride along as one more metric.
-- A figure stored by several runs (every run re-scores its baselines; a version evaluated twice) is taken once:
-- from the run with the most items, then the greatest run name.
-- Columns: eval_set, dataset_version, model_version, method, is_baseline, ordinal (model versions: 1 = oldest),
-- metric, guidance, value, low, high, n, higher_is_better, extractor, run, runs, previous_version,
-- previous_value, delta_previous, box_value, delta_box, oracle_value, delta_oracle, better_than_previous.
WITH versions AS (
    SELECT version, row_number() OVER (ORDER BY created_at NULLS FIRST, version) AS ordinal FROM models
), agg AS (
    SELECT eval_set, dataset_version, model_version, method, metric, guidance, value, low, high, n,
           higher_is_better, extractor, run,
           count(*) OVER (PARTITION BY eval_set, model_version, method, metric, guidance) AS runs
    FROM eval_summary
    WHERE stat IN ('aggregate', 'gap') AND class = '*' AND size_bin = '*'
    QUALIFY row_number() OVER (PARTITION BY eval_set, model_version, method, metric, guidance
                               ORDER BY n DESC NULLS LAST, run DESC) = 1
), ranked AS (
    SELECT a.*, v.ordinal,
           CASE WHEN v.ordinal IS NULL THEN NULL ELSE lag(a.model_version) OVER w END AS previous_version,
           CASE WHEN v.ordinal IS NULL THEN NULL ELSE lag(a.value) OVER w END AS previous_value
    FROM agg a LEFT JOIN versions v ON v.version = a.model_version
    WINDOW w AS (PARTITION BY a.eval_set, a.method, a.metric, a.guidance, v.ordinal IS NULL
                 ORDER BY v.ordinal NULLS LAST, a.model_version)
)
SELECT r.eval_set, r.dataset_version, r.model_version, r.method, r.model_version LIKE 'baseline:%' AS is_baseline,
       r.ordinal, r.metric, r.guidance, r.value, r.low, r.high, r.n, r.higher_is_better, r.extractor, r.run, r.runs,
       r.previous_version, r.previous_value, r.value - r.previous_value AS delta_previous,
       bx.value AS box_value, r.value - bx.value AS delta_box,
       orc.value AS oracle_value, r.value - orc.value AS delta_oracle,
       CASE WHEN r.previous_value IS NULL THEN NULL
            WHEN r.higher_is_better THEN r.value > r.previous_value
            ELSE r.value < r.previous_value END AS better_than_previous
FROM ranked r
LEFT JOIN agg bx ON bx.eval_set = r.eval_set AND bx.metric = r.metric AND bx.guidance = r.guidance
                AND bx.model_version = 'baseline:box'
LEFT JOIN agg orc ON orc.eval_set = r.eval_set AND orc.metric = r.metric AND orc.guidance = r.guidance
                 AND orc.model_version = 'baseline:oracle'
ORDER BY r.eval_set, r.metric, r.guidance, r.ordinal NULLS LAST, r.model_version
