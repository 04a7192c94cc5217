"""taskqueue's own benchmark: `python -m bench` (see bench/README.md).

Kept empty on purpose: the runner imports `bench.jobs` in every worker process.
"""
