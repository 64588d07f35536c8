"""Networks and vNIC profiles, jobs (with external jobs and steps), VM NUMA
nodes, and the informational services clients read: operating systems,
system options, scheduling policies, affinity labels, quotas and a storage
domain's VMs and templates."""
from __future__ import annotations

from aiohttp import web
from ovirtsdk4 import types

from . import render
from .http import (API, ENGINE, action, action_body, body, boolean, corr, enum, get_vm, page,
                   require_admin, search, xml_response)
from .model import BadRequest, Conflict, Job, NotFound, Step, new_id, now
from .render import T

routes = web.RouteTableDef()


# --- networks and vNIC profiles (one `ovirtmgmt` network in the data center, on every cluster) ------
def network(e, href=None):
    dc_id = next(iter(e.dcs))
    return T(types.Network, id=e.network_id, href=href or f"{API}/networks/{e.network_id}",
             name="ovirtmgmt", description="Management Network", mtu=0, stp=False,
             required=True, usages=[types.NetworkUsage.VM, types.NetworkUsage.MANAGEMENT],
             data_center=T(types.DataCenter, id=dc_id, href=f"{API}/datacenters/{dc_id}"))


def vnic_profile(e):
    return T(types.VnicProfile, id=e.vnic_profile_id, href=f"{API}/vnicprofiles/{e.vnic_profile_id}",
             name="ovirtmgmt", description="", pass_through=types.VnicPassThrough(
                 mode=types.VnicPassThroughMode.DISABLED), port_mirroring=False,
             network=T(types.Network, id=e.network_id, href=f"{API}/networks/{e.network_id}"))


NET_FIELDS = {"name": lambda n: n.name, "id": lambda n: n.id, "description": lambda n: n.description,
              "datacenter": lambda n: "Default"}


@routes.get(API + "/networks")
async def networks(request):
    e = request.app[ENGINE]
    items = search([network(e)], request.query.get("search"), NET_FIELDS,
                   boolean(request, "case_sensitive"))
    return xml_response(items, root="networks")


@routes.get(API + "/networks/{id}")
async def network_get(request):
    e = request.app[ENGINE]
    if request.match_info["id"] != e.network_id:
        raise NotFound(f"Network '{request.match_info['id']}' not found")
    return xml_response(network(e))


@routes.get(API + "/networks/{id}/vnicprofiles")
async def network_profiles(request):
    e = request.app[ENGINE]
    if request.match_info["id"] != e.network_id:
        raise NotFound(f"Network '{request.match_info['id']}' not found")
    return xml_response([vnic_profile(e)], root="vnic_profiles")


@routes.get(API + "/{kind:(datacenters|clusters)}/{id}/networks")
async def owner_networks(request):
    e = request.app[ENGINE]
    kind, oid = request.match_info["kind"], request.match_info["id"]
    if oid not in (e.dcs if kind == "datacenters" else e.clusters):
        raise NotFound(f"Entity '{oid}' not found")
    n = network(e, href=f"{API}/{kind}/{oid}/networks/{e.network_id}")
    if kind == "clusters":
        n.cluster = T(types.Cluster, id=oid, href=f"{API}/clusters/{oid}")
        n.display = False
    return xml_response([n], root="networks")


@routes.get(API + "/vnicprofiles")
async def vnic_profiles(request):
    return xml_response([vnic_profile(request.app[ENGINE])], root="vnic_profiles")


@routes.get(API + "/vnicprofiles/{id}")
async def vnic_profile_get(request):
    e = request.app[ENGINE]
    if request.match_info["id"] != e.vnic_profile_id:
        raise NotFound(f"VNIC profile '{request.match_info['id']}' not found")
    return xml_response(vnic_profile(e))


