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
import re
import secrets
import time
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import structlog
from aiohttp import web
from ovirtsdk4 import types

from . import ovf, render
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
    return web.Response(status=status, text=render.to_xml(obj, root=root),
                        content_type="application/xml")


def fault(status: int, reason: str, detail: str) -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<fault><reason>'
            f'{escape(reason)}</reason><detail>{escape(detail)}</detail></fault>')
    return web.Response(status=status, text=body, content_type="application/xml")


def action(extra: str = "") -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<action><status>complete</status>{extra}</action>')
    return web.Response(status=200, text=body, content_type="application/xml")


async def body(request):
    try:
        return render.parse(await request.read())
    except ValueError as e:
        raise BadRequest(str(e)) from None


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
def search(items, q: str | None, fields, case_sensitive=False):
    """A small subset of the engine's search language: `a=b and c!=d`, `*` globs,
    and free text (matches any listed field)."""
    if not q:
        return list(items)
    terms = re.split(r"\s+and\s+", q.strip(), flags=re.I)
    out = list(items)
    for term in terms:
        m = re.match(r"^\s*([\w.]+)\s*(!=|=)\s*(.*?)\s*$", term)
        if m:
            key, op, val = m.group(1).lower(), m.group(2), m.group(3).strip('"')
            get = fields.get(key)
            if get is None:
                continue  # unknown keys are ignored, like unsupported search fields

            def ok(x, get=get, val=val, op=op):
                got = get(x)
                got = "" if got is None else str(got)
                a, b = (got, val) if case_sensitive else (got.lower(), val.lower())
                hit = fnmatch.fnmatchcase(a, b)
                return hit if op == "=" else not hit
            out = [x for x in out if ok(x)]
        else:
            text = term.strip().lower()
            out = [x for x in out if any(text in str(f(x) or "").lower() for f in fields.values())]
    return out


def page(items, request):
    m = request.query.get("max")
    if m not in (None, "", "-1"):
        try:
            items = items[: int(m)]
        except ValueError:
            raise BadRequest(f"Invalid value for 'max': {m}") from None
    return items


# --- middleware ---------------------------------------------------------------------------
@web.middleware
async def middleware(request: web.Request, handler):
    path = request.path
    if path.startswith(API) and request.app[FAULTS]:
        rule = request.app[FAULTS].match(request.method, path[len(API):] or "/")
        if rule:
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.status:
                return fault(rule.status, "Operation Failed", rule.detail)
    if path.startswith(API):
        user = authenticate(request)
        if user is None:
            return fault(401, "Unauthorized", "Authentication required: invalid or expired token")
        request["user"] = user
    try:
        return await handler(request)
    except EngineError as e:
        return fault(e.status, e.reason, e.detail)
    except web.HTTPException:
        raise
    except Exception as e:  # a bug in the simulator: still answer like the engine
        structlog.get_logger("sandbox.engine").exception("internal error", path=path)
        return fault(500, "Internal Server Error", f"{type(e).__name__}: {e}")


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
        items = search(items_fn(e), request.query.get("search"), fields,
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
            {"name": lambda x: x.name, "id": lambda x: x.id})
_collection("clusters", lambda e: e.clusters.values(), render.cluster, "clusters",
            {"name": lambda x: x.name, "id": lambda x: x.id})


def _host_fields(e_getter=None):
    return {"name": lambda h: h.name, "id": lambda h: h.id, "status": lambda h: h.status,
            "hw_id": lambda h: h.hw_id, "cluster": lambda h: h.cluster_id,
            "datacenter": lambda h: "Default"}


_collection("hosts", lambda e: e.hosts.values(), render.host, "hosts", _host_fields())
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
    x = await body(request)
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
    x = await body(request)
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
    x = await body(request)
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
    x = await body(request)
    n = Nic(new_id(), x.name or f"nic{len(vm.nics) + 1}", enum(x.interface) or "virtio",
            x.mac.address if x.mac and x.mac.address else e.new_mac())
    vm.nics.append(n)
    return xml_response(render.nic(e, vm, n), status=201)


# --- snapshots ---------------------------------------------------------------------------------------
@routes.get(API + "/vms/{vm}/snapshots")
async def snaps_list(request):
    e, vm = request.app[ENGINE], get_vm(request)
    snaps = [e.snapshot(vm, vm.active_snapshot_id)] + list(vm.snapshots)
    return xml_response([render.snapshot(e, vm, s) for s in snaps], root="snapshots")


@routes.get(API + "/vms/{vm}/snapshots/{id}")
async def snap_get(request):
    e, vm = request.app[ENGINE], get_vm(request)
    return xml_response(render.snapshot(e, vm, e.snapshot(vm, request.match_info["id"])))


@routes.post(API + "/vms/{vm}/snapshots")
async def snap_add(request):
    e, vm = request.app[ENGINE], get_vm(request)
    x = await body(request)
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
    x = await body(request)
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
    x = await body(request)
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
    x = await body(request)
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
    x = await body(request)
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
    else:
        e.transfer(tid)
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
    x = await body(request)
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
