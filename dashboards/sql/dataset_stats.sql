-- The dataset cards' statistics (the `stats` table, long form) of every version: summary figures, class counts
-- and, against the previous version, the diff (`text` = that version's id).
-- Columns: name, version, section, key, value, text.
SELECT name, version, section, key, value, text
FROM stats
WHERE section IN ('summary', 'class', 'diff', 'layers_per_image', 'captions', 'rejects')
ORDER BY name, version, section, key
