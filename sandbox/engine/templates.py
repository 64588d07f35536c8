"""Templates: Blank (the engine's fixed, diskless default) and templates made
from VMs (`POST /templates` with `<vm>`: the VM's configuration and copies of
its disks; `<version><base_template>` makes a new version). VMs created from a
template get copies of its disks (as with `clone=true`)."""
from __future__ import annotations

from aiohttp import web
from ovirtsdk4 import types

from .http import API, ENGINE, body, boolean, corr, page, require_admin, search, xml_response
from .model import BLANK, Attachment, BadRequest, Conflict, NotFound, Template, Vm, new_id, vm_config
from .render import T

routes = web.RouteTableDef()


def blank(e) -> Template:
    t = getattr(e, "_blank", None)
    if t is None:
        cfg = Vm(BLANK, "Blank", "", 1 << 30)
        t = e._blank = Template(BLANK, "Blank", cfg, None, description="Blank template",
                                version_name="base version")
    return t


def templates(e) -> list[Template]:
    return [blank(e)] + sorted(e.templates.values(), key=lambda t: (t.name, t.version_number))


def template_ids(e) -> set:
    return {t.id for t in templates(e)}


def find_template(e, ref: types.Template | None) -> Template:
    """By id, or by name (the latest version)."""
    if ref is None or not (ref.id or ref.name):
        return blank(e)
    for t in sorted(templates(e), key=lambda t: -t.version_number):
        if (ref.id and t.id == ref.id) or (not ref.id and t.name == ref.name):
            return t
    raise NotFound(f"Entity not found: Template {ref.id or ref.name}")


def render_template(e, t: Template):
    c = t.config
    x = T(types.Template, id=t.id, href=f"{API}/templates/{t.id}", name=t.name,
          description=t.description, comment="", status=types.TemplateStatus(t.status),
          memory=c.memory, creation_time=t.created, type=types.VmType(c.type),
          cpu=types.Cpu(architecture=types.Architecture.X86_64,
                        topology=types.CpuTopology(sockets=c.cpu_sockets, cores=c.cpu_cores,
                                                   threads=c.cpu_threads)),
          os=types.OperatingSystem(type=c.os_type, boot=types.Boot(
              devices=[types.BootDevice(b) for b in c.boot_devices])),
          bios=types.Bios(type=types.BiosType(c.bios_type)),
          high_availability=types.HighAvailability(enabled=c.ha, priority=0),
          stateless=False, delete_protected=False,
          version=types.TemplateVersion(
              version_number=t.version_number, version_name=t.version_name,
              base_template=T(types.Template, id=t.base_id or t.id,
                              href=f"{API}/templates/{t.base_id or t.id}")))
    if t.cluster_id:
        x.cluster = T(types.Cluster, id=t.cluster_id, href=f"{API}/clusters/{t.cluster_id}")
    return x


def _dc_name(e, t: Template):
    if t.cluster_id is None:  # Blank belongs to every data center
        return [d.name for d in e.dcs.values()]
    cl = e.clusters.get(t.cluster_id)
    return e.dcs[cl.dc_id].name if cl and cl.dc_id in e.dcs else None


def _fields(e):
    return {"name": lambda t: t.name, "id": lambda t: t.id, "description": lambda t: t.description,
            "status": lambda t: t.status, "datacenter": lambda t: _dc_name(e, t),
            "cluster": lambda t: e.clusters[t.cluster_id].name if t.cluster_id in e.clusters
            else None, "version_number": lambda t: t.version_number,
            "vm.name": lambda t: [v.name for v in e.vms.values() if v.template_id == t.id]}


@routes.get(API + "/templates")
async def templates_list(request):
    e = request.app[ENGINE]
    items = search(templates(e), request.query.get("search"), _fields(e),
                   boolean(request, "case_sensitive"))
    return xml_response([render_template(e, t) for t in page(items, request)], root="templates")


@routes.get(API + "/templates/{id}")
async def template_get(request):
    e = request.app[ENGINE]
    return xml_response(render_template(e, find_template(e, types.Template(id=request.match_info["id"]))))


@routes.get(API + "/templates/{id}/{sub:(diskattachments|nics|tags|watchdogs|cdroms|graphicsconsoles)}")
async def template_subs(request):
    e = request.app[ENGINE]
    t = find_template(e, types.Template(id=request.match_info["id"]))
    sub = request.match_info["sub"]
    if sub == "diskattachments":
        return xml_response([T(types.DiskAttachment, id=a.disk_id,
                               href=f"{API}/templates/{t.id}/diskattachments/{a.disk_id}",
                               bootable=a.bootable, interface=types.DiskInterface(a.interface),
                               active=True, disk=T(types.Disk, id=a.disk_id, href=f"{API}/disks/{a.disk_id}"),
                               template=T(types.Template, id=t.id, href=f"{API}/templates/{t.id}"))
                             for a in t.config.attachments], root="disk_attachments")
    if sub == "nics":
        return xml_response([T(types.Nic, id=n.id, href=f"{API}/templates/{t.id}/nics/{n.id}",
                               name=n.name, interface=types.NicInterface(n.interface),
                               vnic_profile=T(types.VnicProfile, id=e.vnic_profile_id,
                                              href=f"{API}/vnicprofiles/{e.vnic_profile_id}"))
                             for n in t.config.nics], root="nics")
    root = {"diskattachments": "disk_attachments", "graphicsconsoles": "graphics_consoles"}.get(sub, sub)
    return xml_response([], root=root)


