-- One row per benchmark record (the `bench` view; bench/_results.py), oldest first: when, which code, which
-- machine (the flattened machine_* columns, whichever the record has).
-- Columns: run, bench, at, code_version, machine_cpu, machine_cores, machine_memory_gib, machine_gpu,
-- machine_platform, machine_host, machine_description.
WITH j AS (SELECT run, bench, "at", to_json(b) AS doc FROM bench b)
SELECT run, bench, "at",
       json_extract_string(doc, '$.code_version') AS code_version,
       json_extract_string(doc, '$.machine_cpu') AS machine_cpu,
       json_extract_string(doc, '$.machine_cores') AS machine_cores,
       json_extract_string(doc, '$.machine_memory_gib') AS machine_memory_gib,
       json_extract_string(doc, '$.machine_gpu') AS machine_gpu,
       json_extract_string(doc, '$.machine_platform') AS machine_platform,
       json_extract_string(doc, '$.machine_host') AS machine_host,
       json_extract_string(doc, '$.machine_description') AS machine_description
FROM j
ORDER BY bench, "at", run
