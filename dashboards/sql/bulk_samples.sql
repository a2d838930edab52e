-- A sample of each bulk run's outputs: its first $per_run inserted rows by item key (a stable choice).
-- inserted_path and mask_path are relative to the run's folder; the page shows them as thumbnails.
-- Columns: run, item_key, item_id, object, context, guidance, image_uri, model_version, chosen_rank, score,
-- mask_area, inserted_path, mask_path.
SELECT run, item_key, item_id, object, context, guidance, image_uri, model_version, chosen_rank,
       scores[chosen_rank + 1] AS score, mask_area, inserted_path, mask_path
FROM insert_items
WHERE status = 'inserted'
QUALIFY row_number() OVER (PARTITION BY run ORDER BY item_key) <= $per_run
ORDER BY run, item_key
