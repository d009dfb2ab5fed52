"""A seccomp filter for sandboxed code, as classic BPF bytes for `bwrap --seccomp FD`.

The code already runs without capabilities and with no_new_privs, so most of what is
denied here would fail anyway; the filter shrinks the kernel surface it can reach:
no new user namespaces (which would hand it capabilities inside them), no mounts,
no ptrace or cross-process memory access, no keyrings, BPF, perf, userfaultfd or
io_uring, no module or kexec calls. Denied calls fail with EPERM; `clone3` fails with
ENOSYS so libc falls back to `clone`, whose flags a classic filter can inspect.
Any other architecture or ABI (x32, 32-bit) than the one the table is for is killed.

No libseccomp: the program is small enough to write out (syscall numbers from the
kernel's `asm/unistd_64.h` and `asm-generic/unistd.h`).
"""

from __future__ import annotations

import errno
import platform
import struct

from infra import SandboxError

__all__ = ["DENIED", "filter_program"]

DENIED = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "ptrace",
    "process_vm_readv", "process_vm_writev", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "io_uring_setup", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
)  # fmt: skip

_X86_64 = {
    "clone": 56, "clone3": 435, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166,
    "pivot_root": 155, "chroot": 161, "ptrace": 101, "process_vm_readv": 310,
    "process_vm_writev": 311, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "kexec_load": 246,
    "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442,
}  # fmt: skip
_AARCH64 = {
    "clone": 220, "clone3": 435, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
    "pivot_root": 41, "chroot": 51, "ptrace": 117, "process_vm_readv": 270,
    "process_vm_writev": 271, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
    "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425, "kexec_load": 104,
    "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106,
    "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442,
}  # fmt: skip
# machine -> (AUDIT_ARCH_*, syscall numbers, lowest number of a foreign ABI or None)
_ARCHES = {
    "x86_64": (0xC000003E, _X86_64, 0x40000000),
    "aarch64": (0xC00000B7, _AARCH64, None),
}

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000
_CLONE_NEWUSER = 0x10000000
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_NR, _ARCH, _ARG0_LOW = 0, 4, 16


def filter_program(machine: str | None = None) -> bytes:
    """The filter for this machine's architecture, as `struct sock_filter[]` bytes."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise SandboxError(f"no seccomp filter for architecture {machine!r}")
    audit_arch, numbers, foreign_abi = _ARCHES[machine]
    denied = [numbers[name] for name in DENIED]
    # (code, jump if true, jump if false, k); jumps are relative to the next instruction.
    prog: list[tuple[int, int, int, int]] = []
    prog.append((_LD_W_ABS, 0, 0, _ARCH))
    prog.append((_JEQ_K, 1, 0, audit_arch))
    prog.append((_RET_K, 0, 0, _KILL_PROCESS))
    prog.append((_LD_W_ABS, 0, 0, _NR))
    if foreign_abi is not None:
        prog.append((_JGE_K, 0, 1, foreign_abi))
        prog.append((_RET_K, 0, 0, _KILL_PROCESS))
    # after the checks come: [ret ENOSYS] [ret EPERM] [clone args check...] [ret ALLOW]
    checks = [(numbers["clone3"], "enosys")] + [(nr, "eperm") for nr in denied]
    checks.append((numbers["clone"], "clone"))
    n = len(checks)
    for i, (nr, target) in enumerate(checks):
        to_allow = n - i - 1  # the checks after this one, then "ret ALLOW"
        offset = {"enosys": to_allow + 1, "eperm": to_allow + 2, "clone": to_allow + 3}[target]
        prog.append((_JEQ_K, offset, 0, nr))
    prog.append((_RET_K, 0, 0, _ALLOW))  # not a listed call
    prog.append((_RET_K, 0, 0, _ERRNO | errno.ENOSYS))
    prog.append((_RET_K, 0, 0, _ERRNO | errno.EPERM))
    prog.append((_LD_W_ABS, 0, 0, _ARG0_LOW))  # clone(flags, ...): flags' low word
    prog.append((_JSET_K, 0, 1, _CLONE_NEWUSER))
    prog.append((_RET_K, 0, 0, _ERRNO | errno.EPERM))
    prog.append((_RET_K, 0, 0, _ALLOW))
    return b"".join(struct.pack("=HBBI", *insn) for insn in prog)
