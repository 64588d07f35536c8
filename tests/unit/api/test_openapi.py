"""The OpenAPI document and the route table describe the same API."""
from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from orchestrator import config
from orchestrator.api.auth import ROLES, declared_role
from orchestrator.api.openapi import DOCUMENT
from orchestrator.service import create_app

METHODS = {"get", "post", "put", "patch", "delete"}


def _routes():
    app = create_app(config.load(env={}))
    out = {}
    for r in app.router.routes():
        if r.method == "HEAD":
            continue
        out[(r.method.lower(), r.resource.canonical)] = r.handler
    return out


def test_the_document_is_valid_openapi():
    validate(DOCUMENT)  # raises with the offending path on any violation


def test_the_validator_would_catch_an_empty_required_list():
    broken = {**DOCUMENT, "components": {**DOCUMENT["components"], "schemas": {
        **DOCUMENT["components"]["schemas"], "Broken": {"type": "object", "properties": {}, "required": []}}}}
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_route_is_documented_and_every_operation_routed():
    routes = _routes()
    documented = {(m, p) for p, ops in DOCUMENT["paths"].items() for m in ops if m in METHODS}
    assert set(routes) == documented


@pytest.mark.parametrize("key", sorted(_routes()), ids=lambda k: f"{k[0].upper()} {k[1]}")
def test_declared_role_matches_the_document(key):
    handler = _routes()[key]
    op = DOCUMENT["paths"][key[1]][key[0]]
    if key[1] in ("/healthz", "/readyz"):
        assert declared_role(handler) is None and op["security"] == []
    else:
        assert declared_role(handler) in ROLES, f"{key} declares no role"
        assert op["x-ovault-role"] == declared_role(handler)


def test_path_parameters_are_declared():
    for p, ops in DOCUMENT["paths"].items():
        names = set(re.findall(r"{(\w+)}", p))
        for m, op in ops.items():
            declared = {x["name"] for x in op["parameters"] if x["in"] == "path"}
            assert declared == names, (m, p)


def test_every_reference_resolves():
    text = repr(DOCUMENT)
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in DOCUMENT["components"]["schemas"], name
