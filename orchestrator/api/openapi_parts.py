"""Building blocks of the OpenAPI document (api/openapi.py and the parts
merged into it, such as api/openapi_policies.py): schema and operation helpers
with no knowledge of any route, so every part imports them one way."""
from __future__ import annotations

UUID = {"type": "string", "format": "uuid",
        "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"}
TIME = {"type": "string", "format": "date-time"}


def nullable(s: dict) -> dict:
    return {**s, "nullable": True}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict, required=None, extra=True) -> dict:
    """An object schema; every property required unless `required` says which
    (OpenAPI 3.0 forbids an empty `required` list: none required omits it)."""
    required = list(props) if required is None else list(required)
    out = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if not extra:
        out["additionalProperties"] = False
    return out


def page(item: str) -> dict:
    return obj({"items": {"type": "array", "items": ref(item)}, "next_cursor": nullable({"type": "string"})})


INT = {"type": "integer", "minimum": 0}
STR = {"type": "string"}
NSTR = nullable(STR)


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PROBLEM = {"description": "An error (RFC 9457)",
           "content": {"application/problem+json": {"schema": ref("Problem")}}}


def q(name, schema, description=""):
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def path(name, schema=UUID):
    return {"name": name, "in": "path", "required": True, "schema": schema}


LIMIT = q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size")
CURSOR = q("cursor", STR, "next_cursor of the previous page")


def op(summary, role, responses, *, params=(), body=None, tags=(), **extra):
    o = {"summary": summary, "description": f"Needs the {role} role." if role else "No authentication.",
         "x-ovault-role": role, "parameters": list(params), "responses": {**responses, "default": PROBLEM}}
    if tags:
        o["tags"] = list(tags)
    if body:
        o["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    if role is None:
        o["security"] = []
    o.update(extra)
    return o


NO_CONTENT = {"204": {"description": "Done"}}
