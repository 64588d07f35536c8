"""The one place where errors become HTTP: application/problem+json (RFC 9457).

Every error of ovault's family (`imageio_ext.errors.OvaultError`: the
orchestrator's, the catalog's, the store's, the copy engine's) carries its
status, title and stable ``code``; the problem ``type`` is `PROBLEM_BASE` plus
the code with hyphens, and the body repeats the ``code``. The mapping is by
class, never by class name. An error whose text may carry internals
(``expose = False``, e.g. a bare database error) and anything outside the
family become a 500 that says nothing about the inside and is logged with its
traceback.
"""
from __future__ import annotations

import json

import structlog
from aiohttp import web

from ..errors import PROBLEM_BASE, OvaultError

log = structlog.get_logger("ovault.api")

HTTP_SLUGS = {404: "not-found", 405: "method-not-allowed", 413: "too-large", 415: "unsupported-media-type"}


def problem(status: int, type_: str, title: str, detail: str, **extra) -> web.Response:
    body = {"type": PROBLEM_BASE + type_, "title": title, "status": status, "detail": detail, **extra}
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json")


def error_response(e: OvaultError) -> web.Response:
    """The problem+json answer for a domain error (one whose text may be shown)."""
    return problem(e.status, e.slug, e.title, str(e), code=e.code,
                   **getattr(e, "problem_extra", {}))  # e.g. a missing engine permit (authz.py)


@web.middleware
async def problem_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except OvaultError as e:
        if e.expose or e.status < 500:  # a 4xx is about the request: always said
            return error_response(e)
        log.exception("internal error", path=request.path, method=request.method, code=e.code)
        return problem(500, "internal", "Internal error", "an internal error occurred; see the logs")
    except web.HTTPException as e:
        if e.status >= 400 and e.content_type != "application/problem+json":
            return problem(e.status, HTTP_SLUGS.get(e.status, "http-error"), e.reason, e.text or e.reason)
        raise
    except Exception:
        log.exception("unhandled error", path=request.path, method=request.method)
        return problem(500, "internal", "Internal error", "an unexpected error occurred; see the logs")
