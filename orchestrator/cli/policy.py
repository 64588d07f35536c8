"""Policy commands: `policy create|list|show|edit|delete|run|preview`, `prune`,
`protect` (docs/policies.md). Like the other client commands they talk to
`ovault serve` over its REST API; ``--json`` prints what the API answered.
"""
from __future__ import annotations

import asyncio
import json

from .api import Api
from .client import print_job, wait_job
from .common import CliError, add_client_options

KEEPS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def _policy_options(p, *, create: bool) -> None:
    p.add_argument("--schedule", required=create, help="5-field cron, e.g. '0 2 * * *'")
    p.add_argument("--timezone", help="IANA time zone of the schedule (default: the service's)")
    for k in KEEPS:
        p.add_argument(f"--keep-{k}", type=int, metavar="N", dest=f"keep_{k}")
    p.add_argument("--vm", action="append", dest="vms", metavar="VM",
                   help="an explicit member (name or id; repeatable)")
    p.add_argument("--tag", action="append", dest="tags", help="members by engine tag (repeatable)")
    p.add_argument("--cluster", action="append", dest="cluster_ids", help="members by cluster id")
    p.add_argument("--name-regex", help="members whose name matches")
    p.add_argument("--exclude-name-regex", help="never members: names that match (wins)")
    p.add_argument("--window-minutes", type=int, help="a run not started this long after its time is missed")
    p.add_argument("--full-every-days", type=int, help="a full backup at least this often")
    p.add_argument("--email", action="append", dest="emails", help="notify this address (repeatable)")
    p.add_argument("--notify-on", action="append", choices=("failure", "success", "summary"),
                   help="what to mail about (repeatable; default failure)")
    p.add_argument("--file", help="a JSON policy document; options given here override it")


def register(sub) -> None:
    pol = sub.add_parser("policy", help="protection policies: schedule, members, retention")
    ps = pol.add_subparsers(dest="policy_cmd", required=True, metavar="ACTION")
    cr = ps.add_parser("create", help="create a policy")
    cr.add_argument("name")
    _policy_options(cr, create=True)
    cr.add_argument("--disabled", action="store_true", help="create it disabled")
    ls = ps.add_parser("list", help="list policies")
    sh = ps.add_parser("show", help="one policy: members, conflicts, next runs, last ticks")
    sh.add_argument("policy", help="name or id")
    ed = ps.add_parser("edit", help="change a policy (only the options given)")
    ed.add_argument("policy", help="name or id")
    ed.add_argument("--name", dest="new_name", help="rename it")
    _policy_options(ed, create=False)
    en = ed.add_mutually_exclusive_group()
    en.add_argument("--enable", dest="enabled", action="store_const", const=True)
    en.add_argument("--disable", dest="enabled", action="store_const", const=False)
    dl = ps.add_parser("delete", help="delete a policy (its backups stay)")
    dl.add_argument("policy", help="name or id")
    rn = ps.add_parser("run", help="run a policy now")
    rn.add_argument("policy", help="name or id")
    rn.add_argument("--wait", action="store_true", help="wait for the job, with progress")
    pv = ps.add_parser("preview", help="next runs; which backups retention keeps and prunes")
    pv.add_argument("policy", help="name or id")
    pv.add_argument("--vm", help="only this member (name or id)")
    pr = sub.add_parser("prune", help="apply the policies' retention now")
    pr.add_argument("--vm", help="only this VM (name or id)")
    pr.add_argument("--dry-run", action="store_true", help="show what would go, delete nothing")
    pr.add_argument("--wait", action="store_true", help="wait for the prune job")
    bp = sub.add_parser("protect", help="protect a backup from prune and delete")
    bp.add_argument("backup", help="backup id")
    bp.add_argument("--off", action="store_true", help="remove the protection")
    for p in (cr, ls, sh, ed, dl, rn, pv, pr, bp):
        add_client_options(p)
        p.set_defaults(func=lambda args: asyncio.run(run(args)))


async def _body(api: Api, args, base: dict | None = None) -> dict:
    """The request body from the options; for an edit (`base`, the stored policy)
    keep options, rules and notify settings merge into what is stored."""
    base = base or {}
    body: dict = {}
    if getattr(args, "file", None):
        try:
            with open(args.file) as f:
                body = json.load(f)
        except (OSError, ValueError) as e:
            raise CliError(f"cannot read the policy file {args.file}: {e}") from None
        if not isinstance(body, dict):
            raise CliError(f"{args.file}: a policy is a JSON object")
    for k in ("schedule", "timezone", "window_minutes", "full_every_days"):
        if getattr(args, k, None) is not None:
            body[k] = getattr(args, k)
    keeps = {f"keep_{k}": getattr(args, f"keep_{k}") for k in KEEPS
             if getattr(args, f"keep_{k}", None) is not None}
    if keeps:
        body["retention"] = {**base.get("retention", {}), **body.get("retention", {}), **keeps}
    if args.vms:
        body["vm_ids"] = await api.resolve_vms(args.vms)
    rules = {k: getattr(args, k) for k in ("tags", "cluster_ids", "name_regex", "exclude_name_regex")
             if getattr(args, k, None)}
    if rules:
        body["rules"] = {**base.get("rules", {}), **body.get("rules", {}), **rules}
    if args.emails or args.notify_on:
        body["notify"] = {**base.get("notify", {}), **body.get("notify", {}),
                          **({"emails": args.emails} if args.emails else {}),
                          **({"on": args.notify_on} if args.notify_on else {})}
    return body


