"""Mover configuration: typed defaults here, a TOML file (top-level keys or a
``[mover]`` table) and environment variables (``OVAULT_MOVER_<KEY>``, the
orchestrator's scheme with ``mover`` as the section) override them,
command-line flags override both. Unknown keys fail fast. `MoverConfig.masked()`
is what ``--show-config`` prints (the token is never shown). The loading is the
orchestrator's (`imageio_ext/config.py`); docs/mover.md's table of every option
is generated from this class (``python -m orchestrator.config --mover``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import config as loader
from ..errors import ConfigError

__all__ = ["MoverConfig", "ConfigError", "reference_table"]


@dataclass
class MoverConfig:
    # Address to listen on. Keep it on the management network; 127.0.0.1 in the sandbox.
    host: str = "127.0.0.1"
    # TCP port of the API (54330: next to imageio's 54322-54324).
    port: int = 54330
    # TLS certificate and key (PEM). Both or neither; without them the API is plain HTTP
    # and should only listen on loopback.
    tls_cert: str = ""
    tls_key: str = ""  # the private key of tls_cert (PEM)
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

    @classmethod
    def load(cls, path: str | None = None, env: dict | None = None, overrides: dict | None = None) -> "MoverConfig":
        cfg = cls()
        if path:
            data = loader.load_file(path)
            loader.apply(cfg, data.get("mover", data), "", f"config file {path}")
        loader.apply_env(cfg, os.environ if env is None else env, section="mover")
        loader.apply(cfg, {k: v for k, v in (overrides or {}).items() if v is not None}, "", "command line")
        cfg._finish()
        return cfg

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
        return loader.masked(self)


def reference_table() -> str:
    """The markdown table of every option (docs/mover.md holds it)."""
    return loader.reference_table(MoverConfig(), env_section="mover")
