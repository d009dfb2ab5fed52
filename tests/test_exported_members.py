"""The public face of each package: what other packages and users may import."""

import importlib

import pytest

PACKAGES = ["infra", "nodes", "orchestrator", "registry", "sandbox"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_and_are_sorted(name):
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__)
    for member in module.__all__:
        assert hasattr(module, member), f"{name}.{member}"


def test_error_tree_has_one_root():
    import infra

    errors = [getattr(infra, n) for n in infra.__all__ if n.endswith("Error")]
    assert all(issubclass(e, infra.RefluxError) for e in errors)
    assert issubclass(infra.SsrfError, infra.NodeError) and not infra.SsrfError.retryable
    assert infra.NodeTimeoutError.retryable and infra.NoRespondersError.retryable
    assert issubclass(infra.CodeRunError, infra.NodeError) and not infra.CodeRunError.retryable
