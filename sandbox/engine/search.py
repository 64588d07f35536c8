"""The engine's search language, as the simulator applies it.

`a=b and c!=d or e=f`, `*` globs in values, quoted values (`name="my vm"`),
`<`/`>`/`<=`/`>=` on numbers, free text (no operator: matched against the
object's text fields), `sortby FIELD [asc|desc]` and `page N` (with `max`).
`and` binds tighter than `or`. Field names are case-insensitive; enum fields
(`status`, ...) match regardless of case; other values follow
`case_sensitive` (default false, as in the REST API).

A term naming a field the object does not have is a syntax error. The engine's
search backend (SearchQuery.initQueryData) then records the error text and
returns no data; the query itself still succeeds, so the REST API answers
200 with an empty collection: a bad search never selects everything.
"""
from __future__ import annotations

import fnmatch
import re

import structlog

log = structlog.get_logger("sandbox.engine")

# Fields whose values are enums: the engine matches them regardless of case.
ENUM_FIELDS = {"status", "type", "severity", "phase", "format", "content_type"}
_TERM = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(!=|<=|>=|=|<|>)\s*(.*?)\s*$")


class SearchSyntaxError(ValueError):
    """The search names a field the object does not have (or is malformed)."""


def _values(got) -> list[str]:
    if got is None:
        return [""]
    if isinstance(got, (list, tuple, set, frozenset)):
        return [str(x) for x in got] or [""]
    return [str(got)]


def _compare(op: str, got: str, val: str) -> bool:
    try:
        a, b = float(got), float(val)
    except ValueError:
        a, b = got, val
    return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]


def _term(term: str, fields: dict, case_sensitive: bool):
    """A predicate for one term; raises SearchSyntaxError."""
    m = _TERM.match(term)
    if m:
        key, op, val = m.group(1).lower(), m.group(2), m.group(3)
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        get = fields.get(key)
        if get is None:
            raise SearchSyntaxError(f"unknown search field '{m.group(1)}'")
        if val == "" and op not in ("=", "!="):
            raise SearchSyntaxError(f"missing value after '{m.group(1)}{op}'")
        cs = case_sensitive and key not in ENUM_FIELDS

        def ok(x):
            got = _values(get(x))
            if op in ("<", ">", "<=", ">="):
                return any(_compare(op, g, val) for g in got)
            pat = val if cs else val.lower()
            hit = any(fnmatch.fnmatchcase(g if cs else g.lower(), pat) for g in got)
            return hit if op == "=" else not hit
        return ok
    text = term.strip().strip('"')
    if not text or re.search(r"[=<>!]", text):
        raise SearchSyntaxError(f"cannot parse '{term.strip()}'")
    low = text.lower().replace("*", "")

    def free(x):
        return any(low in v.lower() for f in fields.values() for v in _values(f(x)))
    return free


def _split(q: str, word: str) -> list[str]:
    """Split on a keyword outside double quotes."""
    parts, cur, quoted, i = [], [], False, 0
    pat = re.compile(rf"\s+{word}\s+", re.I)
    while i < len(q):
        if q[i] == '"':
            quoted = not quoted
        if not quoted:
            m = pat.match(q, i)
            if m:
                parts.append("".join(cur))
                cur, i = [], m.end()
                continue
        cur.append(q[i])
        i += 1
    parts.append("".join(cur))
    return parts


def search(items, q: str | None, fields: dict, case_sensitive: bool = False):
    """The items the search selects (see the module doc); an erroneous search
    selects nothing."""
    items = list(items)
    if not q or not q.strip():
        return items
    q = q.strip()
    order = None
    q = re.sub(r"\s*\bpage\s+\d+\s*$", "", q, flags=re.I).strip()
    m = re.search(r"\s*\bsortby\s+([\w.]+)(?:\s+(asc|desc))?\s*$", q, flags=re.I)
    if m:
        order = (m.group(1).lower(), (m.group(2) or "asc").lower() == "desc")
        q = q[:m.start()].strip()
    try:
        if order and order[0] not in fields:
            raise SearchSyntaxError(f"cannot sort by '{order[0]}'")
        alternatives = [[_term(t, fields, case_sensitive) for t in _split(alt.strip(), "and")]
                        for alt in _split(q, "or")] if q else None
    except SearchSyntaxError as e:
        log.info("erroneous search text", search=q, error=str(e))
        return []
    out = items
    if alternatives is not None:
        out = [x for x in items if any(all(p(x) for p in alt) for alt in alternatives)]
    if order:
        get = fields[order[0]]
        out.sort(key=lambda x: str(get(x) or "").lower(), reverse=order[1])
    return out


def page(items, request):
    from .model import BadRequest
    m = request.query.get("max")
    size = None
    if m not in (None, "", "-1"):
        try:
            size = int(m)
        except ValueError:
            raise BadRequest(f"Invalid value for 'max': {m}") from None
    pm = re.search(r"\bpage\s+(\d+)\s*$", request.query.get("search") or "", flags=re.I)
    if pm and size:
        start = (max(int(pm.group(1)), 1) - 1) * size
        return items[start:start + size]
    return items[:size] if size is not None else items
