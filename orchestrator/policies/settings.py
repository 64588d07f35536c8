"""The `[policies]` and `[smtp]` sections of ovault.toml (typed defaults, one
comment per option; loaded by orchestrator/config.py like every other section)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Policies", "Smtp", "SMTP_SECURITY"]

SMTP_SECURITY = ("plain", "starttls", "tls")


@dataclass
class Policies:
    timezone: str = "UTC"  # IANA time zone of a policy that names none
    scheduler_interval: float = 15.0  # seconds between scheduler passes (each fires what is due)
    gc_schedule: str = "30 3 * * *"  # cron (in policies.timezone) of the target's garbage collection; empty: never
    verify_schedule: str = "0 4 * * 0"  # cron (in policies.timezone) of the verify job (every backup on every target in use; weekly); empty: never
    summary_schedule: str = "0 7 * * *"  # cron (in policies.timezone) of the daily summary mail
    protection_interval: float = 60.0  # seconds between protection-status checks (vm.protection_changed); membership changes the engine logs are checked at once
    inventory_reconcile_seconds: float = 300.0  # full listing of the engine's VMs this often (the event log is followed in between)


@dataclass
class Smtp:
    host: str = ""  # SMTP server for policy notifications; empty: no mail is sent
    port: int = 587  # 25 or 587 for plain/starttls, 465 for tls
    security: str = "starttls"  # plain, starttls (upgrade after connecting) or tls (TLS from the start)
    username: str = ""  # empty: no authentication
    password: str = ""  # the SMTP password (better: password_file)
    password_file: str = ""  # a file whose first line is the password (readable by ovault only)
    from_address: str = "ovault@localhost"  # the From: of every mail
    ca_file: str = ""  # CA of the server's certificate; empty: the system's trust store
    timeout: float = 30.0  # seconds for one SMTP conversation
    base_url: str = ""  # where links in mails point, e.g. https://ovault.example.com:8443

    def secret(self) -> str:
        if self.password_file:
            return Path(self.password_file).read_text().splitlines()[0].strip()
        return self.password
