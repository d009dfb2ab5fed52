from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.stack import RunningStack, start_test_stack, stop_test_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The whole platform, started once per test session (per xdist worker)."""
    running = start_test_stack(tmp_path_factory.mktemp("reflux-home"))
    try:
        yield running
    finally:
        stop_test_stack(running)
