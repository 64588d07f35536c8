"""The policies' part of the OpenAPI document (api/policies.py): merged into
`openapi.PATHS` and `openapi.SCHEMAS` by `extend()`, so the main document stays one
object and these routes stay next to their handlers."""
from __future__ import annotations

from .openapi_parts import INT, LIMIT, NO_CONTENT, NSTR, STR, TIME, UUID, _json, nullable, obj, op, path, q, ref


def extend(schemas: dict, paths: dict) -> None:
    keep = {"type": "integer", "minimum": 0, "maximum": 1_000_000}
    cron = {"type": "string", "minLength": 9, "maxLength": 200,
            "description": "5-field cron: minute hour day-of-month month day-of-week"}
    name = {"type": "string", "minLength": 1, "maxLength": 100}
    regex = {"type": "string", "minLength": 1, "maxLength": 500}
    strs = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}}
    retention = obj({k: keep for k in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly",
                                       "keep_monthly", "keep_yearly")}, required=[], extra=False)
    rules = obj({"tags": strs, "cluster_ids": strs, "name_regex": nullable(regex),
                 "exclude_name_regex": nullable(regex)}, required=[], extra=False)
    notify = obj({"emails": {"type": "array", "items": {"type": "string", "format": "email"},
                             "maxItems": 50},
                  "on": {"type": "array", "items": {"type": "string",
                                                    "enum": ["failure", "success", "summary"]}}},
                 required=[], extra=False)
    fields = {"name": name, "schedule": cron,
              "timezone": {"type": "string", "description": "IANA time zone name"},
              "retention": retention, "vm_ids": strs, "rules": rules,
              "window_minutes": {"type": "integer", "minimum": 1, "maximum": 10080},
              "full_every_days": nullable({"type": "integer", "minimum": 1, "maximum": 3650}),
              "target_id": nullable(UUID), "enabled": {"type": "boolean"}, "notify": notify}
    schemas["PolicyCreate"] = obj(fields, required=["name", "schedule"], extra=False)
    schemas["PolicyUpdate"] = obj(fields, required=[], extra=False)
    member = obj({"vm_id": STR, "vm_name": NSTR, "why": STR,
                  "conflict_with": {"type": "array", "items": obj({"id": UUID, "name": NSTR})}})
    schemas["Policy"] = obj({
        "id": UUID, "name": STR, "schedule": STR, "timezone": STR, "retention": {"type": "object"},
        "vm_ids": {"type": "array", "items": STR}, "rules": {"type": "object"},
        "window_minutes": INT, "full_every_days": nullable({"type": "integer"}),
        "target_id": nullable(UUID), "enabled": {"type": "boolean"}, "notify": {"type": "object"},
        "created_by": NSTR, "created_at": TIME, "updated_at": TIME,
        "next_runs": {"type": "array", "items": TIME},
        "members": {"type": "array", "items": member},
        "excluded": {"type": "array", "items": obj({"vm_id": STR, "why": STR})},
        "conflicts": {"type": "array", "items": STR},
        "ticks": {"type": "array", "items": ref("Tick")}},
        required=["id", "name", "schedule", "timezone", "retention", "vm_ids", "rules",
                  "window_minutes", "enabled", "next_runs", "members", "excluded", "conflicts"])
    schemas["Tick"] = obj({"fire_at": TIME,
                           "status": {"type": "string", "enum": ["fired", "late", "missed", "skipped"]},
                           "reason": NSTR, "job_id": nullable(UUID), "replica": NSTR,
                           "details": {"type": "object"}})
    decision = obj({"backup_id": UUID, "created_at": TIME,
                    "action": {"type": "string", "enum": ["keep", "prune"]}, "rule": NSTR,
                    "reason": STR, "status": STR, "mode": STR, "protected": {"type": "boolean"}},
                   required=["backup_id", "created_at", "action", "rule", "reason"])
    schemas["RetentionDecision"] = decision
    schemas["PolicyPreview"] = obj({
        "policy_id": UUID, "timezone": STR, "next_runs": {"type": "array", "items": TIME},
        "vms": {"type": "array", "items": obj({
            "vm_id": STR, "vm_name": NSTR, "keep": INT, "prune": INT,
            "backups": {"type": "array", "items": ref("RetentionDecision")}})}})
    schemas["PolicyRun"] = obj({"job": ref("Job"), "jobs": {"type": "array", "items": ref("Job")},
                                "skipped": {"type": "object", "additionalProperties": STR}})
    schemas["ProtectRequest"] = obj({"protected": {"type": "boolean"}}, extra=False)
    schemas["PruneRequest"] = obj({"vm_id": UUID, "dry_run": {"type": "boolean"}}, required=[],
                                  extra=False)
    schemas["PruneResult"] = obj({
        "dry_run": {"type": "boolean"},
        "vms": {"type": "array", "items": obj({
            "vm_id": STR, "policy_id": UUID, "dry_run": {"type": "boolean"},
            "kept": {"type": "array", "items": ref("RetentionDecision")},
            "pruned": {"type": "array", "items": ref("RetentionDecision")},
            "deleted": {"type": "array", "items": STR}},
            required=["vm_id", "policy_id", "dry_run", "kept", "pruned"])},
        "skipped": {"type": "object", "additionalProperties": STR}})
    # what policies add to existing resources
    b = schemas["Backup"]
    b["properties"]["protected"] = {"type": "boolean"}
    b["properties"]["status"] = {"type": "string",
                                 "enum": ["running", "succeeded", "failed", "deleting", "deleted"]}
    vm = schemas["Vm"]
    vm["properties"].update({
        "policy_id": nullable(UUID), "policy": NSTR, "next_run": nullable(TIME),
        "protection": {"type": "string",
                       "enum": ["protected", "at_risk", "unprotected", "excluded"]},
        "policy_conflict": {"type": "array", "items": STR}})
    tags = ["policies"]
    pid = [path("id")]
    paths["/api/v1/policies"] = {
        "get": op("Protection policies with members, conflicts and next runs", "viewer",
                  {"200": _json(obj({"items": {"type": "array", "items": ref("Policy")}}))},
                  tags=tags),
        "post": op("Create a policy", "admin", {"201": _json(ref("Policy"))}, body="PolicyCreate",
                   tags=tags)}
    paths["/api/v1/policies/next-runs"] = {
        "get": op("A schedule's next fire times before it is saved (validated like a policy's)",
                  "viewer", {"200": _json(obj({"schedule": STR, "timezone": STR,
                                               "next_runs": {"type": "array", "items": TIME}}))},
                  params=[q("schedule", STR, "5-field cron"), q("timezone", STR, "IANA name"),
                          q("count", {"type": "integer", "minimum": 1, "maximum": 20})],
                  tags=tags)}
    paths["/api/v1/policies/{id}"] = {
        "get": op("One policy, with its recent ticks", "viewer", {"200": _json(ref("Policy"))},
                  params=pid, tags=tags),
        "patch": op("Change a policy (given fields replace the stored ones)", "admin",
                    {"200": _json(ref("Policy"))}, params=pid, body="PolicyUpdate", tags=tags),
        "delete": op("Delete a policy (its backups stay)", "admin", NO_CONTENT, params=pid,
                     tags=tags)}
    paths["/api/v1/policies/{id}/run"] = {
        "post": op("Run a policy now", "operator", {"202": _json(ref("PolicyRun"), "Job(s) queued")},
                   params=pid, tags=tags)}
    paths["/api/v1/policies/{id}/preview"] = {
        "get": op("Next fire times; per member VM, which backups retention keeps or prunes, and why",
                  "viewer", {"200": _json(ref("PolicyPreview"))},
                  params=[path("id"), q("vm_id", UUID)], tags=tags)}
    paths["/api/v1/policies/{id}/ticks"] = {
        "get": op("The policy's fire times and what each did, newest first", "viewer",
                  {"200": _json(obj({"items": {"type": "array", "items": ref("Tick")}}))},
                  params=[path("id"), LIMIT], tags=tags)}
    paths["/api/v1/backups/{id}"]["patch"] = op(
        "Protect or unprotect a backup", "operator", {"200": _json(ref("Backup"))},
        params=pid, body="ProtectRequest", tags=["backups"])
    paths["/api/v1/prune"] = {
        "post": op("Apply the policies' retention now (one VM or every member)", "operator",
                   {"200": _json(ref("PruneResult"), "Dry run: what would be kept and pruned"),
                    "202": _json(obj({"job": ref("Job"),
                                      "skipped": {"type": "object", "additionalProperties": STR}}),
                                 "prune job queued")},
                   body="PruneRequest", tags=tags)}
    paths["/api/v1/backups/{id}"]["delete"] = op(
        "Delete a backup: hidden at once, removed from the target by a prune job", "operator",
        {"202": _json(obj({"job": ref("Job"), "backup": ref("Backup")}), "prune job queued")},
        params=pid, tags=["backups"])
    job = schemas["Job"]
    job["properties"]["kind"] = {"type": "string", "enum": ["backup", "restore", "prune", "gc", "verify"]}
    job["properties"]["result"] = nullable({"type": "object",
                                            "description": "what a prune or gc job did"})
