"""Benchmarks: each scenario's figures beside a baseline measured in the same run, on an
embedded stack of the bench's own. `reflux bench --help` (or `python -m bench --help`)."""

from infra import lazy

__all__ = [
    "add_arguments",
    "run_bench",
]

__getattr__ = lazy(
    __name__,
    globals(),
    {
        "bench.runner": ["add_arguments", "run_bench"],
    },
)
