"""The one place where errors become HTTP: application/problem+json (RFC 9457).

Domain errors (ours, the catalog's, the store's, the copy engine's) map to a
stable `type`; anything else is a 500 that hides internals and is logged with
its traceback.
"""
from __future__ import annotations

import json

import structlog
from aiohttp import web

from .. import catalog as cat
from ..errors import PROBLEM_BASE, OvaultError

log = structlog.get_logger("ovault.api")

CATALOG_MAP = {cat.NotFound: (404, "not-found", "Not found"),
               cat.Conflict: (409, "conflict", "Conflict"),
               cat.Invalid: (422, "invalid-request", "Invalid request"),
               cat.Unavailable: (503, "database-unavailable", "Database unavailable"),
               cat.Retryable: (503, "retry", "Try again")}


def problem(status: int, type_: str, title: str, detail: str, **extra) -> web.Response:
    body = {"type": PROBLEM_BASE + type_, "title": title, "status": status, "detail": detail, **extra}
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json")


@web.middleware
async def problem_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except OvaultError as e:
        return problem(e.status, e.type, e.title, str(e))
    except cat.CatalogError as e:
        for cls, (status, type_, title) in CATALOG_MAP.items():
            if isinstance(e, cls):
                return problem(status, type_, title, str(e))
        log.exception("catalog error", path=request.path)
        return problem(500, "internal", "Internal error", "a database error occurred; see the logs")
    except web.HTTPException as e:
        if e.status >= 400 and e.content_type != "application/problem+json":
            slug = {404: "not-found", 405: "method-not-allowed", 413: "too-large",
                    415: "unsupported-media-type"}.get(e.status, "http-error")
            return problem(e.status, slug, e.reason, e.text or e.reason)
        raise
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return problem(500, "internal", "Internal error", "an unexpected error occurred; see the logs")
