"""The OpenAPI 3 document, served at /api/openapi.json.

Written by hand next to the handlers (not generated from them), and held to
them by tests: the document validates with openapi-spec-validator, every
registered route must be documented and every documented operation registered
(tests/unit/api/test_openapi.py), and schemathesis
fuzzes the running service against it (tests/e2e/test_api_fuzz.py).
Errors are `application/problem+json` under `default` on every operation.
"""
from __future__ import annotations

from aiohttp import web

from . import openapi_files, openapi_policies
from .auth import allow
from .openapi_parts import (CURSOR, INT, LIMIT, NO_CONTENT, NSTR, STR, TIME, UUID, _json, nullable, obj, op,
                            page, path, q, ref)
from .views import json_response

routes = web.RouteTableDef()

SCHEMAS = {
    "Problem": obj({"type": STR, "title": STR, "status": {"type": "integer"}, "detail": STR,
                    "code": STR,  # the error's stable name (the type slug with underscores)
                    # a 403 for a missing engine permit (api/authz.py): which, on what
                    "permit": STR, "object_type": STR, "object_id": NSTR},
                   required=["type", "title", "status", "detail"]),
    "Machine": obj({
        "id": UUID, "vm_id": STR, "vm_name": NSTR, "state": STR, "error": NSTR,
        "bytes_done": INT, "bytes_total": INT, "progress": {"type": "number", "minimum": 0},
        "disks": {"type": "object", "additionalProperties": {"type": "object"}},
        "backup_id": NSTR, "started_at": nullable(TIME), "finished_at": nullable(TIME),
        "resources": {"type": "object"},
        # on /api/v1/jobs answers: the server's current rate and ETA (null when unknown)
        "rate_bps": nullable(INT), "eta_seconds": nullable({"type": "number", "minimum": 0})},
        required=["id", "vm_id", "vm_name", "state", "error", "bytes_done", "bytes_total", "progress", "disks",
                  "backup_id", "started_at", "finished_at", "resources"]),
    "Job": obj({
        "id": UUID, "kind": {"type": "string", "enum": ["backup", "restore"]},
        "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "canceled"]},
        "request": {"type": "object"}, "created_by": NSTR, "created_at": TIME,
        "started_at": nullable(TIME), "finished_at": nullable(TIME), "error": NSTR,
        "cancel_requested": {"type": "boolean"}, "machines": {"type": "array", "items": ref("Machine")}}),
    "JobAccepted": obj({"job": ref("Job")}),
    "VerifyRequest": obj({"backup_ids": {"type": "array", "maxItems": 1000, "items": UUID,
                                         "description": "default: every backup on the target"}},
                          required=[], extra=False),
    "BackupDisk": obj({"disk_id": STR, "alias": NSTR, "provisioned_size": INT, "format": STR,
                       "bytes_read": INT, "bytes_written": INT, "bootable": {"nullable": True},
                       "interface": {"nullable": True}}),
    "Backup": obj({
        "id": UUID, "vm_id": STR, "vm_name": NSTR, "job_id": nullable(STR),
        "mode": {"type": "string", "enum": ["full", "incremental"]},
        "method": {"type": "string", "enum": ["cbt", "snapshot"]},
        "status": {"type": "string", "enum": ["running", "succeeded", "failed", "deleted"]},
        "parent_id": NSTR, "checkpoint_id": NSTR,
        "consistency": nullable({"type": "string", "enum": ["filesystem", "crash", None],
                                 "description": "filesystem: the engine froze the guest's file "
                                 "systems (guest agent) for the point in time; crash: it did not "
                                 "(VM down, no agent answered); null until the backup succeeded"}),
        "created_at": TIME,
        "completed_at": nullable(TIME), "size_bytes": INT, "new_bytes": INT, "fallback_reason": NSTR,
        "error": NSTR, "disks": {"type": "array", "items": ref("BackupDisk")},
        "damaged": {"type": "boolean", "description": "verify found damage on the target; never an incremental's parent"},
        "damage": nullable({"type": "object", "description": "what verify found: damaged chunks "
                            "(digest, reason, ranges of disk_id/offset/length) and bad indexes"}),
        "verified_at": nullable(TIME)}),
    "Vm": obj({
        "id": STR, "name": NSTR, "status": NSTR, "host_id": NSTR, "cluster_id": NSTR,
        "memory": nullable({"type": "integer"}), "protected": {"type": "boolean"},
        "last_backup": nullable(obj({"id": UUID, "created_at": TIME, "mode": STR, "method": STR}))}),
    "Target": obj({
        "id": UUID, "name": STR, "url": STR, "options": {"type": "object"}, "created_at": TIME,
        "active": {"type": "boolean"},
        "usage": nullable(obj({"stored_bytes": INT, "logical_bytes": INT, "chunks": INT, "backups": INT,
                               "dedup_ratio": {"type": "number"}}))}),
    "Webhook": obj({"id": UUID, "url": STR, "events": {"type": "array", "items": STR},
                    "enabled": {"type": "boolean"}, "created_at": TIME,
                    "secret": {"type": "string", "description": "only when generated by the server"}},
                   required=["id", "url", "events", "enabled", "created_at"]),
    "Delivery": obj({
        "id": {"type": "integer"}, "webhook_id": UUID, "event_id": {"type": "integer"},
        "event_type": NSTR, "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
        "attempts": INT, "next_attempt_at": nullable(TIME), "last_status_code": nullable({"type": "integer"}),
        "last_error": NSTR, "created_at": TIME, "delivered_at": nullable(TIME)}),
    "Cluster": obj({"id": STR, "name": STR}),
    "StorageDomain": obj({"id": STR, "name": STR, "type": STR,
                          "available_bytes": nullable({"type": "integer"}),
                          "used_bytes": nullable({"type": "integer"})}),
    "Attempt": obj({"attempt": {"type": "integer", "minimum": 1}, "attempted_at": TIME,
                    "status_code": nullable({"type": "integer"}), "error": NSTR,
                    "outcome": {"type": "string", "enum": ["delivered", "retry", "gave_up"]}}),
    "Token": obj({"id": UUID, "name": STR, "role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
                  "created_at": TIME, "expires_at": nullable(TIME), "last_used_at": nullable(TIME),
                  "revoked": {"type": "boolean"},
                  "token": {"type": "string", "description": "the plain token, in the creation answer only"}},
                 required=["id", "name", "role", "created_at", "expires_at", "last_used_at", "revoked"]),
    "Me": obj({"name": STR, "role": STR, "kind": {"type": "string", "enum": ["token", "sso"]},
               "vm_ids": nullable({"type": "array", "items": STR})}),
    "Health": obj({"status": STR}),
    "Ready": obj({"status": {"type": "string", "enum": ["ready", "not ready"]}}, required=["status"], extra=False),
    "BackupRequest": obj({
        "vm_ids": {"type": "array", "items": UUID, "minItems": 1, "maxItems": 500, "uniqueItems": True},
        "mode": {"type": "string", "enum": ["auto", "full", "incremental"], "default": "auto"}},
        required=["vm_ids"], extra=False),
    "RestoreRequest": obj({
        "kind": {"type": "string", "enum": ["new", "in_place", "disks"], "default": "new"},
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+$", "minLength": 1, "maxLength": 64},
        "cluster_id": UUID, "storage_domain_id": UUID,
        "disk_ids": {"type": "array", "items": UUID, "minItems": 1},
        "target_vm_id": UUID, "power_on": {"type": "boolean"}}, required=[], extra=False),
    "TargetCreate": obj({"name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"},
                         "url": {"type": "string", "description": "nfs://server/export/path or an absolute path"},
                         "options": {"type": "object"},
                         "encrypt": {"type": "boolean", "description": "a store encrypted at rest (AES-256-GCM) "
                                     "when the target is first used; cannot be changed later"}},
                        required=["name", "url"], extra=False),
    "TargetUpdate": obj({"name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"},
                         "url": STR, "options": {"type": "object"}}, required=[], extra=False),
    "WebhookCreate": obj({
        "url": {"type": "string", "format": "uri", "description": "http:// or https://"},
        "secret": {"type": "string", "minLength": 16, "maxLength": 200,
                   "description": "HMAC key; generated and returned once when omitted"},
        "events": {"type": "array", "items": {"type": "string", "pattern": r"^(\*|[a-z_]+\.(\*|[a-z_]+))$"},
                   "maxItems": 50, "description": "empty or absent: every event type"},
        "enabled": {"type": "boolean"}}, required=["url"], extra=False),
    "WebhookUpdate": obj({
        "url": {"type": "string", "format": "uri"}, "secret": {"type": "string", "minLength": 16, "maxLength": 200},
        "events": {"type": "array", "items": {"type": "string", "pattern": r"^(\*|[a-z_]+\.(\*|[a-z_]+))$"},
                   "maxItems": 50},
        "enabled": {"type": "boolean"}}, required=[], extra=False),
    "TestQueued": obj({"event_id": {"type": "integer"}, "delivery_id": {"type": "integer"}}),
    "TokenCreate": obj({"name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9 _.@\-]{0,99}$"},
                        "role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
                        "expires_in": {"type": "integer", "minimum": 1, "maximum": 10 * 365 * 86400,
                                       "description": "seconds; absent: never expires"}},
                       required=["name", "role"], extra=False),
}


