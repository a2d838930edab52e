-- The gallery: up to $gallery (eval item, guidance) pairs of one eval set, those where its two newest model
-- versions (by registration time) disagree most, |IoU_a − IoU_b| (a version's failed row counts as IoU 0); with a
-- single version, those it scores worst (1 − IoU). The eval set is the one whose newest version is newest.
-- Per entry: every method's rank-1 mask and scores (runs of one version merged), the input image, the layout
-- (layers 0..k−1 with their vocabulary colours), the ground truth (layer k) and up to 2 bulk-run outputs of the
-- same image and object.
-- Columns: rank, eval_set, item_id, guidance, version_a, version_b, iou_a, iou_b, disagreement, image_id,
-- object, size_bin, dataset_version, k, uri, width, height, methods (list of {model_version, method, ok, iou,
-- boundary_f, empty, mask_rle, error}), layers (list of {layer, label, rle, height, width, r, g, b}),
-- outputs (list of {run, model_version, inserted_path}).
WITH versions AS (
    SELECT e.eval_set, e.model_version, max(m.created_at) AS created_at
    FROM (SELECT DISTINCT eval_set, model_version FROM eval_items WHERE method = 'smartmask' AND status = 'ok') e
    LEFT JOIN models m ON m.version = e.model_version
    GROUP BY ALL
), newest AS (
    SELECT *, row_number() OVER (PARTITION BY eval_set ORDER BY created_at DESC NULLS LAST, model_version DESC) AS r
    FROM versions
), pair AS (
    SELECT eval_set, max(model_version) FILTER (WHERE r = 1) AS version_a,
           max(model_version) FILTER (WHERE r = 2) AS version_b, max(created_at) AS newest_at
    FROM newest GROUP BY eval_set
    ORDER BY newest_at DESC NULLS LAST, eval_set DESC
    LIMIT 1
), scores AS (
    SELECT e.eval_set, e.item_id, e.guidance, p.version_a, p.version_b,
           avg(e.iou) FILTER (WHERE e.model_version = p.version_a AND e.status = 'ok') AS iou_a,
           avg(e.iou) FILTER (WHERE e.model_version = p.version_b AND e.status = 'ok') AS iou_b
    FROM eval_items e JOIN pair p ON p.eval_set = e.eval_set
    WHERE e.method = 'smartmask' AND (e.model_version = p.version_a OR e.model_version = p.version_b)
    GROUP BY ALL
), chosen AS (
    SELECT *,
           CASE WHEN version_b IS NULL THEN 1 - coalesce(iou_a, 0)
                ELSE abs(coalesce(iou_a, 0) - coalesce(iou_b, 0)) END AS disagreement
    FROM scores
    ORDER BY disagreement DESC, item_id, guidance
    LIMIT $gallery
), method_rows AS (
    SELECT c.eval_set, c.item_id, c.guidance, e.model_version, e.method,
           bool_or(e.status = 'ok') AS ok,
           avg(e.iou) FILTER (WHERE e.status = 'ok') AS iou,
           avg(e.boundary_f) FILTER (WHERE e.status = 'ok') AS boundary_f,
           bool_or(e.empty) AS empty,
           arg_max(e.mask_rle, e.run) FILTER (WHERE e.status = 'ok') AS mask_rle,
           min(e.error) FILTER (WHERE e.status <> 'ok') AS error,
           any_value(e.image_id) AS image_id, any_value(e.object) AS object, any_value(e.size_bin) AS size_bin,
           any_value(e.dataset_version) AS dataset_version
    FROM chosen c
    JOIN eval_items e ON e.eval_set = c.eval_set AND e.item_id = c.item_id AND e.guidance = c.guidance
    GROUP BY ALL
), entries AS (
    SELECT c.eval_set, c.item_id, c.guidance, c.version_a, c.version_b, c.iou_a, c.iou_b, c.disagreement,
           any_value(r.image_id) AS image_id, any_value(r.object) AS object, any_value(r.size_bin) AS size_bin,
           any_value(r.dataset_version) AS dataset_version,
           TRY_CAST(regexp_extract(c.item_id, '-k([0-9]+)$', 1) AS INTEGER) AS k,
           list({'model_version': r.model_version, 'method': r.method, 'ok': r.ok, 'iou': r.iou,
                 'boundary_f': r.boundary_f, 'empty': r.empty, 'mask_rle': r.mask_rle, 'error': r.error}
                ORDER BY r.method <> 'smartmask', r.model_version) AS methods
    FROM chosen c JOIN method_rows r ON r.eval_set = c.eval_set AND r.item_id = c.item_id AND r.guidance = c.guidance
    GROUP BY ALL
), image_rows AS (
    SELECT x.eval_set, x.item_id, x.guidance, min(i.uri) AS uri, min(i.width) AS width, min(i.height) AS height,
           min(i.sha256) AS sha256, min(i.name) AS dataset
    FROM entries x JOIN images i ON i.version = x.dataset_version AND i.image_id = x.image_id
    GROUP BY ALL
), layer_rows AS (
    SELECT x.eval_set, x.item_id, x.guidance,
           list({'layer': l.layer, 'label': l.label, 'rle': l.rle, 'height': l.height, 'width': l.width,
                 'r': v.r, 'g': v.g, 'b': v.b} ORDER BY l.layer) AS layers
    FROM entries x
    JOIN layers l ON l.version = x.dataset_version AND l.image_id = x.image_id AND l.layer <= x.k
    LEFT JOIN vocabulary v ON v.name = l.name AND v.version = l.version AND v.label = l.label
    GROUP BY ALL
), output_rows AS (
    SELECT eval_set, item_id, guidance,
           list({'run': run, 'model_version': model_version, 'inserted_path': inserted_path}
                ORDER BY run, item_key)[1:2] AS outputs
    FROM (
        SELECT x.eval_set, x.item_id, x.guidance, b.run, b.model_version, b.inserted_path, b.item_key
        FROM entries x
        JOIN image_rows i ON i.eval_set = x.eval_set AND i.item_id = x.item_id AND i.guidance = x.guidance
        JOIN insert_items b ON b.image_sha256 = i.sha256 AND b.object = x.object AND b.status = 'inserted'
    )
    GROUP BY ALL
)
SELECT row_number() OVER (ORDER BY x.disagreement DESC, x.item_id, x.guidance) AS rank,
       x.eval_set, x.item_id, x.guidance, x.version_a, x.version_b, x.iou_a, x.iou_b, x.disagreement,
       x.image_id, x.object, x.size_bin, x.dataset_version, x.k, i.dataset, i.uri, i.width, i.height,
       x.methods, l.layers, o.outputs
FROM entries x
LEFT JOIN image_rows i ON i.eval_set = x.eval_set AND i.item_id = x.item_id AND i.guidance = x.guidance
LEFT JOIN layer_rows l ON l.eval_set = x.eval_set AND l.item_id = x.item_id AND l.guidance = x.guidance
LEFT JOIN output_rows o ON o.eval_set = x.eval_set AND o.item_id = x.item_id AND o.guidance = x.guidance
ORDER BY rank
