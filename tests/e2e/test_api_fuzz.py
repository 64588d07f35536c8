"""schemathesis against /api/openapi.json: no 5xx, no answer outside the schema.

Positive and negative cases for every operation but the websocket, about
twenty examples each (a few hundred calls, well under a minute). The
service runs on the sandbox with its webhook sender off, so fuzzed webhook
URLs are never called.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                 response_schema_conformance, status_code_conformance)

from orchestrator.api.openapi import DOCUMENT
from tests.e2e.api_harness import ApiServer, cleanup, state_root

pytestmark = pytest.mark.e2e

schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path="/api/v1/ws")
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def api(sandbox):
    d = state_root()
    s = ApiServer(sandbox.dir, d, configure=lambda c: setattr(c.webhooks, "enabled", False)).start()
    yield s
    s.stop()
    cleanup(d)


@schema.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_matches_its_schema(api, case):
    case.call_and_validate(base_url=api.url, headers={"Authorization": f"Bearer {api.token}"},
                           checks=CHECKS, timeout=30)
