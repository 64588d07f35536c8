"""Tags as the engine has them: a tree under the root tag (id
00000000-0000-0000-0000-000000000000, name `root`), assigned to VMs and hosts
(`/vms/{id}/tags`, `/hosts/{id}/tags`), searched with `tag=NAME` (a tag
selects what carries it or any tag below it)."""
from __future__ import annotations

from aiohttp import web
from ovirtsdk4 import types

from .http import (API, ENGINE, body, boolean, corr, get_vm, page, require_admin, search,
                   xml_response)
from .model import BLANK, BadRequest, Conflict, NotFound, Tag, new_id
from .render import T

routes = web.RouteTableDef()
ROOT = Tag(BLANK, "root", "root")


def render_tag(e, t: Tag, href: str | None = None, vm_id: str | None = None,
               host_id: str | None = None):
    x = T(types.Tag, id=t.id, href=href or f"{API}/tags/{t.id}", name=t.name,
          description=t.description)
    if t.id != BLANK:
        pid = t.parent_id or BLANK
        x.parent = T(types.Tag, id=pid, href=f"{API}/tags/{pid}")
    if vm_id:
        x.vm = T(types.Vm, id=vm_id, href=f"{API}/vms/{vm_id}")
    if host_id:
        x.host = T(types.Host, id=host_id, href=f"{API}/hosts/{host_id}")
    return x


def all_tags(e) -> list[Tag]:
    return [ROOT] + sorted(e.tags.values(), key=lambda t: t.name)


def descendants(e, tag_id: str) -> set[str]:
    """The tag and every tag below it."""
    out, todo = {tag_id}, [tag_id]
    while todo:
        cur = todo.pop()
        for t in e.tags.values():
            if (t.parent_id or BLANK) == cur and t.id not in out:
                out.add(t.id)
                todo.append(t.id)
    return out


def tag_names_matching(e, tag_ids: set) -> list[str]:
    """For `tag=` searches: the names of the tags an object carries and of every
    tag above them (an object tagged `gold-db` under `gold` matches `tag=gold`)."""
    names = []
    for tid in tag_ids:
        cur = e.tags.get(tid)
        while cur is not None:
            names.append(cur.name)
            cur = e.tags.get(cur.parent_id) if cur.parent_id else None
    return names


def find_tag(e, tag_id: str) -> Tag:
    if tag_id == BLANK:
        return ROOT
    t = e.tags.get(tag_id)
    if t is None:
        raise NotFound(f"Tag '{tag_id}' not found")
    return t


def _resolve(e, x: types.Tag | None) -> Tag:
    if x is None or not (x.id or x.name):
        raise BadRequest("Tag [id|name] required")
    if x.id:
        return find_tag(e, x.id)
    for t in all_tags(e):
        if t.name == x.name:
            return t
    raise NotFound(f"Entity not found: Tag {x.name}")


def _parent_id(e, p: types.Tag | None) -> str | None:
    if p is None or not (p.id or p.name):
        return None
    t = _resolve(e, p)
    return None if t.id == BLANK else t.id


TAG_FIELDS = {"name": lambda t: t.name, "id": lambda t: t.id, "description": lambda t: t.description}


@routes.get(API + "/tags")
async def tags_list(request):
    e = request.app[ENGINE]
    items = search(all_tags(e), request.query.get("search"), TAG_FIELDS,
                   boolean(request, "case_sensitive"))
    return xml_response([render_tag(e, t) for t in page(items, request)], root="tags")


@routes.get(API + "/tags/{id}")
async def tag_get(request):
    e = request.app[ENGINE]
    return xml_response(render_tag(e, find_tag(e, request.match_info["id"])))


@routes.post(API + "/tags")
async def tag_add(request):
    require_admin(request)
    e = request.app[ENGINE]
    x = await body(request, "tag")
    if not isinstance(x, types.Tag) or not x.name:
        raise BadRequest("Tag [name] required for add")
    if any(t.name == x.name for t in all_tags(e)):
        raise Conflict("[Cannot add Tag. Tag name is in use.]")
    t = Tag(new_id(), x.name, x.description or "", _parent_id(e, x.parent))
    e.tags[t.id] = t
    e.event(432, f"New Tag {t.name} was created by admin@internal-authz.",
            correlation_id=corr(request))
    return xml_response(render_tag(e, t), status=201)


