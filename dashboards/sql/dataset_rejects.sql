-- Rejected records of every dataset version by stage, record kind and reason code.
-- Columns: name, version, stage, record_kind, reason, n.
SELECT name, version, stage, record_kind, reason, count(*) AS n
FROM rejects
GROUP BY ALL
ORDER BY name, version, n DESC, reason
