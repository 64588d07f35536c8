"""Typed configuration with defaults in code, one comment per option.

Sources, later wins: defaults below → a TOML file (`--config FILE`) →
environment variables `OVAULT_<SECTION>_<KEY>` (e.g. `OVAULT_LIMITS_TOTAL=4`,
`OVAULT_STATE_DIR=/srv/ovault`) → `--sandbox DIR` (reads `DIR/sandbox.json`).
Unknown keys fail fast. `ovault serve --show-config` prints the effective
configuration with secrets masked. The loading itself is shared with the mover
(`imageio_ext/config.py`); docs/operations.md's table of every option is
generated from these classes (`python -m orchestrator.config`) and a unit test
keeps it equal.
"""
from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from statemachines import Timeouts
from statemachines.consistency import check_setting as check_consistency

from imageio_ext import config as loader

from .errors import ConfigError
from .files.settings import FileRestore
from .policies.settings import Policies, Smtp

__all__ = ["Config", "ConfigError", "load", "apply_sandbox"]


@dataclass
class Listen:
    host: str = "127.0.0.1"  # address of the REST API / websocket listener
    port: int = 8443  # TCP port of the listener (0: any free port)
    tls: str = "auto"  # auto: self-signed certificate made on first start; on: cert+key; off
    cert_file: str = ""  # PEM certificate (chain) for tls = "on"; tls = "auto" writes <state_dir>/tls/
    key_file: str = ""  # its PEM private key


@dataclass
class Database:
    dsn: str = ""  # empty: a private PostgreSQL cluster in <state_dir>/pg/postgres (PGDATA: data/)
    # The private cluster is watched every `supervise_interval` seconds and
    # started again when it died, retrying with backoff up to `restart_backoff_max`.
    supervise_interval: float = 1.0  # seconds between checks that the private cluster runs
    restart_backoff_max: float = 30.0  # longest wait between attempts to start it again


@dataclass
class Engine:
    url: str = ""  # https://engine.example.com/ovirt-engine/api
    username: str = "admin@internal"  # an engine account ovault acts as (user@profile)
    password: str = ""  # its password
    ca_file: str = ""  # the engine's CA certificate (PEM); empty: the system's trust store
    insecure: bool = False  # never in production
    workers: int = 4  # SDK connections (one per worker thread)
    retries: int = 4  # transient failures (5xx, connection) retried with backoff
    events_interval: float = 1.0  # /events?from= polling (wakes waiting machines early)


@dataclass
class Target:
    url: str = ""  # a mounted path or nfs://server/export/path
    name: str = "default"  # the target's name in the catalog and the API
    # Chunk size of a store created on a new target (an existing store keeps its
    # own). 4096 suits most disks; 1024 makes incrementals of scattered small
    # writes ~2-3x cheaper and full backups slower (docs/performance.md).
    chunk_size_kib: int = 4096
    # A store created on a new target is encrypted at rest (AES-256-GCM, format
    # version 2); an existing store keeps what it was created with.
    encrypt: bool = False
    # The store key of an encrypted target (0600; never on the target). Empty:
    # <state_dir>/keys/<name>.key (orchestrator/store_keys.py).
    key_file: str = ""


@dataclass
class Movers:
    enabled: bool = True  # false: every copy runs in this process ("direct mode")
    token: str = ""  # one token for hosts not in `tokens` (prefer a token per host)
    tokens: dict = field(default_factory=dict)  # engine host id -> that host's mover token
    hosts: dict = field(default_factory=dict)  # engine host id -> mover URL
    ca_file: str = ""  # CA of the movers' TLS certificates (`ovault mover-cert`: movers/ca.pem)
    client_cert: str = ""  # the orchestrator's TLS client certificate for the movers (mutual TLS)
    client_key: str = ""  # its private key
    requests_per_copy: int = 4  # parallel HTTP requests to imageio per disk copy


@dataclass
class Limits:
    total: int = 8  # VMs in flight on this replica
    per_job: int = 4  # VMs of one job in parallel
    per_policy_run: int = 0  # VMs of one policy run (a scheduled or run-now policy job) in parallel; 0: as many as `total` allows
    per_host: int = 2  # VMs whose transfers run on one hypervisor host
    per_storage_domain: int = 4  # VMs whose disks are on one storage domain
    disks_per_vm: int = 2  # disks of one VM copied in parallel


@dataclass
class Backup:
    # prefer: a running VM's CBT backup asks the engine to freeze the guest's file systems
    # (require_consistency) and, when it cannot, is taken again crash consistent;
    # require: that VM's backup fails instead; crash: never asked (docs/api.md, consistency)
    consistency: str = "prefer"


@dataclass
class Jobs:
    replica_id: str = ""  # empty: hostname-pid-random
    lease_seconds: float = 30.0  # a job whose owner stops renewing this long is taken over
    claim_interval: float = 1.0  # look for queued or orphaned jobs at least this often
    # a job stopped because the catalog is unreachable keeps its engine objects (transfers,
    # engine backup, snapshot) this long, then this replica releases them (docs/operations.md)
    catalog_unreachable_release_seconds: float = 120.0


