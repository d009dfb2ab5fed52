"""Schemathesis against the running API: generated requests to every operation, with an
admin token, never get a 5xx and every response matches the OpenAPI document (status,
content type, body, headers). Not checked: that every schema-valid request is accepted;
a workflow's YAML can be well-formed JSON and still not a workflow."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from infra.settings import Settings
from reflux.api import create_app
from tests.reflux.api.conftest import auth

# the document comes from the app itself (building it needs no services); the calls go
# to the API the test stack runs
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_responses_match_the_schema(case, stack, tokens):
    case.call_and_validate(
        base_url=stack.api_url,
        headers=auth(tokens["admin"]),
        excluded_checks=[positive_data_acceptance],
    )