# --- jobs and steps -----------------------------------------------------------------------------
def render_step(j: Job, s: Step):
    x = T(types.Step, id=s.id, href=f"{API}/jobs/{j.id}/steps/{s.id}", description=s.description,
          type=types.StepEnum(s.type), status=types.StepStatus(s.status), number=s.number,
          start_time=s.start, end_time=s.end, external=s.external, progress=s.progress,
          job=T(types.Job, id=j.id, href=f"{API}/jobs/{j.id}"))
    if s.parent_id:
        x.parent_step = T(types.Step, id=s.parent_id, href=f"{API}/jobs/{j.id}/steps/{s.parent_id}")
    return x


JOB_FIELDS = {"correlation_id": lambda j: j.correlation_id, "status": lambda j: j.status,
              "description": lambda j: j.description, "id": lambda j: j.id}


def _job(e, job_id) -> Job:
    j = e.jobs.get(job_id)
    if j is None:
        raise NotFound(f"Job '{job_id}' not found")
    return j


@routes.get(API + "/jobs")
async def jobs_list(request):
    e = request.app[ENGINE]
    items = search(list(e.jobs.values()), request.query.get("search"), JOB_FIELDS)
    return xml_response([render.job(e, j) for j in page(items, request)], root="jobs")


@routes.get(API + "/jobs/{id}")
async def job_get(request):
    e = request.app[ENGINE]
    return xml_response(render.job(e, _job(e, request.match_info["id"])))


@routes.post(API + "/jobs")
async def job_add(request):
    """An external job (a client's own long operation shown in the engine)."""
    e = request.app[ENGINE]
    x = await body(request, "job")
    if not isinstance(x, types.Job) or not x.description:
        raise BadRequest("Job [description] required for add")
    j = Job(new_id(), x.description, corr(request) or new_id(), external=True,
            auto_cleared=x.auto_cleared if x.auto_cleared is not None else True)
    e.jobs[j.id] = j
    return xml_response(render.job(e, j), status=201)


def _end(obj, a: types.Action):
    if obj.status != "started":
        raise Conflict(f"[Cannot end {type(obj).__name__}. It has already ended ({obj.status}).]")
    ok = a.succeeded if a.succeeded is not None else True
    obj.status = enum(a.status) if a.status else ("finished" if ok else "failed")
    obj.end = now()


@routes.post(API + "/jobs/{id}/{act:(end|clear)}")
async def job_action(request):
    e = request.app[ENGINE]
    j = _job(e, request.match_info["id"])
    a = await action_body(request)
    if request.match_info["act"] == "clear":
        if j.status == "started":
            raise Conflict("[Cannot clear Job. The job is still running.]")
        del e.jobs[j.id]
        return action()
    if not j.external and not a.force:
        raise Conflict("[Cannot end Job. Only external jobs can be ended.]")
    for s in j.steps:
        if s.status == "started":
            _end(s, a)
    _end(j, a)
    return action()


@routes.get(API + "/jobs/{id}/steps")
async def steps_list(request):
    e = request.app[ENGINE]
    j = _job(e, request.match_info["id"])
    return xml_response([render_step(j, s) for s in j.steps], root="steps")


def _step(j: Job, sid) -> Step:
    for s in j.steps:
        if s.id == sid:
            return s
    raise NotFound(f"Step '{sid}' not found")


@routes.get(API + "/jobs/{id}/steps/{sid}")
async def step_get(request):
    j = _job(request.app[ENGINE], request.match_info["id"])
    return xml_response(render_step(j, _step(j, request.match_info["sid"])))


@routes.post(API + "/jobs/{id}/steps")
async def step_add(request):
    j = _job(request.app[ENGINE], request.match_info["id"])
    x = await body(request, "step")
    if not isinstance(x, types.Step) or not x.description or x.type is None:
        raise BadRequest("Step [description, type] required for add")
    if j.status != "started":
        raise Conflict("[Cannot add Step. The job has already ended.]")
    parent = _step(j, x.parent_step.id).id if x.parent_step and x.parent_step.id else None
    s = Step(new_id(), x.description, enum(x.type), number=len(j.steps) + 1, parent_id=parent,
             progress=x.progress)
    j.steps.append(s)
    return xml_response(render_step(j, s), status=201)


