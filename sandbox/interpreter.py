"""What of the host's Python a sandbox sees: the base interpreter with its standard library,
none of its site-packages, and the allow-listed packages mounted at `SITE`.

The allow-list names import names (`yaml`, not `PyYAML`); each is found the way the
serving process would import it, and mounted read-only with its `<name>.libs` sibling
(where auditwheel puts bundled shared libraries). A package's own dependencies must be
listed too: nothing else is there.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import site
import sys
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sandbox.models import CodeRunRequest

log = logging.getLogger(__name__)

SITE = "/sbx/site"
BOOTSTRAP = "/sbx/bootstrap.py"
EGRESS_SOCKET = "/sbx/egress.sock"
BOOTSTRAP_SOURCE = Path(__file__).with_name("bootstrap.py")


@dataclass(frozen=True)
class Interpreter:
    executable: str
    prefix: str
    hidden: tuple[str, ...]
    """Directories inside the mounted trees that hold installed packages: covered over."""


@dataclass(frozen=True)
class PackageMount:
    name: str
    source: str
    target: str


@cache
def host_interpreter() -> Interpreter:
    """The base interpreter of the running Python (a virtualenv's own packages excluded)."""
    prefix = Path(sys.base_prefix).resolve()
    executable = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        *site.getsitepackages([str(prefix)]),
        sysconfig.get_path("purelib", vars={"base": str(prefix)}),
        sysconfig.get_path("platlib", vars={"platbase": str(prefix)}),
        "/usr/lib/python3/dist-packages",
        f"/usr/lib/{version}/dist-packages",
        f"/usr/local/lib/{version}/dist-packages",
        f"/usr/local/lib/{version}/site-packages",
    ]
    hidden = sorted({str(Path(p).resolve()) for p in candidates if Path(p).is_dir()})
    return Interpreter(str(executable), str(prefix), tuple(hidden))


def package_mounts(names: list[str] | tuple[str, ...]) -> tuple[PackageMount, ...]:
    return _package_mounts(tuple(names))


@cache
def _package_mounts(names: tuple[str, ...]) -> tuple[PackageMount, ...]:
    mounts: list[PackageMount] = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not (spec.submodule_search_locations or spec.origin):
            log.warning("sandbox allow-list: package %r is not installed here; skipped", name)
            continue
        if spec.submodule_search_locations:
            source = Path(next(iter(spec.submodule_search_locations)))
        else:
            source = Path(str(spec.origin))
        if source.suffix not in ("", ".py", ".so") or not source.exists():
            log.warning("sandbox allow-list: %r (%s) cannot be mounted; skipped", name, source)
            continue
        mounts.append(PackageMount(name, str(source), f"{SITE}/{source.name}"))
        libs = source.with_name(f"{name}.libs")
        if libs.is_dir():
            mounts.append(PackageMount(name, str(libs), f"{SITE}/{libs.name}"))
    return tuple(mounts)


def bootstrap_input(request: CodeRunRequest, packages: tuple[PackageMount, ...]) -> bytes:
    """The JSON the bootstrap reads on stdin."""
    body = request.model_dump(mode="json")
    body["limits"]["cpu_seconds"] = request.limits.cpu_seconds
    body["allowed"] = sorted({m.name for m in packages})
    body["site"] = SITE
    body["egress"] = EGRESS_SOCKET if request.limits.network == "limited" else None
    return json.dumps(body).encode()