async def _find(api: Api, name_or_id: str) -> dict:
    for p in (await api.req("GET", "/api/v1/policies"))["items"]:
        if name_or_id in (p["id"], p["name"]):
            return p
    raise CliError(f"no policy named or numbered {name_or_id!r}")


def _print_policy(p: dict, full: bool) -> None:
    state = "enabled" if p["enabled"] else "disabled"
    keep = " ".join(f"{k.replace('keep_', '')}={v}" for k, v in p["retention"].items()) or "keep all"
    print(f"{p['name']} ({p['id']}): {p['schedule']} {p['timezone']}, {state}, retention {keep}, "
          f"{len(p['members'])} member(s)" + (f", {len(p['conflicts'])} in conflict"
                                               if p["conflicts"] else ""))
    if not full:
        return
    print("  next runs: " + (", ".join(p["next_runs"][:3]) or "none"))
    for m in p["members"]:
        clash = "; also in " + ", ".join(c["name"] or c["id"] for c in m["conflict_with"]) \
            if m["conflict_with"] else ""
        print(f"  member {m['vm_name'] or m['vm_id']} ({m['why']}){clash}")
    for x in p["excluded"]:
        print(f"  excluded {x['vm_id']}: {x['why']}")
    for t in p.get("ticks", [])[:10]:
        print(f"  tick {t['fire_at']}: {t['status']}" + (f" - {t['reason']}" if t["reason"] else ""))


def _print_decisions(vms: list) -> None:
    for v in vms:
        print(f"{v.get('vm_name') or v['vm_id']}:")
        rows = v.get("backups") or [*v.get("kept", []), *v.get("pruned", [])]
        for b in sorted(rows, key=lambda b: b["created_at"], reverse=True):
            print(f"  {b['created_at'][:19]}  {b['backup_id']}  {b['action']:<5} "
                  f"{b['rule'] or '':<12} {b['reason']}")


async def run(args) -> int:
    async with Api(args) as api:
        out = None
        if args.cmd == "prune":
            body = {"dry_run": args.dry_run}
            if args.vm:
                body["vm_id"] = (await api.resolve_vms([args.vm]))[0]
            out = await api.req("POST", "/api/v1/prune", body)
            if not args.dry_run:
                job = out["job"]
                if args.wait:
                    job = await wait_job(api, job["id"], quiet=args.json)
                print(json.dumps(job, indent=2)) if args.json else print_job(job)
                if not args.json and job.get("result"):
                    print(f"  deleted {len(job['result'].get('deleted', []))} backup(s)")
                return 0 if job["state"] in ("succeeded", "queued", "running") else 1
            if not args.json:
                _print_decisions(out["vms"])
                for vm, why in out["skipped"].items():
                    print(f"{vm}: skipped - {why}")
        elif args.cmd == "protect":
            out = await api.req("PATCH", f"/api/v1/backups/{args.backup}", {"protected": not args.off})
            if not args.json:
                print(f"backup {out['id']}: " + ("protected" if out["protected"] else "not protected"))
        else:
            out = await _policy(api, args)
        if args.json and out is not None:
            print(json.dumps(out, indent=2))
        return 0


async def _policy(api: Api, args):
    c = args.policy_cmd
    if c == "create":
        body = {**await _body(api, args), "name": args.name}
        if args.disabled:
            body["enabled"] = False
        p = await api.req("POST", "/api/v1/policies", body)
        if not args.json:
            _print_policy(p, True)
        return p
    if c == "list":
        items = (await api.req("GET", "/api/v1/policies"))["items"]
        if not args.json:
            for p in items:
                _print_policy(p, False)
        return items
    p = await _find(api, args.policy)
    if c == "show":
        p = await api.req("GET", f"/api/v1/policies/{p['id']}")
        if not args.json:
            _print_policy(p, True)
        return p
    if c == "edit":
        body = await _body(api, args, p)
        if args.new_name:
            body["name"] = args.new_name
        if args.enabled is not None:
            body["enabled"] = args.enabled
        if not body:
            raise CliError("nothing to change: give at least one option")
        p = await api.req("PATCH", f"/api/v1/policies/{p['id']}", body)
        if not args.json:
            _print_policy(p, True)
        return p
    if c == "delete":
        await api.req("DELETE", f"/api/v1/policies/{p['id']}")
        if not args.json:
            print(f"policy {p['name']} deleted (its backups stay)")
        return {"deleted": p["id"]}
    if c == "run":
        r = await api.req("POST", f"/api/v1/policies/{p['id']}/run")
        jobs = r["jobs"]
        if args.wait:
            jobs = [await wait_job(api, j["id"], quiet=args.json) for j in jobs]
        if not args.json:
            for j in jobs:
                print_job(j)
            for vm, why in r["skipped"].items():
                print(f"  {vm}: skipped - {why}")
        return {**r, "jobs": jobs}
    if c == "preview":
        params = {"vm_id": (await api.resolve_vms([args.vm]))[0]} if args.vm else None
        pv = await api.req("GET", f"/api/v1/policies/{p['id']}/preview", params=params)
        if not args.json:
            print("next runs: " + (", ".join(pv["next_runs"][:3]) or "none"))
            _print_decisions(pv["vms"])
        return pv
    raise CliError(f"unknown policy action {c}")
