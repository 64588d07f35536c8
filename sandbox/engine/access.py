"""Users, groups, roles, permissions and directory domains, as the engine has
them: engine users are named `principal@profile-authz` (`bob@internal-authz`)
and searched with `usrname=`; a directory user becomes an engine user with
`POST /users`; permissions exist at every level (system, data center,
cluster, storage domain, host, template, VM, disk) and a user sees the VMs
on which they hold a role, directly or inherited (see `http.sees_vm`). Roles
carry the engine's permits (`roles.py`, `GET /roles/{id}/permits`); what a
user may do on an object is the union of the permits of the roles they hold
on it or above it (`perms.permits`)."""
from __future__ import annotations

import hashlib

from aiohttp import web
from ovirtsdk4 import types

from .http import (API, ENGINE, SSO, User, body, boolean, corr, page, require_admin, search,
                   sees_vm, xml_response)
from .model import ADMIN_ROLES, ROLE_DESCRIPTIONS, ROLES, BadRequest, Conflict, NotFound, Permission, new_id
from .render import T
from .roles import PERMITS, ROLES as ROLE_TABLE

routes = web.RouteTableDef()
DOMAIN_ID = hashlib.md5(b"internal-authz").hexdigest()  # the engine's ids of domains are opaque


# --- rendering ----------------------------------------------------------------------------
def render_user(u: User, href: str | None = None):
    return T(types.User, id=u.id, href=href or f"{API}/users/{u.id}", name=u.principal,
             user_name=u.user_name, principal=u.principal, namespace="*",
             domain_entry_id=hashlib.md5(u.principal.encode()).hexdigest(), department="",
             email="", last_name="",
             domain=T(types.Domain, id=DOMAIN_ID, href=f"{API}/domains/{DOMAIN_ID}",
                      name=u.authz))


def render_role(name: str):
    rid = ROLES[name]
    return T(types.Role, id=rid, href=f"{API}/roles/{rid}", name=name,
             description=ROLE_DESCRIPTIONS.get(name, ""), administrative=name in ADMIN_ROLES,
             mutable=False)


# object type -> (URL collection, SDK type, Permission field)
OBJECTS = {"data_center": ("datacenters", types.DataCenter), "cluster": ("clusters", types.Cluster),
           "storage_domain": ("storagedomains", types.StorageDomain), "host": ("hosts", types.Host),
           "template": ("templates", types.Template), "vm": ("vms", types.Vm),
           "disk": ("disks", types.Disk)}
BY_COLLECTION = {v[0]: k for k, v in OBJECTS.items()}


def render_permission(p: Permission, base: str | None = None):
    base = base or (f"{API}/permissions" if p.object_type == "system" else
                    f"{API}/{OBJECTS[p.object_type][0]}/{p.object_id}/permissions")
    rid = ROLES[p.role]
    x = T(types.Permission, id=p.id, href=f"{base}/{p.id}",
          role=T(types.Role, id=rid, href=f"{API}/roles/{rid}"))
    if p.user_id:
        x.user = T(types.User, id=p.user_id, href=f"{API}/users/{p.user_id}")
    if p.group_id:
        x.group = T(types.Group, id=p.group_id, href=f"{API}/groups/{p.group_id}")
    if p.object_type != "system":
        coll, cls = OBJECTS[p.object_type]
        setattr(x, p.object_type, T(cls, id=p.object_id, href=f"{API}/{coll}/{p.object_id}"))
    return x


# --- users ----------------------------------------------------------------------------------
def engine_users(request) -> list[User]:
    return sorted((u for u in request.app[SSO].users.values() if u.engine_user),
                  key=lambda u: u.name)


USER_FIELDS = {"usrname": lambda u: u.user_name, "name": lambda u: u.principal,
               "lastname": lambda u: "", "department": lambda u: "", "id": lambda u: u.id,
               "directory": lambda u: u.authz}


def _user(request, user_id: str) -> User:
    for u in engine_users(request):
        if u.id == user_id:
            return u
    raise NotFound(f"Entity not found: User {user_id}")


def _directory_user(request, x: types.User) -> User:
    """The directory (SSO profile) user a `<user>` names."""
    name = x.user_name or ""
    principal, _, authz = name.partition("@")
    principal = principal or x.principal or x.name or ""
    authz = authz or (x.domain.name if x.domain and x.domain.name else "internal-authz")
    profile = authz[:-len("-authz")] if authz.endswith("-authz") else authz
    u = request.app[SSO].users.get(f"{principal}@{profile}")
    if u is None:
        raise NotFound(f"Entity not found: User {principal}@{authz} in the directory")
    return u


@routes.get(API + "/users")
async def users_list(request):
    items = search(engine_users(request), request.query.get("search"), USER_FIELDS,
                   boolean(request, "case_sensitive"))
    return xml_response([render_user(u) for u in page(items, request)], root="users")


@routes.get(API + "/users/{id}")
async def user_get(request):
    return xml_response(render_user(_user(request, request.match_info["id"])))


