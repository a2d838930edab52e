"""Prefect flows (the DAGs) and the `smartmask` CLI. Ray is started here, never in the library."""
