"""The Parquet lake: layout, schemas, atomic writes, read-only DuckDB queries."""
