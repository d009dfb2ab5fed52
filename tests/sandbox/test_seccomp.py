"""The seccomp program's shape (its effect is tested in test_process: namespaces refused,
threads and processes still work)."""

from __future__ import annotations

import pytest

from infra.errors import SandboxError
from sandbox.seccomp import DENIED, filter_program


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_one_check_per_denied_call_within_jump_range(machine: str) -> None:
    program = filter_program(machine)
    assert len(program) % 8 == 0
    instructions = len(program) // 8
    assert instructions < 256  # classic BPF jumps are one byte
    assert instructions >= len(DENIED) + 8


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(SandboxError, match="no seccomp filter for architecture 'riscv64'"):
        filter_program("riscv64")
