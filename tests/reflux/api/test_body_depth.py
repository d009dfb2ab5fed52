"""The depth bound holds whatever the request's headers say: a body nested past
REFLUX_INPUT_MAX_DEPTH is refused before the app reads it, with two Content-Type headers
(the guard and Starlette could read different ones), or a type that is not JSON."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.stack import RunningStack
from tests.reflux.api.conftest import ORDER_FLOW, auth
from tests.reflux.api.test_access import assert_error
from tests.reflux.api.test_input_shape import ledger_rows, nested, with_deep


@pytest.mark.parametrize(
    ("types", "depth"),
    [
        (["application/json", "text/plain"], 200),  # Starlette reads the first, a dict the last
        (["application/json", "text/plain"], 5000),  # past what json.loads can recurse
        (["text/plain", "application/json"], 200),
        (["text/plain"], 200),
        (["application/x-www-form-urlencoded"], 200),
    ],
)
def test_a_deep_body_is_refused_whatever_its_content_type(
    stack: RunningStack, api, tokens, types: list[str], depth: int
):
    workflow_id = f"depth-{uuid.uuid4().hex[:8]}"
    source = with_deep(ORDER_FLOW.format(id=workflow_id).replace("triggers:\n", ""))
    pushed = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert pushed.status_code == 201, pushed.text
    body = f'{{"workflow": "{workflow_id}", "inputs": {{"order": 1, "deep": {nested(depth)}}}}}'
    headers = [*auth(tokens["author"]).items(), *(("Content-Type", kind) for kind in types)]
    response = api.post("/runs", content=body, headers=headers)
    message = assert_error(response, 422, "InvalidRequest")
    # the guard's words: refused before FastAPI parsed it (a handler's check says "inputs:")
    assert message == "the request body: nested deeper than 64 levels (REFLUX_INPUT_MAX_DEPTH)"
    assert ledger_rows(stack, workflow_id) == 0
