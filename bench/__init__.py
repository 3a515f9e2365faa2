"""Benchmarks for framejobs; each is ``python -m bench.<name> [--quick]``.

See docs/PERFORMANCE.md for what each measures and the latest figures.
"""
