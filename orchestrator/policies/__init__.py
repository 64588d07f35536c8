"""Automatic protection (docs/policies.md).

Pure: `retention` (Proxmox Backup Server's prune semantics), `schedule` (cron in
an IANA zone), `spec` (policy validation), `membership` (who a policy protects).
Wired: `service` (runs, previews, deletion), `scheduler` (durable ticks, once
across replicas), `jobs` (the prune and gc job handlers), `maintenance` (daily
gc, summary, protection status), `notify` (mail), `metrics`, `settings` (the
`[policies]` and `[smtp]` configuration sections).

This package stays import-light (config.py imports `settings`): import the
module you need.
"""
