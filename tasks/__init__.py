"""Prefect tasks: thin wrappers around smartmask/ adding retries, caching policy and logging. A task covers a
shard or a whole job, never a single sample."""
