-- The paired difference a − b between any two model versions or baselines on the same eval set and guidance,
-- from the item rows: over the items both scored (status ok, the metric finite for both), the mean of the per-item
-- differences and its NORMAL-APPROXIMATION 95% interval mean ± 1.96·sd/√n (sd: the sample standard deviation of
-- the differences). `significant`: n ≥ 2 and 0 lies outside the interval. Both orders (a, b) and (b, a) are
-- returned. A version or baseline scored by several runs of the eval set is taken from one of them: the run with
-- the most ok rows of it, then the greatest run name (so each item counts once).
-- Local-FID is a set statistic, not a per-item one: its paired rows come from eval_paired_stored.sql only.
-- Columns: eval_set, guidance, version_a, version_b, metric, n, mean, sd, low, high, significant.
WITH runs AS (
    SELECT eval_set, model_version, run
    FROM eval_items
    WHERE status = 'ok'
    GROUP BY eval_set, model_version, run
    QUALIFY row_number() OVER (PARTITION BY eval_set, model_version ORDER BY count(*) DESC, run DESC) = 1
), ev AS MATERIALIZED (
    SELECT e.eval_set, e.model_version, e.guidance, e.item_id,
           CASE WHEN isfinite(e.iou) THEN e.iou END AS iou,
           CASE WHEN isfinite(e.boundary_f) THEN e.boundary_f END AS boundary_f,
           CASE WHEN isfinite(e.best_of_n_iou) THEN e.best_of_n_iou END AS best_of_n_iou,
           CASE WHEN isfinite(e.diversity) THEN e.diversity END AS diversity,
           CASE WHEN isfinite(e.plausibility) THEN e.plausibility END AS plausibility,
           CASE WHEN isfinite(e.l2_bg) THEN e.l2_bg END AS l2_bg,
           CASE WHEN isfinite(e.bg_mse) THEN e.bg_mse END AS bg_mse,
           CASE WHEN isfinite(e.clip_score) THEN e.clip_score END AS clip_score
    FROM eval_items e
    SEMI JOIN runs r ON r.eval_set = e.eval_set AND r.model_version = e.model_version AND r.run = e.run
    WHERE e.status = 'ok'
), pairs AS (
    -- each unordered pair once (a < b), as count, sum and sum of squares of the differences (one pass; the
    -- reverse order is the mirror image below)
    SELECT a.eval_set, a.guidance, a.model_version AS version_a, b.model_version AS version_b,
           count(a.iou - b.iou) AS n_iou, sum(a.iou - b.iou) AS s_iou,
           sum((a.iou - b.iou) ** 2) AS q_iou,
           count(a.boundary_f - b.boundary_f) AS n_bf, sum(a.boundary_f - b.boundary_f) AS s_bf,
           sum((a.boundary_f - b.boundary_f) ** 2) AS q_bf,
           count(a.best_of_n_iou - b.best_of_n_iou) AS n_bon, sum(a.best_of_n_iou - b.best_of_n_iou) AS s_bon,
           sum((a.best_of_n_iou - b.best_of_n_iou) ** 2) AS q_bon,
           count(a.diversity - b.diversity) AS n_div, sum(a.diversity - b.diversity) AS s_div,
           sum((a.diversity - b.diversity) ** 2) AS q_div,
           count(a.plausibility - b.plausibility) AS n_pl, sum(a.plausibility - b.plausibility) AS s_pl,
           sum((a.plausibility - b.plausibility) ** 2) AS q_pl,
           count(a.l2_bg - b.l2_bg) AS n_l2, sum(a.l2_bg - b.l2_bg) AS s_l2,
           sum((a.l2_bg - b.l2_bg) ** 2) AS q_l2,
           count(a.bg_mse - b.bg_mse) AS n_mse, sum(a.bg_mse - b.bg_mse) AS s_mse,
           sum((a.bg_mse - b.bg_mse) ** 2) AS q_mse,
           count(a.clip_score - b.clip_score) AS n_clip, sum(a.clip_score - b.clip_score) AS s_clip,
           sum((a.clip_score - b.clip_score) ** 2) AS q_clip
    FROM ev a
    JOIN ev b ON b.eval_set = a.eval_set AND b.guidance = a.guidance AND b.item_id = a.item_id
             AND a.model_version < b.model_version
    GROUP BY ALL
), long AS (
    UNPIVOT pairs
    ON (n_iou, s_iou, q_iou) AS iou, (n_bf, s_bf, q_bf) AS boundary_f,
       (n_bon, s_bon, q_bon) AS best_of_n_iou, (n_div, s_div, q_div) AS diversity,
       (n_pl, s_pl, q_pl) AS plausibility, (n_l2, s_l2, q_l2) AS l2_bg,
       (n_mse, s_mse, q_mse) AS bg_mse, (n_clip, s_clip, q_clip) AS clip_score
    INTO NAME metric VALUE n, total, squares
), stats AS (
    SELECT eval_set, guidance, version_a, version_b, metric, n, total / n AS mean,
           -- sample variance from the sums; clamped at 0 against rounding when every difference is equal
           CASE WHEN n >= 2 THEN sqrt(greatest(squares - total * total / n, 0) / (n - 1)) END AS sd
    FROM long
    WHERE n > 0
), both_orders AS (
    SELECT eval_set, guidance, version_a, version_b, metric, n, mean, sd FROM stats
    UNION ALL
    SELECT eval_set, guidance, version_b, version_a, metric, n, -mean, sd FROM stats
)
SELECT eval_set, guidance, version_a, version_b, metric, n, mean, sd,
       mean - 1.96 * sd / sqrt(n) AS low,
       mean + 1.96 * sd / sqrt(n) AS high,
       coalesce(n >= 2 AND (mean - 1.96 * sd / sqrt(n) > 0 OR mean + 1.96 * sd / sqrt(n) < 0), false) AS significant
FROM both_orders
ORDER BY eval_set, version_a, version_b, metric, guidance
