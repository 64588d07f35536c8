"""Typed configuration with defaults in code.

Sources, later wins: defaults below → a TOML file (`--config FILE`) →
environment variables `OVAULT_<SECTION>__<KEY>` (e.g. `OVAULT_LIMITS__TOTAL=4`)
→ `--sandbox DIR` (reads `DIR/sandbox.json`). Unknown keys fail fast.
`ovault serve --show-config` prints the effective configuration with secrets
masked.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

SECRET_KEYS = {"password", "token", "secret", "dsn"}


@dataclass
class Listen:
    host: str = "127.0.0.1"  # address of the REST API / websocket listener
    port: int = 8443
    tls: str = "auto"  # auto: self-signed certificate made on first start; on: cert+key; off
    cert_file: str = ""
    key_file: str = ""


@dataclass
class Database:
    dsn: str = ""  # empty: a private PostgreSQL cluster in <state_dir>/pg
    # The private cluster is watched every `supervise_interval` seconds and
    # started again when it died, retrying with backoff up to `restart_backoff_max`.
    supervise_interval: float = 1.0
    restart_backoff_max: float = 30.0


@dataclass
class Engine:
    url: str = ""  # https://engine.example.com/ovirt-engine/api
    username: str = "admin@internal"
    password: str = ""
    ca_file: str = ""
    insecure: bool = False  # never in production
    workers: int = 4  # SDK connections (one per worker thread)
    retries: int = 4  # transient failures (5xx, connection) retried with backoff
    poll_interval: float = 1.0  # entity polling while waiting for a phase
    events_interval: float = 1.0  # /events?from= polling (wakes waiting machines early)


@dataclass
class Target:
    url: str = ""  # a mounted path or nfs://server/export/path
    name: str = "default"
    # Chunk size of a store created on a new target (an existing store keeps its
    # own). 4096 suits most disks; 1024 makes incrementals of scattered small
    # writes ~2-3x cheaper and full backups slower (docs/performance.md).
    chunk_size_kib: int = 4096


@dataclass
class Movers:
    enabled: bool = True  # false: every copy runs in this process ("direct mode")
    token: str = ""  # the orchestrator's credential for every host's ovault-mover
    hosts: dict = field(default_factory=dict)  # engine host id -> mover URL
    ca_file: str = ""  # CA of the movers' TLS certificates
    requests_per_copy: int = 4


@dataclass
class Limits:
    total: int = 8  # VMs in flight on this replica
    per_job: int = 4  # VMs of one job in parallel
    per_host: int = 2  # VMs whose transfers run on one hypervisor host
    per_storage_domain: int = 4
    disks_per_vm: int = 2  # disks of one VM copied in parallel


@dataclass
class Jobs:
    replica_id: str = ""  # empty: hostname-pid-random
    lease_seconds: float = 30.0
    claim_interval: float = 1.0
    snapshot_timeout: float = 600.0
    transfer_timeout: float = 120.0  # to reach `transferring`


@dataclass
class Api:
    cors_origins: list = field(default_factory=list)  # the Administration Portal's origin(s)
    sso_cache_seconds: float = 60.0  # how long an engine SSO token's identity and VMs are trusted
    ws_queue: int = 256  # messages buffered per websocket client before the drop/close policy
    ws_send_timeout: float = 10.0  # a client that cannot take one message in this long is closed
    stats_cache_seconds: float = 300.0  # Store.stats() walks the target: reuse it this long


@dataclass
class Webhooks:
    enabled: bool = True  # run the delivery worker on this replica
    timeout: float = 10.0  # one HTTP attempt
    max_attempts: int = 12  # then the delivery is `failed` (about 11 hours with the defaults)
    base_delay: float = 10.0  # backoff after attempt n: base_delay * 2^(n-1), capped
    max_delay: float = 3600.0
    poll_interval: float = 1.0  # look for due deliveries at least this often
    concurrency: int = 8  # deliveries in flight per replica


@dataclass
class Config:
    state_dir: str = "/var/lib/ovault"
    listen: Listen = field(default_factory=Listen)
    database: Database = field(default_factory=Database)
    engine: Engine = field(default_factory=Engine)
    target: Target = field(default_factory=Target)
    movers: Movers = field(default_factory=Movers)
    limits: Limits = field(default_factory=Limits)
    jobs: Jobs = field(default_factory=Jobs)
    api: Api = field(default_factory=Api)
    webhooks: Webhooks = field(default_factory=Webhooks)
    sandbox_admin_url: str = ""  # set by --sandbox; used by the demo only

    @property
    def replica(self) -> str:
        if not self.jobs.replica_id:
            self.jobs.replica_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        return self.jobs.replica_id

    def masked(self) -> dict:
        def mask(d):
            out = {}
            for k, v in d.items():
                if isinstance(v, dict) and k != "hosts":
                    out[k] = mask(v)
                elif k in SECRET_KEYS and v:
                    out[k] = "********"
                else:
                    out[k] = v
            return out
        return mask(dataclasses.asdict(self))


def _apply(obj, data: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for k, v in data.items():
        if k not in fields:
            raise ConfigError(f"unknown key {where}{k}")
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, dict):
                raise ConfigError(f"{where}{k} must be a table")
            _apply(cur, v, f"{where}{k}.")
        else:
            setattr(obj, k, _coerce(v, cur, f"{where}{k}"))


def _coerce(v, cur, name):
    try:
        if isinstance(cur, bool):
            if isinstance(v, str):
                return v.lower() in ("1", "true", "yes", "on")
            return bool(v)
        if isinstance(cur, int):
            return int(v)
        if isinstance(cur, float):
            return float(v)
        if isinstance(cur, list) and isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        if isinstance(cur, dict) and isinstance(v, str):
            return json.loads(v)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{name}: {e}") from None
    return v


def load(path: str | Path | None = None, *, sandbox: str | Path | None = None,
         env: dict | None = None) -> Config:
    cfg = Config()
    if path:
        try:
            _apply(cfg, tomllib.loads(Path(path).read_text()), "")
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from None
    env = os.environ if env is None else env
    for k, v in env.items():
        if not k.startswith("OVAULT_") or "__" not in k:
            continue
        section, _, key = k[len("OVAULT_"):].lower().partition("__")
        _apply(cfg, {section: {key: v}} if key else {section: v}, "")
    if sandbox:
        apply_sandbox(cfg, Path(sandbox))
    return cfg


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
    cfg.movers.ca_file = e["ca_file"]
    if cfg.state_dir == Config.state_dir:
        cfg.state_dir = str(d / "ovault")
    cfg.sandbox_admin_url = info.get("admin_url", "")
    return cfg