PATHS = {
    "/healthz": {"get": op("The process answers", None, {"200": _json(ref("Health")),
                                                          "503": _json(ref("Health"), "Starting")},
                           tags=["health"])},
    "/readyz": {"get": op("Database, engine and target reachable", None,
                          {"200": _json(ref("Ready")), "503": _json(ref("Ready"), "Not ready")}, tags=["health"])},
    "/metrics": {"get": op("Prometheus metrics", "viewer",
                           {"200": {"description": "Prometheus text format",
                                    "content": {"text/plain": {"schema": STR}}}}, tags=["health"])},
    "/api/openapi.json": {"get": op("This document", "viewer", {"200": _json({"type": "object"})})},
    "/api/v1/me": {"get": op("Who the token belongs to", "viewer", {"200": _json(ref("Me"))})},
    "/api/v1/vms": {"get": op("VMs the caller may see, with protection status", "viewer",
                              {"200": _json(page("Vm"))}, tags=["vms"],
                              params=[q("search", {"type": "string", "maxLength": 500}, "engine search"),
                                      q("protected", {"type": "boolean"}),
                                      {**LIMIT, "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                                      CURSOR])},
    "/api/v1/clusters": {"get": op("Clusters (restore targets)", "viewer",
                                   {"200": _json(page("Cluster"))}, tags=["inventory"])},
    "/api/v1/storage-domains": {"get": op("Data storage domains (restore targets)", "viewer",
                                          {"200": _json(page("StorageDomain"))}, tags=["inventory"])},
    "/api/v1/vms/{id}": {"get": op("One VM", "viewer", {"200": _json(ref("Vm"))}, params=[path("id")],
                                   tags=["vms"])},
    "/api/v1/backups": {
        "get": op("Backups, newest first", "viewer", {"200": _json(page("Backup"))}, tags=["backups"],
                  params=[q("vm_id", UUID), q("status", {"type": "string",
                                                         "enum": ["running", "succeeded", "failed", "deleted"]}),
                          LIMIT, CURSOR]),
        "post": op("Back up VMs", "operator", {"202": _json(ref("JobAccepted"), "Job queued")},
                   body="BackupRequest", tags=["backups"])},
    "/api/v1/backups/{id}": {
        "get": op("One backup", "viewer", {"200": _json(ref("Backup"))}, params=[path("id")], tags=["backups"]),
        "delete": op("Delete a backup (from the target too)", "operator", {"200": _json(ref("Backup"))},
                     params=[path("id")], tags=["backups"])},
    "/api/v1/verify": {
        "post": op("Verify backups on the target (a verify job): damaged ones are flagged and announced", "admin",
                   {"202": _json(ref("JobAccepted"), "verify job queued")}, body="VerifyRequest", tags=["backups"])},
    "/api/v1/backups/{id}/restore": {
        "post": op("Restore a backup", "operator", {"202": _json(ref("JobAccepted"), "Job queued")},
                   params=[path("id")], body="RestoreRequest", tags=["backups"])},
    "/api/v1/jobs": {"get": op("Jobs, newest first", "viewer", {"200": _json(page("Job"))}, tags=["jobs"],
                               params=[q("state", {"type": "string", "enum": ["queued", "running", "succeeded",
                                                                              "failed", "canceled"]}),
                                       q("kind", {"type": "string", "enum": ["backup", "restore"]}),
                                       q("vm_id", UUID), LIMIT, CURSOR])},
    "/api/v1/jobs/{id}": {"get": op("One job with per-VM and per-disk progress", "viewer",
                                    {"200": _json(ref("Job"))}, params=[path("id")], tags=["jobs"])},
    "/api/v1/jobs/{id}/cancel": {"post": op("Ask a job to stop", "operator", {"202": _json(ref("Job"))},
                                            params=[path("id")], tags=["jobs"])},
    "/api/v1/ws": {"get": op("Live progress (websocket; see docs/api.md)", "viewer",
                             {"101": {"description": "Switching protocols"}}, tags=["live"],
                             **{"x-websocket": True})},
    "/api/v1/targets": {
        "get": op("Backup targets", "viewer", {"200": _json(page("Target"))}, tags=["targets"]),
        "post": op("Register a target", "admin", {"201": _json(ref("Target"))}, body="TargetCreate",
                   tags=["targets"])},
    "/api/v1/targets/{id}": {
        "get": op("One target, with usage when active", "viewer", {"200": _json(ref("Target"))},
                  params=[path("id")], tags=["targets"]),
        "patch": op("Change a target", "admin", {"200": _json(ref("Target"))}, params=[path("id")],
                    body="TargetUpdate", tags=["targets"]),
        "delete": op("Forget a target", "admin", NO_CONTENT, params=[path("id")], tags=["targets"])},
    "/api/v1/webhooks": {
        "get": op("Webhook subscriptions", "admin", {"200": _json(page("Webhook"))}, tags=["webhooks"]),
        "post": op("Subscribe", "admin", {"201": _json(ref("Webhook"))}, body="WebhookCreate", tags=["webhooks"])},
    "/api/v1/webhooks/{id}": {
        "get": op("One subscription", "admin", {"200": _json(ref("Webhook"))}, params=[path("id")],
                  tags=["webhooks"]),
        "patch": op("Change a subscription", "admin", {"200": _json(ref("Webhook"))}, params=[path("id")],
                    body="WebhookUpdate", tags=["webhooks"]),
        "delete": op("Unsubscribe (pending deliveries go too)", "admin", NO_CONTENT, params=[path("id")],
                     tags=["webhooks"])},
    "/api/v1/webhooks/{id}/deliveries": {
        "get": op("Delivery log, newest first", "admin", {"200": _json(page("Delivery"))}, tags=["webhooks"],
                  params=[path("id"), q("status", {"type": "string", "enum": ["pending", "delivered", "failed"]}),
                          LIMIT, q("cursor", {"type": "integer", "minimum": 1})])},
    "/api/v1/webhooks/{id}/deliveries/{delivery_id}/attempts": {
        "get": op("Every attempt of one delivery, oldest first", "admin", {"200": _json(page("Attempt"))},
                  tags=["webhooks"], params=[path("id"), path("delivery_id", {"type": "integer", "minimum": 1})])},
    "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry": {
        "post": op("Queue a failed delivery again", "admin", {"202": _json(ref("Delivery"))}, tags=["webhooks"],
                   params=[path("id"), path("delivery_id", {"type": "integer", "minimum": 1})])},
    "/api/v1/webhooks/{id}/test": {
        "post": op("Send a webhook.test event to this webhook", "admin", {"202": _json(ref("TestQueued"))},
                   params=[path("id")], tags=["webhooks"])},
    "/api/v1/tokens": {
        "get": op("API tokens", "admin", {"200": _json(page("Token"))}, tags=["tokens"],
                  params=[q("include_revoked", {"type": "boolean"})]),
        "post": op("Create an API token (shown once)", "admin", {"201": _json(ref("Token"))}, body="TokenCreate",
                   tags=["tokens"])},
    "/api/v1/tokens/{id}": {
        "delete": op("Revoke a token", "admin", {"200": _json(ref("Token"))}, params=[path("id")],
                     tags=["tokens"])},
}

openapi_policies.extend(SCHEMAS, PATHS)
openapi_files.extend(SCHEMAS, PATHS)

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "ovault", "version": "1",
             "description": "Agentless backup for oVirt. Errors are application/problem+json with a stable "
                            "`type`; see docs/api.md."},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {"schemas": SCHEMAS,
                   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                  "description": "an ovault API token or an oVirt SSO token"}}},
}


@routes.get("/api/openapi.json")
@allow("viewer")
async def openapi(request: web.Request):
    return json_response(DOCUMENT)
