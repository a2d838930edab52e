-- Instances per class of every dataset version, counted from its layers, and the change against the version the
-- card diffs against (stats section 'diff', key 'previous_version'); a class gone from the newer version appears
-- with n = 0.
-- Columns: name, version, label, is_stuff, n, previous_version, previous_n, delta.
WITH counts AS (
    SELECT name, version, label, bool_or(is_stuff) AS is_stuff, count(*) AS n FROM layers GROUP BY ALL
), previous AS (
    SELECT name, version, min(text) AS previous_version
    FROM stats WHERE section = 'diff' AND key = 'previous_version' GROUP BY ALL
), labels AS (
    SELECT c.name, c.version, c.label FROM counts c
    UNION
    SELECT p.name, p.version, c.label FROM previous p JOIN counts c ON c.name = p.name AND c.version = p.previous_version
)
SELECT l.name, l.version, l.label, coalesce(c.is_stuff, pc.is_stuff) AS is_stuff, coalesce(c.n, 0) AS n,
       p.previous_version, pc.n AS previous_n,
       CASE WHEN p.previous_version IS NULL THEN NULL ELSE coalesce(c.n, 0) - coalesce(pc.n, 0) END AS delta
FROM labels l
LEFT JOIN counts c ON c.name = l.name AND c.version = l.version AND c.label = l.label
LEFT JOIN previous p ON p.name = l.name AND p.version = l.version
LEFT JOIN counts pc ON pc.name = l.name AND pc.version = p.previous_version AND pc.label = l.label
ORDER BY l.name, l.version, n DESC, l.label
