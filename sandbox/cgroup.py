"""A cgroup per run, where the host lets us make one: a cap on the run's memory as a whole
(every process, and the tmpfs pages it writes) and on its process count, the peak memory
it reached, and whether the kernel's OOM killer acted.

cgroup v1 (a `memory` and a `pids` hierarchy) and v2 (unified; used when the serving
process's cgroup delegates both controllers to its children) are both handled. Where
neither is writable (not root, a read-only /sys/fs/cgroup) runs go without: memory is then
capped per process by RLIMIT_AS only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PREFIX = "reflux-sbx-"
_counter = itertools.count()


@dataclass(frozen=True)
class Parents:
    """Where run cgroups are made: v2 one directory; v1 the memory and pids ones."""

    unified: Path | None = None
    memory: Path | None = None
    pids: Path | None = None


def find_parents(root: Path = ROOT) -> Parents | None:
    """This process's own cgroups, if run cgroups can be made under them."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    v1: dict[str, Path] = {}
    unified = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            unified = root / path.lstrip("/")
        for name in controllers.split(","):
            if name in ("memory", "pids"):
                v1[name] = root / name / path.lstrip("/")
    if "memory" in v1 and "pids" in v1:
        parents = Parents(memory=v1["memory"], pids=v1["pids"])
    elif unified is not None and _delegates(unified):
        parents = Parents(unified=unified)
    else:
        return None
    if not all(os.access(p, os.W_OK) for p in (parents.unified, parents.memory, parents.pids) if p):
        return None
    _remove_stale(parents)
    return parents


def _delegates(path: Path) -> bool:
    try:
        enabled = (path / "cgroup.subtree_control").read_text().split()
    except OSError:
        return False
    return "memory" in enabled and "pids" in enabled


def _remove_stale(parents: Parents) -> None:
    """Run cgroups that services no longer running left behind (rmdir refuses any still
    in use)."""
    for parent in (parents.unified, parents.memory, parents.pids):
        for stale in parent.glob(PREFIX + "*") if parent else ():
            owner = stale.name.removeprefix(PREFIX).split("-")[0]
            if not Path(f"/proc/{owner}").exists():
                with contextlib.suppress(OSError):
                    stale.rmdir()


class RunCgroup:
    """The cgroup(s) of one run; `procs` are the files a launcher writes its PID into."""

    def __init__(self, parents: Parents, memory_bytes: int, pids: int) -> None:
        name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
        self.dirs: list[Path] = []
        self.memory: Path
        if parents.unified is not None:
            self.memory = self._make(parents.unified / name)
            (self.memory / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # no swap accounting
                (self.memory / "memory.swap.max").write_text("0")
            (self.memory / "pids.max").write_text(str(pids))
        else:
            assert parents.memory and parents.pids
            self.memory = self._make(parents.memory / name)
            (self.memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (self.memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            pid_dir = self._make(parents.pids / name)
            (pid_dir / "pids.max").write_text(str(pids))
        self.v2 = parents.unified is not None

    def _make(self, path: Path) -> Path:
        path.mkdir()
        self.dirs.append(path)
        return path

    @property
    def procs(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def peak_mb(self) -> float | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return round(int((self.memory / name).read_text()) / (1024 * 1024), 1)
        except (OSError, ValueError):
            return None

    def oom_killed(self) -> bool:
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            fields = dict(line.split() for line in (self.memory / name).read_text().splitlines())
        except (OSError, ValueError):
            return False
        return int(fields.get("oom_kill", "0")) > 0

    def remove(self) -> None:
        for path in reversed(self.dirs):
            for _ in range(50):  # the last process may take a moment to leave
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
            else:
                log.warning("could not remove cgroup %s (still in use)", path)


def enter_command(procs: list[str], argv: list[str]) -> list[str]:
    """`argv`, started inside the cgroups: a shell writes its own PID into each `procs`
    file, then execs (children inherit the cgroup only if it is set before they fork)."""
    script = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ >"$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'  # noqa: E501
    return ["/bin/sh", "-c", script, "sh", str(len(procs)), *procs, *argv]
