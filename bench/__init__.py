"""Benchmarks: each scenario's figures beside a baseline measured in the same run, on an
embedded stack of the bench's own. `reflux bench --help` (or `python -m bench --help`)."""
