"""The filesystem a process sandbox sees, as a list of mounts that either launcher builds
(bubblewrap from its command line, `sandbox.jail` from JSON), then the root is made
read-only.

    /usr, /bin, /lib…   read-only (the merged-/usr links as links)
    <python prefix>     read-only, when the interpreter lives outside /usr
    …/site-packages     covered by an empty read-only tmpfs (every installed package)
    /sbx/bootstrap.py   read-only, the program that runs the code
    /sbx/site/<name>    read-only, each allow-listed package
    /sbx/egress.sock    the egress proxy (network: limited)
    /proc               the run's own (its PID namespace)
    /dev                null, zero, full, random, urandom, tty; /dev/shm a sized tmpfs
    /tmp                a sized tmpfs, the working directory
    /etc                empty but the loader cache and alternatives (and, with network,
                        resolv.conf, hosts, nsswitch.conf, ssl)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from sandbox.interpreter import (
    BOOTSTRAP,
    BOOTSTRAP_SOURCE,
    EGRESS_SOCKET,
    SITE,
    Interpreter,
    PackageMount,
)
from sandbox.models import Limits

__all__ = ["ENV", "Mount", "filesystem"]

MIB = 1024 * 1024
SHM_MB = 16
ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
NETWORK_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl")
ENV = {
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
}


@dataclass(frozen=True)
class Mount:
    kind: Literal["ro-bind", "ro-bind-try", "tmpfs", "dir", "symlink", "proc", "dev"]
    target: str
    source: str = ""
    """ro-bind: the host path; symlink: the link's text."""
    mode: int = 0o755
    size: int = 0
    """tmpfs: bytes (0: the kernel's default)."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def filesystem(
    limits: Limits,
    interpreter: Interpreter,
    packages: tuple[PackageMount, ...],
    egress: str | None = None,
) -> list[Mount]:
    """The mounts for one run; `egress` is the host path of the egress proxy's socket
    (network: limited)."""
    mounts = [Mount("ro-bind", "/usr", "/usr")]
    for path in ROOT_LINKS:
        if os.path.islink(path):
            mounts.append(Mount("symlink", path, os.readlink(path)))
        elif os.path.isdir(path):
            mounts.append(Mount("ro-bind", path, path))
    prefix = interpreter.prefix
    if not prefix.startswith("/usr/"):
        mounts += [Mount("dir", str(parent)) for parent in reversed(Path(prefix).parents[:-1])]
        mounts.append(Mount("ro-bind", prefix, prefix))
    mounts += [Mount("tmpfs", hidden, mode=0o555, size=4096) for hidden in interpreter.hidden]
    mounts += [Mount("dir", "/sbx"), Mount("dir", SITE)]
    mounts.append(Mount("ro-bind", BOOTSTRAP, str(BOOTSTRAP_SOURCE)))
    mounts += [Mount("ro-bind", p.target, p.source) for p in packages]
    if egress is not None:
        mounts.append(Mount("ro-bind", EGRESS_SOCKET, egress))
    mounts += [Mount("proc", "/proc"), Mount("dev", "/dev")]
    mounts.append(Mount("tmpfs", "/tmp", mode=0o1777, size=limits.tmp_mb * MIB))
    mounts.append(Mount("tmpfs", "/dev/shm", mode=0o1777, size=SHM_MB * MIB))
    mounts.append(Mount("dir", "/etc"))
    files = ["/etc/ld.so.cache", "/etc/alternatives"]
    if limits.network == "full":
        files += NETWORK_FILES
    mounts += [Mount("ro-bind-try", path, path) for path in files]
    return mounts


def bwrap_args(mounts: list[Mount]) -> list[str]:
    """The mounts as bubblewrap options (then `--remount-ro /`)."""
    argv: list[str] = []
    for m in mounts:
        if m.kind in ("ro-bind", "ro-bind-try"):
            argv += [f"--{m.kind}", m.source, m.target]
        elif m.kind == "symlink":
            argv += ["--symlink", m.source, m.target]
        elif m.kind in ("proc", "dev"):
            argv += [f"--{m.kind}", m.target]
        else:
            argv += ["--perms", f"{m.mode:04o}"]
            if m.size:
                argv += ["--size", str(m.size)]
            argv += [f"--{m.kind}", m.target]
    return [*argv, "--remount-ro", "/"]
