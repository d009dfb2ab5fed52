"""`reflux sandbox run`, as a user runs it (a real process, the real sandbox)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.helpers.stack import CLI


def reflux(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_python_file_with_inputs(tmp_path: Path) -> None:
    script = tmp_path / "total.py"
    script.write_text("def run(inputs):\n    print('adding')\n    return sum(inputs)\n")
    done = reflux("sandbox", "run", str(script), "--input", "[1, 2, 3]")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "adding\n6\n"
    assert done.stderr.startswith("sandbox (process): ok (")


def test_json_result_and_failure_exit_status(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text("import time\ndef run(inputs):\n    time.sleep(10)\n")
    done = reflux("sandbox", "run", str(script), "--timeout", "500ms", "--json")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["status"] == "timeout"
    assert result["error"] == "timed out after 0.5s (wall clock); killed"
    assert set(result["metrics"]) == {"duration_ms", "peak_mem_mb", "exit_code"}


def test_shell_from_stdin() -> None:
    done = reflux(
        "sandbox",
        "run",
        "-",
        "--shell",
        "--input",
        '{"a": 1}',
        stdin="cat $REFLUX_INPUTS_FILE; exit 4",
    )  # noqa: E501
    assert done.returncode == 1
    assert done.stdout == '{"a": 1}'
    assert "sandbox (process): error: exited with status 4 (" in done.stderr


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    script = tmp_path / "x.py"
    script.write_text("pass\n")
    cases = {
        ("--input", "{nope"): "--input:1:2: invalid JSON: Expecting property name",
        ("--timeout", "soon"): "--timeout: bad duration 'soon': use e.g. 500ms, 30s, 10m, 1h",
        ("--memory-mb", "8"): "--memory-mb: Input should be greater than or equal to 32",
    }
    for extra, message in cases.items():
        done = reflux("sandbox", "run", str(script), *extra)
        assert done.returncode == 2
        assert done.stderr.strip().startswith(message), done.stderr
    missing = reflux("sandbox", "run", str(tmp_path / "missing.py"))
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        f"{tmp_path / 'missing.py'}: cannot read: No such file or directory",
    )