@routes.post(API + "/users")
async def user_add(request):
    require_admin(request)
    x = await body(request, "user")
    if not isinstance(x, types.User) or not (x.user_name or x.principal):
        raise BadRequest("User [userName|principal, domain.id|name] required for add")
    u = _directory_user(request, x)
    if u.engine_user:
        raise Conflict("[Cannot add User. The user is already added.]")
    u.engine_user = True
    request.app[ENGINE].event(149, f"User '{u.user_name}' was added successfully to the system.",
                              correlation_id=corr(request))
    return xml_response(render_user(u), status=201)


@routes.delete(API + "/users/{id}")
async def user_remove(request):
    require_admin(request)
    e, u = request.app[ENGINE], _user(request, request.match_info["id"])
    if u.id == e.admin_user_id:
        raise Conflict("[Cannot remove User. The built-in admin user cannot be removed.]")
    u.engine_user = False
    e.permissions = [p for p in e.permissions if p.user_id != u.id]
    e.event(325, f"User '{u.user_name}' was removed from the system.", correlation_id=corr(request))
    return web.Response(status=200)


@routes.get(API + "/users/{id}/permissions")
async def user_permissions(request):
    e, u = request.app[ENGINE], _user(request, request.match_info["id"])
    return xml_response([render_permission(p) for p in e.permissions if p.user_id == u.id],
                        root="permissions")


@routes.get(API + "/users/{id}/{sub:(sshpublickeys|tags|groups|roles|options)}")
async def user_subs(request):
    _user(request, request.match_info["id"])
    root = {"sshpublickeys": "ssh_public_keys"}.get(request.match_info["sub"],
                                                  request.match_info["sub"])
    return xml_response([], root=root)


# --- directory domains ---------------------------------------------------------------------------
def _domain(request):
    if request.match_info["id"] != DOMAIN_ID:
        raise NotFound(f"Domain '{request.match_info['id']}' not found")
    return T(types.Domain, id=DOMAIN_ID, href=f"{API}/domains/{DOMAIN_ID}", name="internal-authz")


@routes.get(API + "/domains")
async def domains_list(request):
    return xml_response([T(types.Domain, id=DOMAIN_ID, href=f"{API}/domains/{DOMAIN_ID}",
                           name="internal-authz")], root="domains")


@routes.get(API + "/domains/{id}")
async def domain_get(request):
    return xml_response(_domain(request))


@routes.get(API + "/domains/{id}/users")
async def domain_users(request):
    _domain(request)
    items = search(sorted(request.app[SSO].users.values(), key=lambda u: u.name),
                   request.query.get("search"), USER_FIELDS, boolean(request, "case_sensitive"))
    return xml_response([render_user(u, href=f"{API}/domains/{DOMAIN_ID}/users/{u.id}")
                         for u in items], root="users")


@routes.get(API + "/domains/{id}/groups")
async def domain_groups(request):
    _domain(request)
    return xml_response([], root="groups")


# --- groups (the internal directory has none) -----------------------------------------------------
@routes.get(API + "/groups")
async def groups_list(request):
    search([], request.query.get("search"), {"name": None, "id": None})
    return xml_response([], root="groups")


@routes.get(API + "/groups/{id}")
async def group_get(request):
    raise NotFound(f"Entity not found: Group {request.match_info['id']}")


@routes.post(API + "/groups")
async def group_add(request):
    require_admin(request)
    x = await body(request, "group")
    raise NotFound(f"Entity not found: Group {getattr(x, 'name', None) or ''} in the directory")


# --- roles -------------------------------------------------------------------------------------------
def _role_name(role: types.Role | None) -> str:
    if role is None:
        raise BadRequest("Permission [role.id|name] required for add")
    by_id = {v: k for k, v in ROLES.items()}
    name = role.name or by_id.get(role.id or "")
    if name not in ROLES:
        raise NotFound(f"Entity not found: Role {role.name or role.id}")
    return name


@routes.get(API + "/roles")
async def roles_list(request):
    return xml_response([render_role(n) for n in sorted(ROLES)], root="roles")


@routes.get(API + "/roles/{id}")
async def role_get(request):
    return xml_response(render_role(_role_by_id(request)))


def _role_by_id(request) -> str:
    by_id = {v: k for k, v in ROLES.items()}
    name = by_id.get(request.match_info["id"].lower())
    if name is None:
        raise NotFound(f"Role '{request.match_info['id']}' not found")
    return name


def render_permit(role: str, permit: str):
    pid, administrative = PERMITS[permit]
    rid = ROLES[role]
    return T(types.Permit, id=str(pid), href=f"{API}/roles/{rid}/permits/{pid}", name=permit,
             administrative=administrative, role=T(types.Role, id=rid, href=f"{API}/roles/{rid}"))


@routes.get(API + "/roles/{id}/permits")
async def role_permits(request):
    name = _role_by_id(request)
    by_id = {v[0]: k for k, v in PERMITS.items()}
    return xml_response([render_permit(name, by_id[i]) for i in ROLE_TABLE[name][3]],
                        root="permits")


