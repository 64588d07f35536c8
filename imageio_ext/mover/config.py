"""Mover configuration: typed defaults here, a TOML file and environment
variables (``OVAULT_MOVER_<NAME>``) override them, command-line flags override
both. Unknown keys fail fast. `MoverConfig.masked()` is what ``--show-config``
prints (the token is never shown).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    pass


@dataclass
class MoverConfig:
    # Address to listen on. Keep it on the management network; 127.0.0.1 in the sandbox.
    host: str = "127.0.0.1"
    # TCP port of the API (54330: next to imageio's 54322-54324).
    port: int = 54330
    # TLS certificate and key (PEM). Both or neither; without them the API is plain HTTP
    # and should only listen on loopback.
    tls_cert: str = ""
    tls_key: str = ""
    # The orchestrator's bearer token. Required: set it here, in token_file, or in
    # OVAULT_MOVER_TOKEN. Only this one credential is accepted.
    token: str = ""
    # A file holding the token (first line), readable by the mover only.
    token_file: str = ""
    # This host's ovirt-imageio local socket ([local] socket in its config). Transfers the
    # local daemon serves are read through it (no TLS); others go to their transfer URL.
    imageio_socket: str = "/run/ovirt-imageio/sock"
    # Copies running at once on this host; more are queued.
    max_copies: int = 4
    # Parallel HTTP requests to imageio per copy.
    requests_per_copy: int = 4
    # Seconds a finished copy stays pollable.
    keep_finished: float = 3600.0
    # Seconds between lines of GET /v1/copies/{id}/events while nothing changes.
    events_interval: float = 1.0
    # Log format: "console" (readable) or "json".
    log_format: str = "console"
    # Backup targets this mover may write to or read from, comma-separated URLs or
    # paths (a copy's `store` must equal one or lie below it). Empty: any target the
    # authenticated orchestrator names (set it in production).
    allowed_stores: str = ""

    SECRET = ("token",)

    @classmethod
    def load(cls, path: str | None = None, env: dict | None = None, overrides: dict | None = None) -> "MoverConfig":
        cfg = cls()
        if path:
            try:
                data = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise ConfigError(f"cannot read {path}: {e}") from e
            data = data.get("mover", data)
            cfg._apply(data, f"config file {path}")
        env = os.environ if env is None else env
        from_env = {f.name: env[f"OVAULT_MOVER_{f.name.upper()}"] for f in fields(cls)
                    if f"OVAULT_MOVER_{f.name.upper()}" in env}
        unknown_env = [k for k in env if k.startswith("OVAULT_MOVER_")
                       and k[len("OVAULT_MOVER_"):].lower() not in {f.name for f in fields(cls)}]
        if unknown_env:
            raise ConfigError(f"unknown environment variables: {', '.join(sorted(unknown_env))}")
        cfg._apply(from_env, "environment")
        cfg._apply({k: v for k, v in (overrides or {}).items() if v is not None}, "command line")
        cfg._finish()
        return cfg

    def _apply(self, data: dict[str, Any], where: str) -> None:
        types = {f.name: f.type for f in fields(self)}
        for k, v in data.items():
            if k not in types:
                raise ConfigError(f"unknown option {k!r} in {where}")
            t = types[k]
            try:
                if t == "int":
                    v = int(v)
                elif t == "float":
                    v = float(v)
                else:
                    v = str(v)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"option {k!r} in {where}: {e}") from None
            setattr(self, k, v)

    def _finish(self) -> None:
        if not self.token and self.token_file:
            try:
                self.token = Path(self.token_file).read_text().splitlines()[0].strip()
            except (OSError, IndexError) as e:
                raise ConfigError(f"cannot read token_file {self.token_file}: {e}") from e
        if len(self.token) < 16:
            raise ConfigError("a token of at least 16 characters is required (token, token_file or OVAULT_MOVER_TOKEN)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together")
        if self.max_copies < 1 or self.requests_per_copy < 1:
            raise ConfigError("max_copies and requests_per_copy must be >= 1")
        if self.log_format not in ("console", "json"):
            raise ConfigError("log_format is console or json")

    def store_allowed(self, store: str) -> bool:
        allowed = [a.strip().rstrip("/") for a in self.allowed_stores.split(",") if a.strip()]
        if not allowed:
            return True
        s = store.rstrip("/")
        return any(s == a or s.startswith(a + "/") for a in allowed) and "/../" not in s + "/"

    def masked(self) -> dict:
        d = dataclasses.asdict(self)
        for k in self.SECRET:
            if d.get(k):
                d[k] = "********"
        return d
