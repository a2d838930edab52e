"""SmartMask pipeline library: pure functions over numpy/pyarrow/torch. Never imports prefect or ray."""

__version__ = "0.1.0"
# Bumped whenever a change alters what a rebuild writes: it enters every dataset version hash, so a new
# code version yields a new dataset version instead of silently mixing rows made by two behaviours.
DATA_CODE_VERSION = "rebuild-2"