@routes.get(API + "/roles/{id}/permits/{pid}")
async def role_permit(request):
    name = _role_by_id(request)
    by_id = {str(v[0]): k for k, v in PERMITS.items()}
    permit = by_id.get(request.match_info["pid"])
    if permit is None or PERMITS[permit][0] not in ROLE_TABLE[name][3]:
        raise NotFound(f"Permit '{request.match_info['pid']}' not found")
    return xml_response(render_permit(name, permit))


# --- permissions, at every level -------------------------------------------------------------------
def _target(request) -> tuple[str, str | None, str]:
    """(object type, object id, base href) of a permissions sub-collection."""
    coll = request.match_info.get("coll")
    if coll is None:
        return "system", None, f"{API}/permissions"
    e = request.app[ENGINE]
    otype, oid = BY_COLLECTION[coll], request.match_info["oid"]
    if otype == "vm":
        if not sees_vm(e, request["user"], e.vm(oid)):
            raise NotFound(f"VM '{oid}' not found")
    else:
        require_admin(request)
        known = {"data_center": e.dcs, "cluster": e.clusters, "storage_domain": e.sds,
                 "host": e.hosts, "disk": e.disks}.get(otype)
        if otype == "template":
            from .templates import template_ids
            known = template_ids(e)
        if oid not in known:
            raise NotFound(f"Entity '{oid}' not found")
    return otype, oid, f"{API}/{coll}/{oid}/permissions"


def _object_name(e, otype, oid) -> str:
    if otype == "system":
        return "System"
    table = {"data_center": e.dcs, "cluster": e.clusters, "storage_domain": e.sds,
             "host": e.hosts, "vm": e.vms}.get(otype, {})
    x = table.get(oid)
    return getattr(x, "name", None) or getattr(e.disks.get(oid), "alias", None) or oid


COLL = "{coll:(datacenters|clusters|storagedomains|hosts|templates|vms|disks)}"


@routes.get(API + "/permissions")
@routes.get(API + "/" + COLL + "/{oid}/permissions")
async def perms_list(request):
    e = request.app[ENGINE]
    otype, oid, base = _target(request)
    return xml_response([render_permission(p, base) for p in e.permissions
                         if p.object_type == otype and p.object_id == oid], root="permissions")


def _perm(request):
    e = request.app[ENGINE]
    otype, oid, base = _target(request)
    for p in e.permissions:
        if p.id == request.match_info["pid"] and p.object_type == otype and p.object_id == oid:
            return e, p, base
    raise NotFound(f"Permission '{request.match_info['pid']}' not found")


@routes.get(API + "/permissions/{pid}")
@routes.get(API + "/" + COLL + "/{oid}/permissions/{pid}")
async def perm_get(request):
    _, p, base = _perm(request)
    return xml_response(render_permission(p, base))


@routes.post(API + "/permissions")
@routes.post(API + "/" + COLL + "/{oid}/permissions")
async def perm_add(request):
    require_admin(request)
    e = request.app[ENGINE]
    otype, oid, base = _target(request)
    x = await body(request, "permission")
    if not isinstance(x, types.Permission):
        raise BadRequest("Expected a <permission> document")
    role = _role_name(x.role)
    if x.group is not None and (x.group.id or x.group.name):
        raise NotFound(f"Entity not found: Group {x.group.id or x.group.name}")
    if x.user is None or not x.user.id:
        raise BadRequest("Permission [user.id|group.id] required for add")
    user = _user(request, x.user.id)
    for p in e.permissions:
        if (p.role, p.user_id, p.object_type, p.object_id) == (role, user.id, otype, oid):
            raise Conflict("[Cannot add Permission. Permission already exists.]")
    p = Permission(new_id(), role, user.id, otype, oid)
    e.permissions.append(p)
    e.event(850, f"User/Group {user.user_name} was granted permission for Role {role} on "
            f"{otype.replace('_', ' ').title().replace(' ', '')} {_object_name(e, otype, oid)}, "
            "by admin@internal-authz.", vm_id=oid if otype == "vm" else None,
            correlation_id=corr(request))
    return xml_response(render_permission(p, base), status=201)


@routes.delete(API + "/permissions/{pid}")
@routes.delete(API + "/" + COLL + "/{oid}/permissions/{pid}")
async def perm_remove(request):
    require_admin(request)
    e, p, _ = _perm(request)
    if p.user_id == e.admin_user_id and p.role == "SuperUser" and p.object_type == "system":
        raise Conflict("[Cannot remove Permission. The last SuperUser permission of the built-in "
                       "admin cannot be removed.]")
    e.permissions.remove(p)
    e.event(852, f"User/Group {p.user_id} Role {p.role} permission was removed from "
            f"{_object_name(e, p.object_type, p.object_id)} by admin@internal-authz.",
            correlation_id=corr(request))
    return web.Response(status=200)
