"""Policy notifications by e-mail (aiosmtplib): a run that failed (each VM, its step
and error, a link to the job), a run that succeeded when asked, a tick that was
late, missed or skipped, and a daily summary. Webhook events go through the
catalog's event outbox instead (`policy.run.started`, `policy.run.finished`,
`backup.pruned`, `vm.protection_changed`).

The password is never logged; a mail that cannot be sent is logged and dropped
(a notification must not stop the scheduler).
"""
from __future__ import annotations

import ssl
from email.message import EmailMessage
from typing import Any, Iterable, Mapping, Sequence

import aiosmtplib
import structlog

from ..errors import ConfigError
from .settings import SMTP_SECURITY, Smtp

log = structlog.get_logger("ovault.notify")

__all__ = ["Mailer", "failure_mail", "success_mail", "tick_mail", "summary_mail", "damaged_mail"]


class Mailer:
    def __init__(self, cfg: Smtp):
        if cfg.security not in SMTP_SECURITY:
            raise ConfigError(f"smtp.security must be one of {', '.join(SMTP_SECURITY)}, "
                              f"got {cfg.security!r}")
        self.cfg = cfg
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.host)

    async def send(self, to: Iterable[str], subject: str, body: str) -> bool:
        to = sorted(set(to))
        if not self.enabled or not to:
            return False
        msg = EmailMessage()
        msg["From"] = self.cfg.from_address
        msg["To"] = ", ".join(to)
        msg["Subject"] = subject
        msg.set_content(body)
        c = self.cfg
        tls_context = None
        if c.security in ("tls", "starttls"):
            tls_context = ssl.create_default_context(cafile=c.ca_file or None)
        try:
            await aiosmtplib.send(
                msg, hostname=c.host, port=c.port, username=c.username or None,
                password=(c.secret() or None) if c.username else None,
                use_tls=c.security == "tls", start_tls=c.security == "starttls",
                tls_context=tls_context, timeout=c.timeout)
        except (aiosmtplib.SMTPException, OSError) as e:
            log.warning("mail not sent", subject=subject, to=to, error=str(e))
            return False
        self.sent += 1
        log.info("mail sent", subject=subject, to=to)
        return True


def _link(base_url: str, job_id: Any) -> str:
    return f"{base_url.rstrip('/')}/api/v1/jobs/{job_id}" if base_url else f"job {job_id}"


def failure_mail(policy: Any, job: Any, base_url: str = "") -> tuple[str, str]:
    failed = [m for m in job.machines if m.state != "succeeded"]
    lines = [f"Policy {policy.name}: the run of job {job.id} ended {job.state}.", ""]
    for m in failed:
        step = (m.resources or {}).get("failed_in") or (m.context or {}).get("step") or m.state
        lines.append(f"- VM {m.vm_name or m.vm_id} ({m.vm_id}): {m.state} at step {step}: "
                     f"{m.error or 'no error text'}")
    lines += ["", f"Job: {_link(base_url, job.id)}"]
    return f"[ovault] policy {policy.name}: {len(failed)} VM(s) not backed up", "\n".join(lines)


def success_mail(policy: Any, job: Any, base_url: str = "") -> tuple[str, str]:
    names = ", ".join(m.vm_name or m.vm_id for m in job.machines)
    return (f"[ovault] policy {policy.name}: {len(job.machines)} VM(s) backed up",
            f"Policy {policy.name}: job {job.id} succeeded for {names}.\n\n"
            f"Job: {_link(base_url, job.id)}\n")


def tick_mail(policy: Any, tick: Any) -> tuple[str, str]:
    return (f"[ovault] policy {policy.name}: run {tick.status} ({tick.fire_at:%Y-%m-%d %H:%M} UTC)",
            f"Policy {policy.name}, scheduled for {tick.fire_at.isoformat()}: {tick.status}.\n"
            f"{tick.reason or ''}\n")


def damaged_mail(payload: Mapping[str, Any], policy: Any | None, base_url: str = ""
                 ) -> tuple[str, str]:
    """A `backup.damaged` event: verify found chunks or indexes of a backup damaged
    on the target."""
    vm = payload.get("vm_name") or payload.get("vm_id")
    bid = payload.get("backup_id")
    lines = [f"ovault verify found damage in backup {bid} of VM {vm} ({payload.get('vm_id')}).", "",
             f"Damaged chunks: {payload.get('damaged_chunks', 0)}"]
    bad = payload.get("bad_indexes") or {}
    if bad:
        lines.append("Unreadable disk indexes: " + ", ".join(f"{k} ({v})" for k, v in sorted(bad.items())))
    ranges = payload.get("ranges") or []
    if ranges:
        lines += ["", f"Affected ranges ({payload.get('ranges_total', len(ranges))} in all; "
                      "first ones):"]
        lines += [f"- disk {r.get('disk_id')}: {r.get('length')} bytes at offset {r.get('offset')}"
                  for r in ranges[:10]]
    lines += ["", "Restoring this backup would give wrong data in those ranges. The next backup "
              "of this VM does not build on it; backups built on it may share the damage "
              "(`ovault verify` tells).",
              f"Backup: {base_url.rstrip('/')}/api/v1/backups/{bid}" if base_url else f"Backup: {bid}"]
    if policy is not None:
        lines.append(f"Policy: {policy.name}")
    return f"[ovault] backup of VM {vm} is damaged", "\n".join(lines) + "\n"


def summary_mail(runs: Sequence[Mapping[str, Any]], at_risk: Sequence[str],
                 usage: Mapping[str, Any] | None) -> tuple[str, str]:
    total = sum(r["n"] for r in runs)
    failed = sum(r["n"] for r in runs if r["state"] == "failed")
    lines = [f"Policy runs in the last 24 hours: {total} ({failed} failed)", ""]
    for r in runs:
        lines.append(f"- {r['name']}: {r['n']} {r['state']}")
    lines += ["", f"VMs at risk (no success within 1.5 x their policy's interval): {len(at_risk)}"]
    lines += [f"- {x}" for x in at_risk]
    if usage:
        lines += ["", "Target usage: " + ", ".join(f"{k} {v}" for k, v in usage.items())]
    return f"[ovault] daily summary: {total} runs, {failed} failed, {len(at_risk)} VMs at risk", \
        "\n".join(lines) + "\n"