@dataclass
class Api:
    cors_origins: list = field(default_factory=list)  # the Administration Portal's origin(s)
    sso_cache_seconds: float = 60.0  # how long an engine SSO token's identity and VMs are trusted
    ws_queue: int = 256  # messages buffered per websocket client before the drop/close policy
    ws_send_timeout: float = 10.0  # a client that cannot take one message in this long is closed
    stats_cache_seconds: float = 300.0  # Store.stats() walks the target: reuse it this long
    ws_recheck_seconds: float = 30.0  # a websocket's token is checked again this often (revoked/expired: closed)
    admin_token_days: float = 90.0  # expiry of admin API tokens created without one (0: never expire)
    auth_failures_burst: int = 20  # failed authentications one client address may make at once ...
    auth_failures_per_minute: float = 10.0  # ... and then per minute (more: 429 with Retry-After)


@dataclass
class Webhooks:
    enabled: bool = True  # run the delivery worker on this replica
    timeout: float = 10.0  # one HTTP attempt
    max_attempts: int = 12  # then the delivery is `failed` (about 3.4 hours after the first attempt with the defaults)
    base_delay: float = 10.0  # backoff after attempt n: base_delay * 2^(n-1), capped
    max_delay: float = 3600.0  # the cap of that backoff
    poll_interval: float = 1.0  # look for due deliveries at least this often
    concurrency: int = 8  # deliveries in flight per replica
    # Loopback, link-local, private and unique-local destinations are refused
    # (at creation and after DNS resolution at each delivery) unless listed here.
    allow_networks: list = field(default_factory=list)  # CIDRs webhooks may reach although not public


@dataclass
class Config:
    state_dir: str = "/var/lib/ovault"  # embedded database, TLS files, admin token
    listen: Listen = field(default_factory=Listen)
    database: Database = field(default_factory=Database)
    engine: Engine = field(default_factory=Engine)
    target: Target = field(default_factory=Target)
    movers: Movers = field(default_factory=Movers)
    limits: Limits = field(default_factory=Limits)
    backup: Backup = field(default_factory=Backup)
    jobs: Jobs = field(default_factory=Jobs)
    # every wait of the backup and restore machines, and their polling
    # (statemachines/ports.py documents each)
    timeouts: Timeouts = field(default_factory=Timeouts)
    api: Api = field(default_factory=Api)
    webhooks: Webhooks = field(default_factory=Webhooks)
    policies: Policies = field(default_factory=Policies)  # schedules, gc, summary (docs/policies.md)
    smtp: Smtp = field(default_factory=Smtp)  # policy notification mail
    files: FileRestore = field(default_factory=FileRestore)  # file-level restore (docs/file-restore.md)
    sandbox_admin_url: str = ""  # set by --sandbox; used by the demo only

    @property
    def replica(self) -> str:
        if not self.jobs.replica_id:
            self.jobs.replica_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        return self.jobs.replica_id

    def masked(self) -> dict:
        """The effective configuration, secrets (passwords, tokens, the DSN) masked."""
        return loader.masked(self)


def load(path: str | Path | None = None, *, sandbox: str | Path | None = None,
         env: Mapping[str, str] | None = None) -> Config:
    cfg = Config()
    if path:
        loader.apply(cfg, loader.load_file(path), "", str(path))
    loader.apply_env(cfg, os.environ if env is None else env)
    if sandbox:
        apply_sandbox(cfg, Path(sandbox))
    from .webhooks.guard import parse_networks  # noqa: PLC0415 - validates, fails fast
    parse_networks(cfg.webhooks.allow_networks)
    try:
        check_consistency(cfg.backup.consistency)
    except ValueError as e:
        raise ConfigError(f"backup.consistency: {e}") from None
    return cfg


def reference_table() -> str:
    """The markdown table of every option (docs/operations.md holds it)."""
    return loader.reference_table(Config())


if __name__ == "__main__":  # regenerate the tables in docs/operations.md and docs/mover.md
    import sys

    from imageio_ext.mover import config as mover_config
    print(mover_config.reference_table() if "--mover" in sys.argv else reference_table())


def apply_sandbox(cfg: Config, d: Path) -> Config:
    """Everything `ovault serve` needs from a running sandbox's sandbox.json."""
    try:
        info = json.loads((d / "sandbox.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"no usable sandbox in {d}: {e}") from None
    e = info["engine"]
    cfg.engine.url, cfg.engine.username, cfg.engine.password, cfg.engine.ca_file = (
        e["api"], e["username"], e["password"], e["ca_file"])
    cfg.target.url = info["target"].get("nfs_url") or info["target"]["path"]
    cfg.movers.hosts = {h["id"]: h["mover_url"] for h in info["hosts"] if h.get("mover_url")}
    cfg.movers.token = info.get("mover_token", "")
    cfg.movers.tokens = {h["id"]: h["mover_token"] for h in info["hosts"] if h.get("mover_token")}
    cfg.movers.ca_file = e["ca_file"]
    if cfg.state_dir == Config.state_dir:
        cfg.state_dir = str(d / "ovault")
    cfg.sandbox_admin_url = info.get("admin_url", "")
    return cfg
