"""Bulk object insertion over image catalogs: the catalog format, the stages, exactly-once storage. No Ray here:
`tasks/bulk.py` maps these stages over Ray Data, `flows/bulk_insert.py` runs it as a Prefect flow."""
