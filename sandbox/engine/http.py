"""The engine simulator's HTTP plumbing: SSO users and tokens, fault
injection, XML/JSON representation, search, the middleware (auth, faults,
API versions, content negotiation, `follow`) and request helpers shared by the
resource modules (`inventory`, `vms`, `disks`).
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import xml.etree.ElementTree as ET
import secrets
import time
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import structlog
from aiohttp import web
from ovirtsdk4 import types

from . import jsonrep, render
from .model import BadRequest, EngineError, NotFound, Vm, new_id
from .perms import visible
from .state import Engine

API = render.API
ENGINE = web.AppKey("engine", Engine)
SSO = web.AppKey("sso", object)
FAULTS = web.AppKey("faults", object)


# --- users, tokens --------------------------------------------------------------------
@dataclass
class User:
    name: str  # user@domain
    password: str
    id: str = field(default_factory=new_id)
    admin: bool = True
    vm_ids: set = field(default_factory=set)  # granted by the lab's admin API
    engine_user: bool = True  # added to the engine (`/users`); False: in the directory only

    @property
    def principal(self) -> str:
        return self.name.partition("@")[0]

    @property
    def authz(self) -> str:
        """The engine's authz name of the user's profile (`internal` → `internal-authz`)."""
        return (self.name.partition("@")[2] or "internal") + "-authz"

    @property
    def user_name(self) -> str:
        return f"{self.principal}@{self.authz}"


class Sso:
    def __init__(self, users: list[User], token_ttl: int = 3600):
        self.users = {u.name: u for u in users}
        self.tokens: dict[str, tuple[User, float]] = {}
        self.ttl = token_ttl

    def login(self, username: str, password: str) -> str | None:
        if "@" not in username:
            username += "@internal"
        u = self.users.get(username)
        if u is None or not secrets.compare_digest(u.password, password):
            return None
        u.engine_user = True  # the engine adds a directory user at their first login
        tok = secrets.token_urlsafe(48)
        self.tokens[tok] = (u, time.time() + self.ttl)
        return tok

    def user(self, token: str) -> User | None:
        hit = self.tokens.get(token)
        if not hit or hit[1] < time.time():
            self.tokens.pop(token, None)
            return None
        return hit[0]


# --- fault injection ------------------------------------------------------------------
@dataclass
class FaultRule:
    id: str
    method: str  # "*" or a method
    path: str  # regex, matched against the path below /ovirt-engine/api
    status: int | None = None
    delay: float = 0.0
    count: int | None = None  # None = until removed
    detail: str = "Injected fault"


class Faults:
    def __init__(self):
        self.rules: list[FaultRule] = []

    def match(self, method: str, path: str) -> FaultRule | None:
        for r in self.rules:
            if r.method not in ("*", method):
                continue
            if not re.search(r.path, path):
                continue
            if r.count is not None:
                if r.count <= 0:
                    continue
                r.count -= 1
            return r
        return None


# --- XML helpers -----------------------------------------------------------------------
def xml_response(obj, status=200, root=None) -> web.Response:
    r = web.Response(status=status, text=render.to_xml(obj, root=root),
                     content_type="application/xml")
    r["collection"] = isinstance(obj, list)  # for the JSON rendering and `follow`
    return r


def fault(status: int, reason: str, detail: str) -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<fault><reason>'
            f'{escape(reason)}</reason><detail>{escape(detail)}</detail></fault>')
    return web.Response(status=status, text=body, content_type="application/xml")


def action(extra: str = "") -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<action><status>complete</status>{extra}</action>')
    return web.Response(status=200, text=body, content_type="application/xml")


XML_TYPES = ("application/xml", "text/xml")
JSON_TYPE = "application/json"


async def body(request, root: str | None = None):
    """The request's entity as an SDK object. JSON bodies are mapped to XML with
    the root element `root` (what the route expects) and read the same way."""
    raw = await request.read()
    if request.content_type == JSON_TYPE and raw.strip():
        if root is None:
            raise BadRequest("A JSON document is not accepted here")
        try:
            raw = jsonrep.json_to_xml(raw, root)
        except ValueError as e:
            raise BadRequest(str(e)) from None
    try:
        return render.parse(raw)
    except ValueError as e:
        raise BadRequest(str(e)) from None


async def action_body(request) -> types.Action:
    """The `<action>` of an action request (empty bodies are an empty action)."""
    raw = await request.read()
    if not raw.strip():
        return types.Action()
    x = await body(request, "action")
    if not isinstance(x, types.Action):
        raise BadRequest("Expected an <action> document")
    return x


def boolean(request, name, default=False) -> bool:
    v = request.query.get(name)
    if v is None and name == "all_content":
        v = request.headers.get("All-Content")
    if v is None:
        return default
    return v.lower() in ("true", "1", "yes")


def corr(request):
    return request.query.get("correlation_id")


def enum(v):
    return v.value if hasattr(v, "value") else v


# --- search: see search.py (re-exported for the resource modules) ----------------------
from .search import page, search  # noqa: E402,F401


# --- middleware ---------------------------------------------------------------------------
VERSION_IN_PATH = re.compile(r"^/v(\d+)(/.*)?$")
UNSUPPORTED_VERSION = ("<html><head><title>Error</title></head><body>Bad Request</body></html>")


def negotiate(request) -> str | None:
    """'xml' or 'json' from the Accept header (first listed wins a tie; none or
    a wildcard is XML); None when neither is acceptable (406)."""
    accept = request.headers.get("Accept", "").strip()
    if not accept:
        return "xml"
    best, best_q = None, 0.0
    for part in accept.split(","):
        mt, *params = [x.strip() for x in part.split(";")]
        q = 1.0
        for prm in params:
            if prm.startswith("q="):
                try:
                    q = float(prm[2:])
                except ValueError:
                    q = 0.0
        mt = mt.lower()
        kind = ("json" if mt == JSON_TYPE else
                "xml" if mt in XML_TYPES + ("*/*", "*", "application/*", "text/*") else None)
        if kind and q > best_q:
            best, best_q = kind, q
    return best


async def dispatch(request, rel_url: str, method: str = "GET"):
    """Run the handler of another API path inside this request (same user)."""
    sub = request.clone(method=method, rel_url=rel_url)
    mi = await request.app.router.resolve(sub)
    mi.add_app(request.app)
    mi.freeze()
    sub._match_info = mi  # what aiohttp's own dispatcher does
    return await mi.handler(sub)


@web.middleware
async def middleware(request: web.Request, handler):
    path = request.path
    if not path.startswith(API):
        return await handler(request)
    tail = path[len(API):]
    # Version: in the path (/v4/...) or the Version header; v3 was removed in 4.3,
    # and the engine's VersionFilter answers an unsupported one with a bare 400.
    m = VERSION_IN_PATH.match(tail)
    version = m.group(1) if m else request.headers.get("Version", "").strip() or "4"
    if version != "4":
        return web.Response(status=400, text=UNSUPPORTED_VERSION, content_type="text/html")
    if m:
        rest = m.group(2) or ""
        qs = ("?" + request.query_string) if request.query_string else ""
        async def versioned(_request, rest=rest, qs=qs):
            return await dispatch(request, API + rest + qs, request.method)
        handler, tail = versioned, rest
    fmt = negotiate(request)
    render.CLIENT_ADDRESS.set(request.url.host)  # transfer URLs on the address the client used
    resp = await _api(request, handler, tail or "/", fmt)
    return await _represent(request, resp, fmt or "xml")


async def _api(request, handler, tail, fmt):
    if request.app[FAULTS]:
        rule = request.app[FAULTS].match(request.method, tail)
        if rule:
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.status:
                return fault(rule.status, "Operation Failed", rule.detail)
    user = authenticate(request)
    if user is None:
        return fault(401, "Unauthorized", "Authentication required: invalid or expired token")
    request["user"] = user
    if fmt is None:
        return fault(406, "Not Acceptable", "The requested media type is not supported; "
                     "use application/xml or application/json")
    if request.method in ("POST", "PUT"):
        raw = await request.read()
        if raw.strip():
            ctype = request.content_type if "Content-Type" in request.headers else "application/xml"
            if ctype in XML_TYPES:
                try:
                    ET.fromstring(raw)
                except ET.ParseError as e:
                    return fault(400, "Bad Request", f"Malformed XML document: {e}")
            elif ctype == JSON_TYPE:
                try:
                    json.loads(raw)
                except (ValueError, UnicodeDecodeError) as e:
                    return fault(400, "Bad Request", f"Malformed JSON document: {e}")
            else:
                return fault(415, "Unsupported Media Type",
                             f"Cannot consume content type '{ctype}'")
    try:
        return await handler(request)
    except EngineError as e:
        return fault(e.status, e.reason, e.detail)
    except web.HTTPException:
        raise
    except Exception as e:  # a bug in the simulator: still answer like the engine
        structlog.get_logger("sandbox.engine").exception("internal error", path=request.path)
        return fault(500, "Internal Server Error", f"{type(e).__name__}: {e}")


async def _represent(request, resp, fmt):
    """`follow` inlining, then the JSON rendering, of an XML answer."""
    if not isinstance(resp, web.Response) or resp.content_type != "application/xml" or not resp.text:
        return resp
    follow = request.query.get("follow")
    if follow and request.method == "GET" and resp.status == 200:
        try:
            resp.text = await _follow(request, resp.text, follow, resp.get("collection", False))
        except EngineError as e:
            return await _represent(request, fault(e.status, e.reason, e.detail), fmt)
    if fmt == "json":
        out = web.Response(status=resp.status, content_type=JSON_TYPE,
                           text=jsonrep.xml_to_json(resp.text, resp.get("collection", False)))
        for k, v in resp.headers.items():
            if k.lower() not in ("content-type", "content-length"):
                out.headers[k] = v
        return out
    return resp


# --- follow (4.4+): inline linked entities and collections ------------------------------
async def _fetch(request, href: str) -> ET.Element | None:
    try:
        resp = await dispatch(request, href)
    except (EngineError, web.HTTPException):
        return None
    if resp.status != 200 or not getattr(resp, "text", None):
        return None
    return ET.fromstring(resp.text)


def _is_ref(el: ET.Element) -> bool:
    return el.get("href") is not None and all(c.tag == "link" for c in el)


async def _follow_one(request, el: ET.Element, parts: list[str]):
    name, rest = parts[0], parts[1:]
    targets = []
    child = el.find(name)
    if child is not None and child.get("href") is not None:  # a reference to one entity
        if _is_ref(child):
            full = await _fetch(request, child.get("href"))
            if full is not None:
                full.tag = name
                el[list(el).index(child)] = full
                child = full
        targets = [child]
    elif child is not None:  # an inline list of references
        for i, item in enumerate(list(child)):
            if item.get("href") and _is_ref(item):
                full = await _fetch(request, item.get("href"))
                if full is not None:
                    full.tag = item.tag
                    child[i] = full
        targets = list(child)
    else:  # a sub-collection given as a link
        rel = name.replace("_", "")
        link = next((l for l in el.findall("link") if l.get("rel") in (rel, name)), None)
        if link is None:
            raise BadRequest(f"Can't follow '{name}': the {el.tag} has no such link")
        coll = await _fetch(request, link.get("href"))
        if coll is not None:
            coll.tag = name
            for k in list(coll.attrib):
                del coll.attrib[k]
            el.append(coll)
            targets = list(coll)
    if rest:
        for t in targets:
            await _follow_one(request, t, rest)


async def _follow(request, text: str, follow: str, collection: bool) -> str:
    root = ET.fromstring(text)
    entities = list(root) if collection else [root]
    for path in follow.split(","):
        parts = [p for p in path.strip().split(".") if p]
        if not parts:
            continue
        for ent in entities:
            await _follow_one(request, ent, parts)
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            + ET.tostring(root, encoding="unicode"))


def authenticate(request) -> User | None:
    sso: Sso = request.app[SSO]
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return sso.user(auth[7:].strip())
    if auth.startswith("Basic "):
        try:
            name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
        except Exception:
            return None
        if "@" not in name:
            name += "@internal"
        u = sso.users.get(name)
        if u and secrets.compare_digest(u.password, pw):
            return u
    return None


def is_admin(e: Engine, user: User) -> bool:
    """An administrator: flagged so in the lab, or holding SuperUser on the system."""
    return user.admin or any(p.user_id == user.id and p.role == "SuperUser"
                             and p.object_type == "system" for p in e.permissions)


def sees_vm(e: Engine, user: User, vm: Vm) -> bool:
    """What the engine's user-level filtering shows: a VM on which the user holds
    a role, or a role that views children on its cluster, data center or the
    system (`perms.visible`)."""
    if is_admin(e, user) or vm.id in user.vm_ids:
        return True
    return visible(e, user.id, "vm", vm.id)


def visible_vms(request):
    e, user = request.app[ENGINE], request["user"]
    return [v for v in e.vms.values() if sees_vm(e, user, v)]


def get_vm(request) -> Vm:
    e, user = request.app[ENGINE], request["user"]
    vm = e.vm(request.match_info["vm"])
    if not sees_vm(e, user, vm):
        raise NotFound(f"VM '{vm.id}' not found")
    return vm


def require_admin(request):
    if not is_admin(request.app[ENGINE], request["user"]):
        raise EngineError("User is not authorized to perform this action.", status=403,
                          reason="Forbidden")




def find(items, item_id: str, what: str):
    """The item with this id, or the engine's 404."""
    for x in items:
        if x.id == item_id:
            return x
    raise NotFound(f"{what} '{item_id}' not found")