@routes.put(API + "/tags/{id}")
async def tag_update(request):
    require_admin(request)
    e = request.app[ENGINE]
    t = find_tag(e, request.match_info["id"])
    x = await body(request, "tag")
    if not isinstance(x, types.Tag):
        raise BadRequest("Expected a <tag> document")
    if t.id == BLANK:
        raise Conflict("[Cannot update Tag. The root tag cannot be changed.]")
    # Validate everything first: a failed update changes nothing.
    if x.name and x.name != t.name and any(o.name == x.name for o in all_tags(e)):
        raise Conflict("[Cannot update Tag. Tag name is in use.]")
    parent = t.parent_id
    if x.parent is not None and (x.parent.id or x.parent.name):
        parent = _parent_id(e, x.parent)
        if parent is not None and parent in descendants(e, t.id):
            raise Conflict("[Cannot move Tag. A tag cannot be moved under itself or one of its "
                           "descendants.]")
    old_parent = t.parent_id
    t.name = x.name or t.name
    if x.description is not None:
        t.description = x.description
    t.parent_id = parent
    e.event(555 if parent != old_parent else 430, f"Tag {t.name} configuration was updated by admin@internal-authz.",
            correlation_id=corr(request))
    return xml_response(render_tag(e, t))


@routes.delete(API + "/tags/{id}")
async def tag_remove(request):
    """Removing a tag removes the tags below it and every assignment of them."""
    require_admin(request)
    e = request.app[ENGINE]
    t = find_tag(e, request.match_info["id"])
    if t.id == BLANK:
        raise Conflict("[Cannot remove Tag. The root tag cannot be removed.]")
    gone = descendants(e, t.id)
    for tid in gone:
        e.tags.pop(tid, None)
    for v in e.vms.values():
        v.tag_ids -= gone
    for h in e.hosts.values():
        h.tag_ids -= gone
    e.event(434, f"Tag {t.name} was removed by admin@internal-authz.",
            correlation_id=corr(request))
    return web.Response(status=200)


# --- assignments -------------------------------------------------------------------------------
def _owner(request):
    e = request.app[ENGINE]
    if "vm" in request.match_info:
        vm = get_vm(request)
        return e, vm, "vm", f"{API}/vms/{vm.id}/tags"
    h = e.host(request.match_info["host"])
    return e, h, "host", f"{API}/hosts/{h.id}/tags"


def _render_assigned(e, owner, kind, base, t):
    kw = {"vm_id": owner.id} if kind == "vm" else {"host_id": owner.id}
    return render_tag(e, t, href=f"{base}/{t.id}", **kw)


@routes.get(API + "/vms/{vm}/tags")
@routes.get(API + "/hosts/{host}/tags")
async def assigned_list(request):
    e, owner, kind, base = _owner(request)
    tags = sorted((e.tags[i] for i in owner.tag_ids if i in e.tags), key=lambda t: t.name)
    return xml_response([_render_assigned(e, owner, kind, base, t) for t in tags], root="tags")


@routes.get(API + "/vms/{vm}/tags/{id}")
@routes.get(API + "/hosts/{host}/tags/{id}")
async def assigned_get(request):
    e, owner, kind, base = _owner(request)
    if request.match_info["id"] not in owner.tag_ids:
        raise NotFound(f"Tag '{request.match_info['id']}' not found")
    return xml_response(_render_assigned(e, owner, kind, base, e.tags[request.match_info["id"]]))


@routes.post(API + "/vms/{vm}/tags")
@routes.post(API + "/hosts/{host}/tags")
async def assign(request):
    require_admin(request)
    e, owner, kind, base = _owner(request)
    x = await body(request, "tag")
    if not isinstance(x, types.Tag):
        raise BadRequest("Expected a <tag> document")
    t = _resolve(e, x)
    if t.id == BLANK:
        raise Conflict("[Cannot attach Tag. The root tag cannot be attached.]")
    if t.id in owner.tag_ids:
        raise Conflict(f"[Cannot attach Tag. Tag {t.name} is already attached to "
                       f"{owner.name}.]")
    owner.tag_ids.add(t.id)
    e.event(440 if kind == "vm" else 442,
            f"Object '{owner.name}' tagged with '{t.name}' by admin@internal-authz.",
            vm_id=owner.id if kind == "vm" else None,
            host_id=owner.id if kind == "host" else None, correlation_id=corr(request))
    return xml_response(_render_assigned(e, owner, kind, base, t), status=201)


@routes.delete(API + "/vms/{vm}/tags/{id}")
@routes.delete(API + "/hosts/{host}/tags/{id}")
async def unassign(request):
    require_admin(request)
    e, owner, kind, base = _owner(request)
    tid = request.match_info["id"]
    if tid not in owner.tag_ids:
        raise NotFound(f"Tag '{tid}' not found")
    owner.tag_ids.discard(tid)
    e.event(446 if kind == "vm" else 444,
            f"Tag '{e.tags[tid].name}' was removed from object '{owner.name}' by "
            "admin@internal-authz.", vm_id=owner.id if kind == "vm" else None,
            host_id=owner.id if kind == "host" else None, correlation_id=corr(request))
    return web.Response(status=200)
