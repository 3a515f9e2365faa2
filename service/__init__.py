"""framejobs: durable background jobs over data frames, run on DuckDB."""

__version__ = "0.1.0"
