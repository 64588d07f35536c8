"""The engine simulator's HTTP face: oVirt REST API v4 (XML) and SSO.

Conventions of the real engine reproduced here (see docs/sandbox.md):
- SSO: `POST /ovirt-engine/sso/oauth/token` (password grant, JSON reply),
  `token-info`, `POST /ovirt-engine/services/sso-logout`; Basic auth also
  accepted on the API. A missing or unknown token gives 401.
- Adds answer 201 with the entity, actions answer 200 with `<action>`,
  DELETE answers 200 with no body, errors are `<fault>` documents.
- Non-admin users see only the VMs they were granted; the `Filter: true`
  header is accepted (and implied for them).
- `correlation_id` on any request tags the job and the events it creates.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import fnmatch
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

from . import jsonrep, ovf, render
from .render import T
from .state import (Attachment, Conflict, Engine, EngineError, NotFound, BadRequest, Nic, Vm,
                    new_id)

API = render.API
routes = web.RouteTableDef()
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
    vm_ids: set = field(default_factory=set)  # what a non-admin may see


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


# --- search -----------------------------------------------------------------------------
# Fields whose values are enums: the engine matches them regardless of case.
ENUM_FIELDS = {"status", "type", "severity", "phase", "format"}


def _term_filter(items, term, fields, case_sensitive):
    m = re.match(r"^\s*([\w.]+)\s*(!=|=)\s*(.*?)\s*$", term)
    if m:
        key, op, val = m.group(1).lower(), m.group(2), m.group(3).strip('"')
        get = fields.get(key)
        if get is None:
            return list(items)  # unknown keys are ignored, like unsupported search fields
        cs = case_sensitive and key not in ENUM_FIELDS

        def ok(x):
            got = get(x)
            got = "" if got is None else str(got)
            a, b = (got, val) if cs else (got.lower(), val.lower())
            hit = fnmatch.fnmatchcase(a, b)
            return hit if op == "=" else not hit
        return [x for x in items if ok(x)]
    text = term.strip().lower()
    return [x for x in items if any(text in str(f(x) or "").lower() for f in fields.values())]


def search(items, q: str | None, fields, case_sensitive=False):
    """A subset of the engine's search language: `a=b and c!=d or e=f`, `*` globs,
    free text (matches any listed field), `sortby FIELD [asc|desc]` and `page N`
    (with `max` as the page size, see `page`)."""
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
    out = items
    if q:
        hits: set[int] = set()
        for alternative in re.split(r"\s+or\s+", q, flags=re.I):
            sel = items
            for term in re.split(r"\s+and\s+", alternative.strip(), flags=re.I):
                sel = _term_filter(sel, term, fields, case_sensitive)
            hits.update(id(x) for x in sel)
        out = [x for x in items if id(x) in hits]
    if order and order[0] in fields:
        get = fields[order[0]]
        out.sort(key=lambda x: str(get(x) or "").lower(), reverse=order[1])
    return out


def page(items, request):
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


def visible_vms(request):
    e, user = request.app[ENGINE], request["user"]
    return [v for v in e.vms.values() if user.admin or v.id in user.vm_ids]


def get_vm(request) -> Vm:
    e, user = request.app[ENGINE], request["user"]
    vm = e.vm(request.match_info["vm"])
    if not user.admin and vm.id not in user.vm_ids:
        raise NotFound(f"VM '{vm.id}' not found")
    return vm


def require_admin(request):
    if not request["user"].admin:
        raise EngineError("User is not authorized to perform this action.", status=403,
                          reason="Forbidden")


# --- SSO ----------------------------------------------------------------------------------
@routes.post("/ovirt-engine/sso/oauth/token")
async def sso_token(request):
    form = await request.post()
    if form.get("grant_type") != "password":
        return web.json_response({"error_code": "unsupported_grant_type",
                                  "error": "Unsupported grant type"}, status=400)
    tok = request.app[SSO].login(form.get("username", ""), form.get("password", ""))
    if tok is None:
        return web.json_response({"error_code": "access_denied",
                                  "error": f"Cannot authenticate user '{form.get('username')}': "
                                           "The username or password is incorrect."}, status=400)
    return web.json_response({"access_token": tok, "scope": form.get("scope", "ovirt-app-api"),
                              "exp": str(int((time.time() + request.app[SSO].ttl) * 1000)),
                              "token_type": "bearer"})


@routes.post("/ovirt-engine/sso/oauth/token-info")
async def sso_token_info(request):
    form = await request.post()
    u = request.app[SSO].user(form.get("token", ""))
    if u is None:
        return web.json_response({"error_code": "invalid_grant",
                                  "error": "The provided authorization grant for the auth code "
                                           "has expired."}, status=400)
    user, _, domain = u.name.partition("@")
    return web.json_response({"active": True, "token_type": "bearer", "user_id": u.name,
                              "scope": "ovirt-app-api",
                              "ovirt": {"principal_id": u.id, "user_id": u.id,
                                        "user_authz": domain + "-authz",
                                        "group_ids": [], "admin": u.admin}})


@routes.post("/ovirt-engine/services/sso-logout")
@routes.get("/ovirt-engine/services/sso-logout")
async def sso_logout(request):
    form = await request.post() if request.method == "POST" else request.query
    request.app[SSO].tokens.pop(form.get("token", ""), None)
    return web.json_response({})


# --- root and inventory ----------------------------------------------------------------------
@routes.get(API)
@routes.get(API + "/")
async def api_root(request):
    e = request.app[ENGINE]
    u = request["user"]
    api = types.Api(
        product_info=types.ProductInfo(name="oVirt Engine (ovault sandbox)", vendor="ovault",
                                       instance_id=e.instance_id,
                                       version=types.Version(major=4, minor=5, build=5, revision=0,
                                                             full_version="4.5.5-sandbox")),
        special_objects=types.SpecialObjects(
            blank_template=T(types.Template, id=render.BLANK, href=f"{API}/templates/{render.BLANK}"),
            root_tag=T(types.Tag, id=render.BLANK, href=f"{API}/tags/{render.BLANK}")),
        summary=types.ApiSummary(
            hosts=types.ApiSummaryItem(active=len(e.hosts), total=len(e.hosts)),
            storage_domains=types.ApiSummaryItem(active=len(e.sds), total=len(e.sds)),
            users=types.ApiSummaryItem(active=1, total=len(request.app[SSO].users)),
            vms=types.ApiSummaryItem(active=sum(v.status == "up" for v in e.vms.values()),
                                     total=len(e.vms))),
        time=dt.datetime.now(dt.timezone.utc).astimezone(),
        authenticated_user=T(types.User, id=u.id, href=f"{API}/users/{u.id}"),
        effective_user=T(types.User, id=u.id, href=f"{API}/users/{u.id}"))
    text = render.to_xml(api)
    links = "".join(f'<link href="{API}/{rel}" rel="{rel}"/>' for rel in (
        "clusters", "datacenters", "disks", "events", "hosts", "imagetransfers", "jobs",
        "networks", "storagedomains", "templates", "vms", "vnicprofiles", "users"))
    text = text.replace("<api>", "<api>" + links, 1)
    return web.Response(text=text, content_type="application/xml")


def _collection(name, items_fn, render_fn, root, fields):
    async def list_(request):
        e = request.app[ENGINE]
        items = search(items_fn(e), request.query.get("search"),
                       fields(e) if callable(fields) else fields,
                       boolean(request, "case_sensitive", False))
        return xml_response([render_fn(e, x) for x in page(items, request)], root=root)

    async def get(request):
        e = request.app[ENGINE]
        for x in items_fn(e):
            if x.id == request.match_info["id"]:
                return xml_response(render_fn(e, x))
        raise NotFound(f"Entity '{request.match_info['id']}' not found")
    routes.get(f"{API}/{name}")(list_)
    routes.get(f"{API}/{name}/{{id}}")(get)


_collection("datacenters", lambda e: e.dcs.values(), render.dc, "data_centers",
            lambda e: {"name": lambda x: x.name, "id": lambda x: x.id,
                       "storage": lambda x: " ".join(s.name for s in e.sds.values()
                                                     if s.dc_id == x.id),
                       "storage.name": lambda x: next((s.name for s in e.sds.values()
                                                       if s.dc_id == x.id), None)})
_collection("clusters", lambda e: e.clusters.values(), render.cluster, "clusters",
            {"name": lambda x: x.name, "id": lambda x: x.id})


def _host_fields(e):
    def dc_name(h):
        c = e.clusters.get(h.cluster_id)
        return e.dcs[c.dc_id].name if c and c.dc_id in e.dcs else None
    return {"name": lambda h: h.name, "id": lambda h: h.id, "status": lambda h: h.status,
            "hw_id": lambda h: h.hw_id,
            "cluster": lambda h: e.clusters[h.cluster_id].name if h.cluster_id in e.clusters else None,
            "datacenter": dc_name, "address": lambda h: "127.0.0.1"}


_collection("hosts", lambda e: e.hosts.values(), render.host, "hosts", _host_fields)
_collection("storagedomains", lambda e: e.sds.values(), render.storage_domain, "storage_domains",
            {"name": lambda x: x.name, "id": lambda x: x.id, "type": lambda x: x.type})


@routes.get(API + "/networks")
async def networks(request):
    e = request.app[ENGINE]
    return xml_response([T(types.Network, id=e.network_id, href=f"{API}/networks/{e.network_id}",
                                       name="ovirtmgmt", vm=True,
                                       data_center=types.DataCenter(id=next(iter(e.dcs))))],
                        root="networks")


@routes.get(API + "/vnicprofiles")
async def vnic_profiles(request):
    e = request.app[ENGINE]
    return xml_response([T(types.VnicProfile, id=e.vnic_profile_id, name="ovirtmgmt",
                                           href=f"{API}/vnicprofiles/{e.vnic_profile_id}",
                                           network=types.Network(id=e.network_id))],
                        root="vnic_profiles")


@routes.get(API + "/templates")
async def templates(request):
    return xml_response([T(types.Template, id=render.BLANK, name="Blank",
                                        href=f"{API}/templates/{render.BLANK}",
                                        description="Blank template")], root="templates")


# --- VMs -------------------------------------------------------------------------------------------
VM_FIELDS = {"name": lambda v: v.name, "id": lambda v: v.id, "status": lambda v: v.status,
             "cluster": lambda v: v.cluster_id, "description": lambda v: v.description}


@routes.get(API + "/vms")
async def vms_list(request):
    e = request.app[ENGINE]
    items = search(sorted(visible_vms(request), key=lambda v: v.name),
                   request.query.get("search"), VM_FIELDS, boolean(request, "case_sensitive"))
    ac = boolean(request, "all_content")
    return xml_response([render.vm(e, v, ac) for v in page(items, request)], root="vms")


@routes.get(API + "/vms/{vm}")
async def vm_get(request):
    return xml_response(render.vm(request.app[ENGINE], get_vm(request),
                                  boolean(request, "all_content")))


def _resolve_cluster(e: Engine, c) -> str:
    if c is None:
        raise BadRequest("Vm [cluster.id|name] required for add")
    if c.id:
        if c.id not in e.clusters:
            raise NotFound(f"Cluster '{c.id}' not found")
        return c.id
    for cl in e.clusters.values():
        if cl.name == c.name:
            return cl.id
    raise NotFound(f"Cluster '{c.name}' not found")


def _apply_vm_fields(vm: Vm, x: types.Vm):
    if x.name:
        vm.name = x.name
    if x.description is not None:
        vm.description = x.description
    if x.comment is not None:
        vm.comment = x.comment
    if x.memory:
        vm.memory = x.memory
    if x.cpu and x.cpu.topology:
        t = x.cpu.topology
        vm.cpu_sockets = t.sockets or vm.cpu_sockets
        vm.cpu_cores = t.cores or vm.cpu_cores
        vm.cpu_threads = t.threads or vm.cpu_threads
    if x.os:
        if x.os.type:
            vm.os_type = x.os.type
        if x.os.boot and x.os.boot.devices:
            vm.boot_devices = [enum(d) for d in x.os.boot.devices]
    if x.bios and x.bios.type:
        vm.bios_type = enum(x.bios.type)
    if x.type:
        vm.type = enum(x.type)
    if x.high_availability and x.high_availability.enabled is not None:
        vm.ha = x.high_availability.enabled


@routes.post(API + "/vms")
async def vms_add(request):
    require_admin(request)
    e = request.app[ENGINE]
    x = await body(request, "vm")
    if not isinstance(x, types.Vm):
        raise BadRequest("Expected a <vm> document")
    cluster_id = _resolve_cluster(e, x.cluster)
    conf = x.initialization.configuration if x.initialization else None
    vm = Vm(x.id or new_id(), x.name or "", cluster_id, memory=1 << 30)
    attach = []
    if conf is not None and conf.data:
        if enum(conf.type) not in (None, "ovf"):
            raise BadRequest(f"Unsupported configuration type '{enum(conf.type)}'")
        try:
            o = ovf.parse(conf.data)
        except Exception as ex:
            raise BadRequest(f"Invalid OVF configuration: {ex}") from None
        vm.name = x.name or o["name"]
        vm.description, vm.comment, vm.type = o["description"], o["comment"], o["type"]
        vm.bios_type, vm.os_type, vm.boot_devices, vm.ha = (o["bios_type"], o["os_type"],
                                                            o["boot_devices"], o["ha"])
        vm.memory = o["memory"] or vm.memory
        if "cpu" in o:
            vm.cpu_sockets, vm.cpu_cores, vm.cpu_threads = o["cpu"]
        for i, n in enumerate(o["nics"]):
            vm.nics.append(Nic(new_id(), n["name"] or f"nic{i + 1}", n["interface"], e.new_mac(),
                               n["network"] or "ovirtmgmt"))
        # Disks named by the OVF are attached when they exist and float (they
        # were uploaded before the VM was registered).
        for d in o["disks"]:
            if d["disk_id"] in e.disks and e.vm_of_disk(d["disk_id"]) is None:
                attach.append(Attachment(d["disk_id"], d["bootable"], d["interface"]))
    if not vm.name:
        raise BadRequest("Vm [name] required for add")
    _apply_vm_fields(vm, x)
    if x.template and x.template.name not in (None, "Blank") and x.template.id not in (None, render.BLANK):
        raise NotFound(f"Template '{x.template.name or x.template.id}' not found")
    e.add_vm(vm, corr(request))
    for a in attach:
        e.attach(vm.id, a)
    return xml_response(render.vm(e, vm), status=201)


@routes.put(API + "/vms/{vm}")
async def vm_update(request):
    require_admin(request)
    e = request.app[ENGINE]
    vm = get_vm(request)
    x = await body(request, "vm")
    if x.name and x.name != vm.name and any(v.name == x.name for v in e.vms.values()):
        raise Conflict("[Cannot edit VM. The VM name is already in use.]")
    _apply_vm_fields(vm, x)
    return xml_response(render.vm(e, vm))


@routes.delete(API + "/vms/{vm}")
async def vm_remove(request):
    vm = get_vm(request)
    require_admin(request)
    await request.app[ENGINE].remove_vm(vm.id, detach_only=boolean(request, "detach_only"))
    return web.Response(status=200)


@routes.post(API + "/vms/{vm}/{action:(start|stop|shutdown)}")
async def vm_power(request):
    vm = get_vm(request)
    await request.app[ENGINE].set_power(vm.id, request.match_info["action"] == "start", corr(request))
    return action()


# disk attachments
@routes.get(API + "/vms/{vm}/diskattachments")
async def atts_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response([render.attachment(e, vm, a) for a in vm.attachments],
                        root="disk_attachments")


@routes.get(API + "/vms/{vm}/diskattachments/{id}")
async def att_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    for a in vm.attachments:
        if a.disk_id == request.match_info["id"]:
            return xml_response(render.attachment(e, vm, a))
    raise NotFound(f"Disk attachment '{request.match_info['id']}' not found")


@routes.post(API + "/vms/{vm}/diskattachments")
async def att_add(request):
    e, vm = request.app[ENGINE], get_vm(request)
    x = await body(request, "disk_attachment")
    if not isinstance(x, types.DiskAttachment) or x.disk is None:
        raise BadRequest("DiskAttachment [disk] required for add")
    if x.interface is None:
        raise BadRequest("DiskAttachment [interface] required for add")
    disk_id = x.disk.id
    if not disk_id or disk_id not in e.disks:
        if x.disk.provisioned_size:  # a new disk, created and attached
            d = await _add_disk(e, x.disk, corr(request))
            disk_id = d.id
        elif disk_id:
            raise NotFound(f"Disk '{disk_id}' not found")
        else:
            raise BadRequest("DiskAttachment [disk.id] required for add")
    a = e.attach(vm.id, Attachment(disk_id, bool(x.bootable), enum(x.interface),
                                   x.active if x.active is not None else True,
                                   bool(x.read_only), bool(x.pass_discard)))
    return xml_response(render.attachment(e, vm, a), status=201)


@routes.delete(API + "/vms/{vm}/diskattachments/{id}")
async def att_remove(request):
    e, vm = request.app[ENGINE], get_vm(request)
    e.detach(vm.id, request.match_info["id"])
    if boolean(request, "detach_only", True) is False:
        await e.remove_disk(request.match_info["id"])
    return web.Response(status=200)


# NICs
@routes.get(API + "/vms/{vm}/nics")
async def nics_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response([render.nic(e, vm, n) for n in vm.nics], root="nics")


@routes.post(API + "/vms/{vm}/nics")
async def nic_add(request):
    e, vm = request.app[ENGINE], get_vm(request)
    x = await body(request, "nic")
    if not isinstance(x, types.Nic):
        raise BadRequest("Expected a <nic> document")
    if x.name and any(o.name == x.name for o in vm.nics):
        raise Conflict("[Cannot add Interface. The VM already has a network interface with the "
                       "same name.]")
    n = Nic(new_id(), x.name or f"nic{len(vm.nics) + 1}", enum(x.interface) or "virtio",
            x.mac.address if x.mac and x.mac.address else e.new_mac(),
            linked=x.linked if x.linked is not None else True,
            plugged=x.plugged if x.plugged is not None else True)
    vm.nics.append(n)
    return xml_response(render.nic(e, vm, n), status=201)


# --- snapshots ---------------------------------------------------------------------------------------
@routes.get(API + "/vms/{vm}/snapshots")
async def snaps_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    snaps = [e.snapshot(vm, vm.active_snapshot_id)] + list(vm.snapshots)
    ac = boolean(request, "all_content")
    return xml_response([render.snapshot(e, vm, s, ac) for s in snaps], root="snapshots")


@routes.get(API + "/vms/{vm}/snapshots/{id}")
async def snap_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response(render.snapshot(e, vm, e.snapshot(vm, request.match_info["id"]),
                                        boolean(request, "all_content")))


@routes.post(API + "/vms/{vm}/snapshots")
async def snap_add(request):
    e, vm = request.app[ENGINE], get_vm(request)
    x = await body(request, "snapshot")
    if not isinstance(x, types.Snapshot):
        raise BadRequest("Expected a <snapshot> document")
    disk_ids = None
    if x.disk_attachments:
        disk_ids = [a.disk.id if a.disk else a.id for a in x.disk_attachments]
    s = await e.create_snapshot(vm.id, x.description, disk_ids,
                                x.persist_memorystate if x.persist_memorystate is not None else True,
                                corr(request), snap_id=x.id)
    return xml_response(render.snapshot(e, vm, s), status=201)


@routes.delete(API + "/vms/{vm}/snapshots/{id}")
async def snap_remove(request):
    e, vm = request.app[ENGINE], get_vm(request)
    await e.remove_snapshot(vm.id, request.match_info["id"], corr(request))
    return web.Response(status=200)


@routes.get(API + "/vms/{vm}/snapshots/{id}/disks")
async def snap_disks(request):
    e, vm = request.app[ENGINE], get_vm(request)
    s = e.snapshot(vm, request.match_info["id"])
    out = []
    if s.type == "active":
        for a in vm.attachments:
            d = e.disks[a.disk_id]
            out.append(render.disk(e, d))
    else:
        for disk_id, vol in s.volumes.items():
            d = e.disks.get(disk_id)
            if d:
                x = render.disk(e, d)
                x.image_id = vol
                x.snapshot = types.Snapshot(id=s.id)
                out.append(x)
    return xml_response(out, root="disks")


# --- backups and checkpoints ----------------------------------------------------------------------------
@routes.get(API + "/vms/{vm}/backups")
async def backups_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response([render.backup(e, vm, b) for b in vm.backups], root="backups")


@routes.get(API + "/vms/{vm}/backups/{id}")
async def backup_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response(render.backup(e, vm, e.backup(vm, request.match_info["id"])))


@routes.post(API + "/vms/{vm}/backups")
async def backup_add(request):
    e, vm = request.app[ENGINE], get_vm(request)
    x = await body(request, "backup")
    if not isinstance(x, types.Backup):
        raise BadRequest("Expected a <backup> document")
    b = await e.start_backup(vm.id, [d.id for d in (x.disks or []) if d.id], x.from_checkpoint_id,
                             x.id, x.description or "", corr(request),
                             boolean(request, "require_consistency"))
    return xml_response(render.backup(e, vm, b), status=201)


@routes.post(API + "/vms/{vm}/backups/{id}/finalize")
async def backup_finalize(request):
    e, vm = request.app[ENGINE], get_vm(request)
    await e.finalize_backup(vm.id, request.match_info["id"], corr(request))
    return action()


@routes.get(API + "/vms/{vm}/backups/{id}/disks")
async def backup_disks(request):
    e, vm = request.app[ENGINE], get_vm(request)
    b = e.backup(vm, request.match_info["id"])
    return xml_response([render.disk(e, e.disks[d], with_backup_mode=b.modes.get(d))
                         for d in b.disk_ids if d in e.disks], root="disks")


@routes.get(API + "/vms/{vm}/checkpoints")
async def cps_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response([render.checkpoint(e, vm, c) for c in vm.checkpoints], root="checkpoints")


def _cp(vm, cp_id):
    for c in vm.checkpoints:
        if c.id == cp_id:
            return c
    raise NotFound(f"Checkpoint '{cp_id}' not found")


@routes.get(API + "/vms/{vm}/checkpoints/{id}")
async def cp_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response(render.checkpoint(e, vm, _cp(vm, request.match_info["id"])))


@routes.get(API + "/vms/{vm}/checkpoints/{id}/disks")
async def cp_disks(request):
    e, vm = request.app[ENGINE], get_vm(request)
    c = _cp(vm, request.match_info["id"])
    return xml_response([render.disk(e, e.disks[d]) for d in c.disk_ids if d in e.disks],
                        root="disks")


@routes.delete(API + "/vms/{vm}/checkpoints/{id}")
async def cp_remove(request):
    e, vm = request.app[ENGINE], get_vm(request)
    await e.remove_checkpoint(vm.id, request.match_info["id"])
    return web.Response(status=200)


# --- disks -------------------------------------------------------------------------------------------
DISK_FIELDS = {"name": lambda d: d.alias, "alias": lambda d: d.alias, "id": lambda d: d.id,
               "status": lambda d: d.status, "description": lambda d: d.description,
               "storage": lambda d: d.sd_id}


def _visible_disks(request):
    e, user = request.app[ENGINE], request["user"]
    if user.admin:
        return list(e.disks.values())
    mine = {a.disk_id for v in visible_vms(request) for a in v.attachments}
    return [d for d in e.disks.values() if d.id in mine]


@routes.get(API + "/disks")
async def disks_list(request):
    e = request.app[ENGINE]
    items = search(_visible_disks(request), request.query.get("search"), DISK_FIELDS,
                   boolean(request, "case_sensitive"))
    return xml_response([render.disk(e, d) for d in page(items, request)], root="disks")


def _get_disk(request, disk_id):
    for d in _visible_disks(request):
        if d.id == disk_id:
            return d
    raise NotFound(f"Disk '{disk_id}' not found")


@routes.get(API + "/disks/{id}")
async def disk_get(request):
    return xml_response(render.disk(request.app[ENGINE], _get_disk(request, request.match_info["id"])))


async def _add_disk(e: Engine, x: types.Disk, correlation_id, sd_id=None):
    if sd_id is None:
        if not x.storage_domains:
            raise BadRequest("Disk [storage_domains] required for add")
        sd = x.storage_domains[0]
        sd_id = sd.id or next((s.id for s in e.sds.values() if s.name == sd.name), None)
        if sd_id is None:
            raise NotFound(f"Storage domain '{sd.name}' not found")
    if not x.provisioned_size:
        raise BadRequest("Disk [provisioned_size] required for add")
    if x.format is None:
        raise BadRequest("Disk [format] required for add")
    return await e.create_disk(
        alias=x.alias or x.name or "", size=x.provisioned_size, fmt=enum(x.format),
        sparse=x.sparse if x.sparse is not None else True,
        backup=enum(x.backup) or "none", sd_id=sd_id, description=x.description or "",
        disk_id=x.id, content_type=enum(x.content_type) or "data", correlation_id=correlation_id)


@routes.post(API + "/disks")
async def disk_add(request):
    e = request.app[ENGINE]
    x = await body(request, "disk")
    if not isinstance(x, types.Disk):
        raise BadRequest("Expected a <disk> document")
    d = await _add_disk(e, x, corr(request))
    return xml_response(render.disk(e, d), status=201)


@routes.delete(API + "/disks/{id}")
async def disk_remove(request):
    require_admin(request)
    await request.app[ENGINE].remove_disk(request.match_info["id"])
    return web.Response(status=200)


@routes.get(API + "/disks/{id}/disksnapshots")
async def disk_snapshots(request):
    e = request.app[ENGINE]
    d = _get_disk(request, request.match_info["id"])
    include_active = boolean(request, "include_active")
    vols = d.image.volumes if include_active else d.image.volumes[:-1]
    vm = e.vm_of_disk(d.id)
    out = []
    for v in vols:
        snap = next((s for s in (vm.snapshots if vm else []) if s.volumes.get(d.id) == v.id), None)
        if snap is None and v is d.image.top and vm:
            snap = e.snapshot(vm, vm.active_snapshot_id)
        out.append(render.disk_snapshot(e, d, v.id, snap, vm,
                                        href=f"{API}/disks/{d.id}/disksnapshots/{v.id}"))
    return xml_response(out, root="disk_snapshots")


# storage domain sub-collections
@routes.get(API + "/storagedomains/{sd}/disks")
async def sd_disks(request):
    e = request.app[ENGINE]
    items = [d for d in _visible_disks(request) if d.sd_id == request.match_info["sd"]]
    items = search(items, request.query.get("search"), DISK_FIELDS)
    return xml_response([render.disk(e, d) for d in items], root="disks")


@routes.get(API + "/storagedomains/{sd}/disks/{id}")
async def sd_disk_get(request):
    return xml_response(render.disk(request.app[ENGINE], _get_disk(request, request.match_info["id"])))


@routes.post(API + "/storagedomains/{sd}/disks")
async def sd_disk_add(request):
    e = request.app[ENGINE]
    if request.match_info["sd"] not in e.sds:
        raise NotFound(f"Storage domain '{request.match_info['sd']}' not found")
    x = await body(request, "disk")
    d = await _add_disk(e, x, corr(request), sd_id=request.match_info["sd"])
    return xml_response(render.disk(e, d), status=201)


@routes.delete(API + "/storagedomains/{sd}/disks/{id}")
async def sd_disk_remove(request):
    require_admin(request)
    await request.app[ENGINE].remove_disk(request.match_info["id"])
    return web.Response(status=200)


def _sd_disk_snapshots(e: Engine, sd_id, include_active=False):
    for d in e.disks.values():
        if d.sd_id != sd_id:
            continue
        vm = e.vm_of_disk(d.id)
        vols = d.image.volumes if include_active else d.image.volumes[:-1]
        for v in vols:
            snap = next((s for s in (vm.snapshots if vm else []) if s.volumes.get(d.id) == v.id), None)
            yield d, v.id, snap, vm


@routes.get(API + "/storagedomains/{sd}/disksnapshots")
async def sd_disk_snapshots(request):
    e = request.app[ENGINE]
    sd = request.match_info["sd"]
    return xml_response([render.disk_snapshot(e, d, v, s, vm) for d, v, s, vm in
                         _sd_disk_snapshots(e, sd, boolean(request, "include_active"))],
                        root="disk_snapshots")


@routes.get(API + "/storagedomains/{sd}/disksnapshots/{id}")
async def sd_disk_snapshot(request):
    e = request.app[ENGINE]
    for d, v, s, vm in _sd_disk_snapshots(e, request.match_info["sd"], True):
        if v == request.match_info["id"]:
            return xml_response(render.disk_snapshot(e, d, v, s, vm))
    raise NotFound(f"Disk snapshot '{request.match_info['id']}' not found")


# --- image transfers -----------------------------------------------------------------------------------
@routes.get(API + "/imagetransfers")
async def transfers_list(request):
    e = request.app[ENGINE]
    e.gc_transfers()
    return xml_response([render.transfer(e, t) for t in e.transfers.values()], root="image_transfers")


@routes.get(API + "/imagetransfers/{id}")
async def transfer_get(request):
    e = request.app[ENGINE]
    e.gc_transfers()
    return xml_response(render.transfer(e, e.transfer(request.match_info["id"])))


@routes.post(API + "/imagetransfers")
async def transfer_add(request):
    e = request.app[ENGINE]
    x = await body(request, "image_transfer")
    if not isinstance(x, types.ImageTransfer):
        raise BadRequest("Expected an <image_transfer> document")
    disk_id = x.disk.id if x.disk else (x.image.id if x.image else None)
    snap_id = x.snapshot.id if x.snapshot else None
    if disk_id and not snap_id:
        _get_disk(request, disk_id)  # visibility
    t = await e.create_transfer(
        direction=enum(x.direction) or "upload", disk_id=disk_id, snapshot_id=snap_id,
        backup_id=x.backup.id if x.backup else None, host_id=x.host.id if x.host else None,
        fmt=enum(x.format) or "cow", shallow=bool(x.shallow),
        inactivity_timeout=x.inactivity_timeout, timeout_policy=enum(x.timeout_policy),
        correlation_id=corr(request), transfer_id=x.id)
    return xml_response(render.transfer(e, t), status=201)


@routes.post(API + "/imagetransfers/{id}/{action:(finalize|cancel|pause|resume|extend)}")
async def transfer_action(request):
    e = request.app[ENGINE]
    tid, act = request.match_info["id"], request.match_info["action"]
    if act == "finalize":
        await e.finalize_transfer(tid)
    elif act == "cancel":
        await e.cancel_transfer(tid)
    elif act == "pause":
        await e.pause_transfer(tid)
    elif act == "resume":
        await e.resume_transfer(tid)
    else:  # extend the ticket: only a live transfer has one
        t = e.transfer(tid)
        if t.phase not in ("transferring", "paused_user", "paused_system", "resuming"):
            raise Conflict(f"[Cannot extend image transfer ticket. Phase is {t.phase}.]")
    return action()


# --- events and jobs --------------------------------------------------------------------------------------
EVENT_FIELDS = {"description": lambda v: v.description, "correlation_id": lambda v: v.correlation_id,
                "severity": lambda v: v.severity, "code": lambda v: v.code,
                "vm.id": lambda v: v.vm_id, "index": lambda v: v.index}


@routes.get(API + "/events")
async def events_list(request):
    """Without `from`: newest first (as documented). With `from=N`: the events
    with index > N, oldest first, so a poller can page forward."""
    e = request.app[ENGINE]
    evs = e.events
    frm = request.query.get("from")
    if frm not in (None, ""):
        try:
            n = int(frm)
        except ValueError:
            raise BadRequest(f"Invalid value for 'from': {frm}") from None
        evs = [x for x in evs if x.index > n]
    else:
        evs = list(reversed(evs))
    evs = search(evs, request.query.get("search"), EVENT_FIELDS)
    return xml_response([render.event(e, x) for x in page(evs, request)], root="events")


@routes.get(API + "/events/{id}")
async def event_get(request):
    e = request.app[ENGINE]
    for x in e.events:
        if str(x.index) == request.match_info["id"]:
            return xml_response(render.event(e, x))
    raise NotFound(f"Event '{request.match_info['id']}' not found")


@routes.post(API + "/events")
async def event_add(request):
    e = request.app[ENGINE]
    x = await body(request, "event")
    if not isinstance(x, types.Event):
        raise BadRequest("Expected an <event> document")
    for f in ("origin", "severity", "custom_id", "description"):
        if getattr(x, f) is None:
            raise BadRequest(f"Event [{f}] required for add")
    ev = e.event(x.code or 9000, x.description, severity=enum(x.severity), origin=x.origin,
                 custom_id=x.custom_id, vm_id=x.vm.id if x.vm else None,
                 correlation_id=x.correlation_id)
    return xml_response(render.event(e, ev), status=201)


@routes.get(API + "/jobs")
async def jobs_list(request):
    e = request.app[ENGINE]
    items = search(list(e.jobs.values()), request.query.get("search"),
                   {"correlation_id": lambda j: j.correlation_id, "status": lambda j: j.status,
                    "description": lambda j: j.description})
    return xml_response([render.job(e, j) for j in page(items, request)], root="jobs")


@routes.get(API + "/jobs/{id}")
async def job_get(request):
    e = request.app[ENGINE]
    j = e.jobs.get(request.match_info["id"])
    if j is None:
        raise NotFound(f"Job '{request.match_info['id']}' not found")
    return xml_response(render.job(e, j))


# --- data center sub-collections ----------------------------------------------------------------------
@routes.get(API + "/datacenters/{dc}/storagedomains")
async def dc_sds(request):
    e = request.app[ENGINE]
    dc = e.dcs.get(request.match_info["dc"])
    if dc is None:
        raise NotFound(f"Data center '{request.match_info['dc']}' not found")
    return xml_response([render.storage_domain(e, sd, href=f"{API}/datacenters/{dc.id}/storagedomains/{sd.id}")
                         for sd in e.sds.values() if sd.dc_id == dc.id], root="storage_domains")


@routes.get(API + "/datacenters/{dc}/storagedomains/{id}")
async def dc_sd(request):
    e = request.app[ENGINE]
    dc = e.dcs.get(request.match_info["dc"])
    sd = e.sds.get(request.match_info["id"])
    if dc is None or sd is None or sd.dc_id != dc.id:
        raise NotFound(f"Storage domain '{request.match_info['id']}' not found")
    return xml_response(render.storage_domain(e, sd, href=f"{API}/datacenters/{dc.id}/storagedomains/{sd.id}"))


@routes.get(API + "/datacenters/{dc}/clusters")
async def dc_clusters(request):
    e = request.app[ENGINE]
    if request.match_info["dc"] not in e.dcs:
        raise NotFound(f"Data center '{request.match_info['dc']}' not found")
    return xml_response([render.cluster(e, c) for c in e.clusters.values()
                         if c.dc_id == request.match_info["dc"]], root="clusters")


# --- VM NICs (single) ---------------------------------------------------------------------------------
def _nic(vm, nic_id):
    for n in vm.nics:
        if n.id == nic_id:
            return n
    raise NotFound(f"NIC '{nic_id}' not found")


@routes.get(API + "/vms/{vm}/nics/{id}")
async def nic_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response(render.nic(e, vm, _nic(vm, request.match_info["id"])))


@routes.put(API + "/vms/{vm}/nics/{id}")
async def nic_update(request):
    e, vm = request.app[ENGINE], get_vm(request)
    n = _nic(vm, request.match_info["id"])
    x = await body(request, "nic")
    if not isinstance(x, types.Nic):
        raise BadRequest("Expected a <nic> document")
    running = vm.status not in ("down",)
    iface = enum(x.interface)
    if iface and iface != n.interface and running and n.plugged:
        raise Conflict("[Cannot edit Interface. Changing the interface type of a plugged "
                       "network interface of a running VM is not supported. Unplug it first.]")
    if x.name and x.name != n.name and any(o.name == x.name for o in vm.nics if o is not n):
        raise Conflict("[Cannot edit Interface. The VM already has a network interface with "
                       "the same name.]")
    if x.mac and x.mac.address and x.mac.address != n.mac:
        if running and n.plugged:
            raise Conflict("[Cannot edit Interface. The MAC address of a plugged network "
                           "interface of a running VM cannot be changed.]")
        if any(o.mac == x.mac.address for v in e.vms.values() for o in v.nics if o is not n):
            raise Conflict("[Cannot edit Interface. MAC Address is already in use.]")
        n.mac = x.mac.address
    if x.name:
        n.name = x.name
    if iface:
        n.interface = iface
    if x.linked is not None:
        n.linked = x.linked
    if x.plugged is not None:
        n.plugged = x.plugged
    e.event(933, f"Interface {n.name} ({n.interface}) was updated for VM {vm.name}.",
            vm_id=vm.id, correlation_id=corr(request))
    return xml_response(render.nic(e, vm, n))


@routes.delete(API + "/vms/{vm}/nics/{id}")
async def nic_remove(request):
    e, vm = request.app[ENGINE], get_vm(request)
    n = _nic(vm, request.match_info["id"])
    if vm.status != "down" and n.plugged:
        raise Conflict("[Cannot remove Interface. The network interface is plugged to a "
                       "running VM. Unplug it first.]")
    vm.nics.remove(n)
    e.event(935, f"Interface {n.name} ({n.interface}) was removed from VM {vm.name}.",
            vm_id=vm.id, correlation_id=corr(request))
    return web.Response(status=200)


# --- disk attachment update ---------------------------------------------------------------------------
@routes.put(API + "/vms/{vm}/diskattachments/{id}")
async def att_update(request):
    e, vm = request.app[ENGINE], get_vm(request)
    a = next((a for a in vm.attachments if a.disk_id == request.match_info["id"]), None)
    if a is None:
        raise NotFound(f"Disk attachment '{request.match_info['id']}' not found")
    x = await body(request, "disk_attachment")
    if not isinstance(x, types.DiskAttachment):
        raise BadRequest("Expected a <disk_attachment> document")
    d = e.disk(a.disk_id)
    running = vm.status != "down"
    iface = enum(x.interface)
    if d.status == "locked" and (x.active is not None or iface or x.disk):
        raise Conflict(f"[Cannot edit Virtual Disk. Disk {d.alias} is locked. Please try again "
                       "in a few minutes.]")
    if iface and iface != a.interface and running and a.active:
        raise Conflict("[Cannot edit Virtual Disk. Cannot change the interface of a plugged "
                       "disk of a running VM. Deactivate the disk first.]")
    if x.bootable and not a.bootable and any(o.bootable for o in vm.attachments if o is not a):
        raise Conflict("[Cannot edit Virtual Disk. The VM already has a bootable disk.]")
    if x.disk is not None:  # the disk itself, through its attachment (the classic extend)
        await _update_disk(e, d, x.disk, corr(request))
    if iface:
        a.interface = iface
    if x.bootable is not None:
        a.bootable = x.bootable
    if x.read_only is not None:
        a.read_only = x.read_only
    if x.pass_discard is not None:
        a.pass_discard = x.pass_discard
    if x.active is not None and x.active != a.active:
        a.active = x.active
        if running:
            verb = "plugged" if a.active else "unplugged"
            e.event(2010 if a.active else 2011, f"VM {vm.name} disk {d.alias} was "
                    f"{verb} by admin@internal-authz.", vm_id=vm.id, correlation_id=corr(request))
        else:
            e.event(2016 if a.active else 2017, f"Disk {d.alias} was successfully "
                    f"{'activated' if a.active else 'deactivated'} on VM {vm.name}.",
                    vm_id=vm.id, correlation_id=corr(request))
    return xml_response(render.attachment(e, vm, a))


async def _update_disk(e: Engine, d, x: types.Disk, correlation_id):
    if x.provisioned_size is not None and x.provisioned_size != d.provisioned_size:
        await e.extend_disk(d.id, x.provisioned_size, correlation_id)
    if x.alias or x.name:
        d.alias = x.alias or x.name
    if x.description is not None:
        d.description = x.description
    if x.wipe_after_delete is not None:
        d.wipe_after_delete = x.wipe_after_delete
    if x.shareable is not None and x.shareable != d.shareable:
        raise Conflict("[Cannot edit Virtual Disk. Changing the shareable property is not "
                       "supported for this disk.]")
    fmt = enum(x.format)
    if fmt and fmt != d.format:
        raise Conflict("[Cannot edit Virtual Disk. The disk format cannot be changed.]")
    backup = enum(x.backup)
    if backup and backup != d.backup:
        if backup == "incremental" and d.format != "cow":
            raise Conflict("[Cannot edit Virtual Disk. Incremental backup is supported only for "
                           "disks in QCOW2 format.]")
        d.backup = backup


@routes.put(API + "/disks/{id}")
async def disk_update(request):
    e = request.app[ENGINE]
    d = _get_disk(request, request.match_info["id"])
    x = await body(request, "disk")
    if not isinstance(x, types.Disk):
        raise BadRequest("Expected a <disk> document")
    await _update_disk(e, d, x, corr(request))
    return xml_response(render.disk(e, d))


@routes.post(API + "/disks/{id}/reduce")
async def disk_reduce(request):
    d = _get_disk(request, request.match_info["id"])
    raise Conflict(f"[Cannot reduce Virtual Disk {d.alias}. Reducing an image is not supported "
                   "for file storage domains.]")


# --- snapshot restore, reboot, suspend --------------------------------------------------------------------
@routes.post(API + "/vms/{vm}/snapshots/{id}/restore")
async def snap_restore(request):
    e, vm = request.app[ENGINE], get_vm(request)
    a = await action_body(request)
    disk_ids = [d.id for d in a.disks or [] if d.id] or None
    if a.restore_memory:
        snap = e.snapshot(vm, request.match_info["id"])
        if not snap.persist_memorystate:
            raise Conflict("[Cannot revert to Snapshot. The snapshot has no memory state.]")
    await e.restore_snapshot(vm.id, request.match_info["id"], corr(request), disk_ids)
    return action()


@routes.post(API + "/vms/{vm}/{action:(reboot|suspend)}")
async def vm_reboot_suspend(request):
    vm = get_vm(request)
    e = request.app[ENGINE]
    if request.match_info["action"] == "reboot":
        await e.reboot(vm.id, corr(request))
    else:
        await e.suspend(vm.id, corr(request))
    return action()


@routes.route("*", API + "/{tail:.*}")
async def unknown(request):
    raise NotFound(f"No such resource: {request.path}")


def create_app(engine: Engine, sso: Sso, faults: Faults) -> web.Application:
    app = web.Application(middlewares=[middleware], client_max_size=64 << 20)
    app[ENGINE] = engine
    app[SSO] = sso
    app[FAULTS] = faults
    app.add_routes(routes)
    return app