@routes.post(API + "/jobs/{id}/steps/{sid}/end")
async def step_end(request):
    j = _job(request.app[ENGINE], request.match_info["id"])
    s = _step(j, request.match_info["sid"])
    _end(s, await action_body(request))
    return action()


# --- VM NUMA nodes ----------------------------------------------------------------------------------
def render_numa(vm, n: dict):
    return T(types.VirtualNumaNode, id=n["id"], href=f"{API}/vms/{vm.id}/numanodes/{n['id']}",
             index=n["index"], memory=n["memory"],
             cpu=types.Cpu(cores=[types.Core(index=c) for c in n["cores"]]),
             numa_node_pins=[types.NumaNodePin(index=p) for p in n["pins"]],
             vm=T(types.Vm, id=vm.id, href=f"{API}/vms/{vm.id}"))


@routes.get(API + "/vms/{vm}/numanodes")
async def numa_list(request):
    vm = get_vm(request)
    return xml_response([render_numa(vm, n) for n in vm.numa_nodes], root="vm_numa_nodes")


@routes.post(API + "/vms/{vm}/numanodes")
async def numa_add(request):
    require_admin(request)
    vm = get_vm(request)
    x = await body(request, "vm_numa_node")
    if not isinstance(x, types.VirtualNumaNode) or x.index is None or x.memory is None:
        raise BadRequest("VirtualNumaNode [index, memory, cpu.cores] required for add")
    if any(n["index"] == x.index for n in vm.numa_nodes):
        raise Conflict("[Cannot add VM NUMA node. The index is already in use.]")
    n = {"id": new_id(), "index": x.index, "memory": x.memory,
         "cores": [c.index for c in (x.cpu.cores if x.cpu and x.cpu.cores else [])],
         "pins": [p.index for p in (x.numa_node_pins or [])]}
    vm.numa_nodes.append(n)
    return xml_response(render_numa(vm, n), status=201)


@routes.delete(API + "/vms/{vm}/numanodes/{id}")
async def numa_remove(request):
    require_admin(request)
    vm = get_vm(request)
    for n in vm.numa_nodes:
        if n["id"] == request.match_info["id"]:
            vm.numa_nodes.remove(n)
            return web.Response(status=200)
    raise NotFound(f"NUMA node '{request.match_info['id']}' not found")


# --- informational services ----------------------------------------------------------------------------
OPERATING_SYSTEMS = [("0", "other", "Other OS"), ("5", "other_linux", "Linux"),
                     ("1001", "rhel_8x64", "Red Hat Enterprise Linux 8.x x64"),
                     ("1003", "rhel_9x64", "Red Hat Enterprise Linux 9.x x64"),
                     ("1300", "debian_10", "Debian 10"),
                     ("29", "windows_2019x64", "Windows 2019 x64"),
                     ("20", "windows_2016x64", "Windows 2016 x64")]


@routes.get(API + "/operatingsystems")
async def oses(request):
    return xml_response([T(types.OperatingSystemInfo, id=i, href=f"{API}/operatingsystems/{i}",
                           name=n, description=d, architecture=types.Architecture.X86_64)
                         for i, n, d in OPERATING_SYSTEMS], root="operation_systems")


SCHEDULING = [("b4ed2332-a7ac-4d5f-9596-99a439cb2812", "none"),
              ("20d25257-b4bd-4589-92a6-c4c5c5d3fd1a", "evenly_distributed"),
              ("5a2b0939-7d46-4b73-a469-e9c2c7fc6a53", "power_saving"),
              ("8d5d7bec-68de-4a67-b53e-0ac54686d579", "vm_evenly_distributed"),
              ("7677771e-5eab-422e-83fa-dc04080d21b7", "cluster_maintenance")]


