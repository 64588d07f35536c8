"""SSO endpoints, the API root, inventory collections (data centers, clusters,
hosts, storage domains, networks, templates), events and jobs."""
from __future__ import annotations

import datetime as dt
import time

from aiohttp import web
from ovirtsdk4 import types

from . import render
from .render import T
from .model import BadRequest, NotFound
from .http import (API, ENGINE, SSO, body, is_admin, boolean, enum, page, search, xml_response)

routes = web.RouteTableDef()


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
                                        "group_ids": [],
                                        "admin": is_admin(request.app[ENGINE], u)}})


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
        "affinitylabels", "clusters", "datacenters", "disks", "domains", "events", "groups",
        "hosts", "imagetransfers", "jobs", "networks", "operatingsystems", "permissions", "roles",
        "schedulingpolicies", "storagedomains", "tags", "templates", "users", "vms",
        "vnicprofiles"))
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


def _dc_name(e, dc_id):
    return e.dcs[dc_id].name if dc_id in e.dcs else None


_collection("datacenters", lambda e: e.dcs.values(), render.dc, "data_centers",
            lambda e: {"name": lambda x: x.name, "id": lambda x: x.id, "status": lambda x: "up",
                       "storage": lambda x: [s.name for s in e.sds.values() if s.dc_id == x.id],
                       "storage.name": lambda x: [s.name for s in e.sds.values()
                                                  if s.dc_id == x.id],
                       "cluster": lambda x: [c.name for c in e.clusters.values()
                                             if c.dc_id == x.id]})
_collection("clusters", lambda e: e.clusters.values(), render.cluster, "clusters",
            lambda e: {"name": lambda x: x.name, "id": lambda x: x.id,
                       "datacenter": lambda x: _dc_name(e, x.dc_id)})


def _host_fields(e):
    from .tags import tag_names_matching

    def dc_name(h):
        c = e.clusters.get(h.cluster_id)
        return _dc_name(e, c.dc_id) if c else None
    return {"name": lambda h: h.name, "id": lambda h: h.id, "status": lambda h: h.status,
            "hw_id": lambda h: h.hw_id,
            "cluster": lambda h: e.clusters[h.cluster_id].name if h.cluster_id in e.clusters else None,
            "datacenter": dc_name, "address": lambda h: "127.0.0.1",
            "tag": lambda h: tag_names_matching(e, h.tag_ids)}


_collection("hosts", lambda e: e.hosts.values(), render.host, "hosts", _host_fields)
_collection("storagedomains", lambda e: e.sds.values(), render.storage_domain, "storage_domains",
            lambda e: {"name": lambda x: x.name, "id": lambda x: x.id, "type": lambda x: x.type,
                       "status": lambda x: "active", "datacenter": lambda x: _dc_name(e, x.dc_id)})


# --- events and jobs --------------------------------------------------------------------------------------
def event_fields(e) -> dict:
    """The engine's audit-log search fields (`type` is the code, `message` the
    text, `event_vm`/`event_host` names), plus `code`, `description` and `vm.id`."""
    return {"description": lambda v: v.description, "message": lambda v: v.description,
            "correlation_id": lambda v: v.correlation_id, "severity": lambda v: v.severity,
            "code": lambda v: v.code, "type": lambda v: v.code, "origin": lambda v: v.origin,
            "custom_event_id": lambda v: v.custom_id, "vm.id": lambda v: v.vm_id,
            "index": lambda v: v.index, "usrname": lambda v: v.user,
            "event_vm": lambda v: e.vms[v.vm_id].name if v.vm_id in e.vms else None,
            "event_host": lambda v: e.hosts[v.host_id].name if v.host_id in e.hosts else None}


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
    evs = search(evs, request.query.get("search"), event_fields(e))
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
