"""Mover configuration: typed defaults here, a TOML file (top-level keys or a
``[mover]`` table) and environment variables (``OVAULT_MOVER_<KEY>``, the
orchestrator's scheme with ``mover`` as the section) override them,
command-line flags override both. Unknown keys fail fast. `MoverConfig.masked()`
is what ``--show-config`` prints (the token is never shown). The loading is the
orchestrator's (`imageio_ext/config.py`); docs/mover.md's table of every option
is generated from this class (``python -m orchestrator.config --mover``).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .. import config as loader
from ..errors import ConfigError

__all__ = ["MoverConfig", "ConfigError", "reference_table"]


@dataclass
class MoverConfig:
    # Address to listen on. Keep it on the management network; 127.0.0.1 in the sandbox.
    host: str = "127.0.0.1"
    # TCP port of the API (54330: next to imageio's 54322-54324).
    port: int = 54330
    # TLS certificate and key (PEM), issued for this host by the orchestrator's mover CA
    # (`ovault mover-cert`). Both or neither; without them the API is plain HTTP and the
    # mover refuses to listen anywhere but on loopback.
    tls_cert: str = ""
    tls_key: str = ""  # the private key of tls_cert (PEM)
    # CA of the orchestrator's client certificates (PEM). With TLS, every connection must
    # present a client certificate it signed (mutual TLS); empty: the bearer token only.
    client_ca: str = ""
    # This host's own bearer token (distinct per host; the orchestrator keeps one per
    # host). Required: set it here, in token_file, or in OVAULT_MOVER_TOKEN.
    token: str = ""
    # A file holding the token (first line), readable by the mover only.
    token_file: str = ""
    # This host's ovirt-imageio local (data) socket: its `[local] socket`, by default the
    # abstract socket \0/org/ovirt/imageio, written with a leading "@". Transfers the local
    # daemon serves are read through it (no TLS); others go to their transfer URL. Never the
    # control socket (/run/ovirt-imageio/sock).
    imageio_socket: str = "@/org/ovirt/imageio"
    # This host's ovirt-imageio control socket (its `[control] socket`). When the mover may
    # read it (vdsm's hosts: group ovirtimg), a local transfer's NBD export is read and
    # written directly, beside the daemon (docs/mover.md); empty: always through imageio.
    imageio_control_socket: str = "/run/ovirt-imageio/sock"
    # This host's imageio daemon, e.g. https://host.example.com:54322. A copy's transfer
    # URL must be served by it (same scheme, host and port); empty: only tickets of the
    # local socket are accepted, never a transfer over the network.
    imageio_url: str = ""
    # CA of this host's imageio certificate (PEM) for transfers over HTTPS: the engine's
    # CA, which a host keeps as /etc/pki/vdsm/certs/cacert.pem. A CA named in a request
    # is refused.
    imageio_ca: str = ""
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
    # paths (a copy's `store` must equal one or lie below it). Required.
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
        if self.imageio_socket.startswith("@"):  # the usual spelling of an abstract socket
            self.imageio_socket = "\0" + self.imageio_socket[1:]
        if self.imageio_control_socket.startswith("@"):
            self.imageio_control_socket = "\0" + self.imageio_control_socket[1:]
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together")
        if self.max_copies < 1 or self.requests_per_copy < 1:
            raise ConfigError("max_copies and requests_per_copy must be >= 1")
        if self.log_format not in ("console", "json"):
            raise ConfigError("log_format is console or json")
        if not self.tls_cert and not _loopback(self.host):
            raise ConfigError(f"host {self.host!r} is not a loopback address: set tls_cert and tls_key "
                              "(the API carries this host's credential and backup data commands)")
        if self.client_ca and not self.tls_cert:
            raise ConfigError("client_ca (mutual TLS) needs tls_cert and tls_key")
        if not self._allowed():
            raise ConfigError("allowed_stores is required: the backup targets this mover may read and write")
        if self.imageio_url:
            u = urlsplit(self.imageio_url)
            if u.scheme not in ("https", "http") or not u.hostname or u.path.strip("/") or u.query:
                raise ConfigError(f"imageio_url {self.imageio_url!r} must be like https://host:54322")

    def ssl_context(self):
        """The listener's TLS context (None without tls_cert): with ``client_ca``,
        a client certificate signed by it is required (mutual TLS); a server
        certificate (another host's mover's) is not a client one and fails."""
        import ssl

        if not self.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.tls_cert, self.tls_key)
        if self.client_ca:
            ctx.load_verify_locations(self.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _allowed(self) -> list[str]:
        return [a.strip().rstrip("/") for a in self.allowed_stores.split(",") if a.strip()]

    def transfer_refusal(self, transfer_url: str) -> str | None:
        """Why this mover will not copy from/to ``transfer_url`` (None: it will).

        Only this host's imageio daemon is accepted: ``imageio_url``'s scheme, host
        and port, and a path ``/images/<ticket>``. Without ``imageio_url`` the ticket
        must be served by the local socket (checked when the copy starts)."""
        u = urlsplit(transfer_url)
        parts = u.path.split("/")
        if (u.username or u.password or u.query or u.fragment or len(parts) != 3 or parts[1] != "images"
                or not parts[2]):
            return "it is not an imageio transfer URL like https://host:54322/images/<ticket>"
        if not self.imageio_url:
            return None  # local socket only: run_copy(local_only=True)
        own = urlsplit(self.imageio_url)
        try:
            same = (u.scheme, (u.hostname or "").lower(), u.port or 443) == (
                own.scheme, (own.hostname or "").lower(), own.port or 443)
        except ValueError:
            same = False
        if not same:
            return f"it is not served by this host's imageio daemon ({self.imageio_url})"
        return None

    def store_allowed(self, store: str) -> bool:
        allowed = self._allowed()
        s = store.rstrip("/")
        if "/../" in s + "/" or "/./" in s + "/" or "\0" in s or "//" in s.partition("://")[2]:
            return False
        return any(s == a or s.startswith(a + "/") for a in allowed)

    def masked(self) -> dict:
        return loader.masked(self)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def reference_table() -> str:
    """The markdown table of every option (docs/mover.md holds it)."""
    return loader.reference_table(MoverConfig(), env_section="mover")