def _policy(i, n):
    return T(types.SchedulingPolicy, id=i, href=f"{API}/schedulingpolicies/{i}", name=n,
             description="", locked=True, default_policy=n == "none")


@routes.get(API + "/schedulingpolicies")
async def policies(request):
    return xml_response([_policy(i, n) for i, n in SCHEDULING], root="scheduling_policies")


@routes.get(API + "/schedulingpolicies/{id}")
async def policy_get(request):
    for i, n in SCHEDULING:
        if i == request.match_info["id"]:
            return xml_response(_policy(i, n))
    raise NotFound(f"Scheduling policy '{request.match_info['id']}' not found")


@routes.get(API + "/schedulingpolicies/{id}/{sub:(filters|weights|balances)}")
async def policy_units(request):
    return xml_response([], root=request.match_info["sub"])


OPTIONS = {"MaxVmNameLength": "64", "MaxVmsInPool": "1000", "SpiceProxyDefault": "",
           "MaxBlockDiskSizeInGibiBytes": "8192"}


@routes.get(API + "/options/{name}")
async def option_get(request):
    name = request.match_info["name"]
    if name not in OPTIONS:
        raise NotFound(f"Option '{name}' not found")
    version = request.query.get("version") or "general"
    return xml_response(T(types.SystemOption, id=name, href=f"{API}/options/{name}", name=name,
                          values=[types.SystemOptionValue(version=version, value=OPTIONS[name])]))


@routes.get(API + "/affinitylabels")
@routes.get(API + "/{kind:(vms|hosts)}/{id}/affinitylabels")
async def affinity_labels(request):
    if request.match_info.get("kind") == "vms":
        request.match_info["vm"] = request.match_info["id"]
        get_vm(request)
    return xml_response([], root="affinity_labels")


@routes.get(API + "/clusters/{id}/{sub:(affinitygroups|cpuprofiles|glustervolumes|enabledfeatures)}")
async def cluster_subs(request):
    if request.match_info["id"] not in request.app[ENGINE].clusters:
        raise NotFound(f"Cluster '{request.match_info['id']}' not found")
    sub = request.match_info["sub"]
    return xml_response([], root={"affinitygroups": "affinity_groups", "cpuprofiles": "cpu_profiles",
                                  "glustervolumes": "gluster_volumes",
                                  "enabledfeatures": "cluster_features"}[sub])


@routes.get(API + "/datacenters/{id}/quotas")
async def quotas(request):
    if request.match_info["id"] not in request.app[ENGINE].dcs:
        raise NotFound(f"Data center '{request.match_info['id']}' not found")
    return xml_response([], root="quotas")


@routes.get(API + "/storagedomains/{sd}/vms")
async def sd_vms(request):
    """The VMs with a disk on this storage domain."""
    e = request.app[ENGINE]
    sd = request.match_info["sd"]
    if sd not in e.sds:
        raise NotFound(f"Storage domain '{sd}' not found")
    vms = [v for v in sorted(e.vms.values(), key=lambda v: v.name)
           if any(e.disks[a.disk_id].sd_id == sd for a in v.attachments if a.disk_id in e.disks)]
    out = []
    for v in vms:
        x = render.vm(e, v)
        x.href = f"{API}/storagedomains/{sd}/vms/{v.id}"
        x.storage_domain = T(types.StorageDomain, id=sd, href=f"{API}/storagedomains/{sd}")
        out.append(x)
    return xml_response(out, root="vms")


@routes.get(API + "/storagedomains/{sd}/templates")
async def sd_templates(request):
    from .templates import render_template, templates
    e = request.app[ENGINE]
    sd = request.match_info["sd"]
    if sd not in e.sds:
        raise NotFound(f"Storage domain '{sd}' not found")
    out = [render_template(e, t) for t in templates(e) if any(
        e.disks[a.disk_id].sd_id == sd for a in t.config.attachments if a.disk_id in e.disks)]
    return xml_response(out, root="templates")
