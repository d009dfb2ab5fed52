"""The CLI's bounds on what comes in: `--input` nested too deeply, a workflow source too
large for `validate` or `workflows push`: one line and exit 2, never a traceback."""

from __future__ import annotations

import json

from tests.helpers.stack import RunningStack

FLOW = """
id: cli-limits
inputs:
  deep: {type: array, default: []}
steps:
  - id: hello
    node: core.transform@1
    with: {value: 1}
"""


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_a_deep_input_is_one_line_and_exit_2(stack: RunningStack):
    path = stack.write("cli-limits.yaml", FLOW)
    deep = "[" * 400 + "]" * 400
    done = stack.cli("run", str(path), "--input", f'{{"deep": {deep}}}', "--no-wait")
    assert done.returncode == 2, done.stderr + done.stdout
    assert "nested deeper than 64 levels" in one_line(done.stderr)
    assert done.stdout == ""
    deep_file = stack.home / "deep.json"
    deep_file.write_text(json.dumps({"deep": 0})[:-2] + deep + "}")
    done = stack.cli("run", str(path), "--input", f"@{deep_file}", "--no-wait")
    assert done.returncode == 2, done.stderr + done.stdout
    assert "nested deeper than 64 levels" in one_line(done.stderr)


def big_source(size: int) -> str:
    pad = "#" + "x" * 99 + "\n"
    return FLOW + pad * (size // len(pad) + 1)


def test_a_source_over_the_limit_is_refused_by_validate_and_push(stack: RunningStack):
    path = stack.write("cli-big.yaml", big_source(600 * 1024))
    for args in (("validate", str(path)), ("workflows", "push", str(path))):
        done = stack.cli(*args)
        assert done.returncode == 2, (args, done.stderr, done.stdout)
        line = one_line(done.stdout + done.stderr)
        assert "524288" in line and "REFLUX_SOURCE_MAX_BYTES" in line, line
        assert str(path) in line