@routes.post(API + "/templates")
async def template_add(request):
    """A template from a VM (down): its configuration and copies of its disks."""
    require_admin(request)
    e = request.app[ENGINE]
    x = await body(request, "template")
    if not isinstance(x, types.Template) or not x.name or x.vm is None:
        raise BadRequest("Template [name, vm.id|name] required for add")
    vm = next((v for v in e.vms.values() if v.id == x.vm.id or (not x.vm.id and v.name == x.vm.name)),
              None)
    if vm is None:
        raise NotFound(f"Entity not found: VM {x.vm.id or x.vm.name}")
    if vm.status != "down":
        raise Conflict(f"[Cannot add Template. VM {vm.name} is not down.]")
    if vm.busy:
        raise Conflict(f"[Cannot add Template. VM {vm.name} is locked ({vm.busy}).]")
    base = None
    if x.version is not None and x.version.base_template is not None:
        base = find_template(e, x.version.base_template)
        if base.id == BLANK:
            raise Conflict("[Cannot add Template. Blank cannot have versions.]")
    elif any(t.name == x.name for t in templates(e)):
        raise Conflict("[Cannot add Template. The Template name is already in use, please "
                       "choose a unique name and try again.]")
    cfg = vm_config(vm)
    _apply_template_fields(cfg, x)
    tpl = Template(x.id or new_id(), base.name if base else x.name, cfg, vm.cluster_id,
                   description=x.description or "",
                   version_number=(max(t.version_number for t in templates(e)
                                       if (t.base_id or t.id) == base.id) + 1) if base else 1,
                   version_name=(x.version.version_name if x.version else None)
                   or (None if base else "base version"),
                   base_id=base.id if base else None, status="locked")
    e.templates[tpl.id] = tpl
    # As the engine: the VM is image_locked and the template locked until the copies are done.
    vm.busy, vm.status = "template creation", "image_locked"
    e.event(48, f"Creation of Template {tpl.name} from VM {vm.name} was initiated by "
            "admin@internal-authz.", vm_id=vm.id, correlation_id=corr(request))
    copies = []
    try:
        cfg.attachments = []
        for a in vm.attachments:
            src = e.disks.get(a.disk_id)
            if src is None:
                continue
            d = await e.copy_disk(src, None, f"{src.alias}_{tpl.name}", corr(request))
            cfg.attachments.append(Attachment(d.id, a.bootable, a.interface))
            copies.append(d)
    except Exception:
        e.templates.pop(tpl.id, None)
        vm.busy, vm.status = None, "down"
        raise

    def end(ok: bool):
        tpl.status = "ok" if ok else "illegal"
        vm.busy, vm.status = None, "down"
        if ok:
            e.event(51, f"Creation of Template {tpl.name} from VM {vm.name} has been completed.",
                    vm_id=vm.id, correlation_id=corr(request))
        else:
            e.event(52, f"Failed to complete creation of Template {tpl.name} from VM {vm.name}.",
                    severity="error", vm_id=vm.id, correlation_id=corr(request))
    e.after_disks(copies, lambda: end(True), lambda: end(False))
    return xml_response(render_template(e, tpl), status=201)


def _apply_template_fields(cfg: Vm, x: types.Template):
    """What the request sets on the template over the VM's configuration."""
    if x.memory:
        cfg.memory = x.memory
    if x.cpu and x.cpu.topology:
        tp = x.cpu.topology
        cfg.cpu_sockets = tp.sockets or cfg.cpu_sockets
        cfg.cpu_cores = tp.cores or cfg.cpu_cores
        cfg.cpu_threads = tp.threads or cfg.cpu_threads
    if x.os and x.os.type:
        cfg.os_type = x.os.type
    if x.bios and x.bios.type:
        cfg.bios_type = x.bios.type.value
    if x.high_availability and x.high_availability.enabled is not None:
        cfg.ha = x.high_availability.enabled


@routes.delete(API + "/templates/{id}")
async def template_remove(request):
    require_admin(request)
    e = request.app[ENGINE]
    t = find_template(e, types.Template(id=request.match_info["id"]))
    if t.id == BLANK:
        raise Conflict("[Cannot remove Template. Blank Template cannot be removed.]")
    if t.status == "locked":
        raise Conflict(f"[Cannot remove Template. Template {t.name} is locked.]")
    users = [v.name for v in e.vms.values() if v.template_id == t.id]
    if users:
        raise Conflict(f"[Cannot remove Template. The following VMs are based on it: "
                       f"{', '.join(users)}.]")
    for a in t.config.attachments:
        d = e.disks.pop(a.disk_id, None)
        if d:
            await d.image.remove()
    del e.templates[t.id]
    e.event(251, f"Template {t.name} was removed.", correlation_id=corr(request))
    return web.Response(status=200)


async def instantiate(e, vm: Vm, t: Template, correlation_id) -> list[Attachment]:
    """Give a VM being created from template `t` the template's configuration
    (what the request did not set is the caller's business) and copies of its disks."""
    if t.status != "ok":
        raise Conflict(f"[Cannot add VM. Template {t.name} is {t.status}.]")
    vm.template_id = t.id
    atts = []
    for a in t.config.attachments:
        src = e.disks.get(a.disk_id)
        if src is None:
            continue
        d = await e.copy_disk(src, None, src.alias.replace(f"_{t.name}", "") + f"_{vm.name}",
                              correlation_id)
        atts.append(Attachment(d.id, a.bootable, a.interface))
    return atts


def apply_template_config(e, vm: Vm, t: Template):
    c = t.config
    for f in ("memory", "cpu_sockets", "cpu_cores", "cpu_threads", "os_type", "bios_type",
              "type", "ha"):
        setattr(vm, f, getattr(c, f))
    vm.boot_devices = list(c.boot_devices)
    for n in c.nics:
        vm.nics.append(type(n)(new_id(), n.name, n.interface, e.new_mac(), n.network))
