-- Rejected rows of every bulk run by stage and reason code.
-- Columns: run, reject_stage, reject_reason, n.
SELECT run, reject_stage, reject_reason, count(*) AS n
FROM insert_items
WHERE status = 'rejected'
GROUP BY ALL
ORDER BY run, n DESC, reject_reason
