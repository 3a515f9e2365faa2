"""Bounds the command line checks before it loads anything else (see service.cli)."""

MAX_SLOTS = 256  # worker slots per process; each holds a DuckDB cursor
