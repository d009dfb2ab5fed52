"""The layers contract (pyproject.toml [tool.importlinter]): packages only import down.

Checked on the checkout, and on a copy with one upward import added, so the contract is
seen to fail when it should."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["reflux", "bench", "evolution", "orchestrator", "reflection", "nodes", "registry",
            "sandbox", "infra"]  # fmt: skip
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command;"
        " sys.exit(lint_imports_command())", "--no-cache"]  # fmt: skip


def lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        LINT, cwd=where, env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_checkout_keeps_its_layers():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    registry_module = tmp_path / "registry" / "runs.py"
    registry_module.write_text(registry_module.read_text() + "\nfrom orchestrator import Spec\n")
    result = lint(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "BROKEN" in result.stdout
    assert "registry.runs -> orchestrator" in result.stdout
