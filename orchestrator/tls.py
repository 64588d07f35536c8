"""Certificates, made with `cryptography` (no openssl process, no key on a
command line).

- `tls_context(cfg)`: the API listener's server context. With
  ``listen.tls = "auto"`` and no cert/key configured, a self-signed
  certificate for 127.0.0.1, localhost and this host's name is made on first
  start in ``<state_dir>/tls/cert.pem`` and ``key.pem`` (mode 0600), and its
  SHA-256 fingerprint is logged so a client can pin it.
- `make_ca`, `issue`: a small certificate authority (the sandbox's PKI uses
  them for the engine simulator, the imageio daemons and the movers).
- `mover_credentials`: the per-host mover credentials the deployment installs
  (``ovault mover-cert HOST``): the orchestrator keeps a mover CA in
  ``<state_dir>/movers/``, issues each host a server certificate and a token
  of its own, and itself a client certificate every mover requires (mutual
  TLS).

Files are PEM: certificates ``BEGIN CERTIFICATE``, keys unencrypted PKCS#8
``BEGIN PRIVATE KEY`` (what ``openssl req -nodes`` writes), written through
a temporary file and renamed, keys created 0600.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path
from typing import Iterable

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["tls_context", "self_signed", "make_ca", "issue", "fingerprint", "local_names", "mover_credentials"]

log = structlog.get_logger("ovault.tls")
KEY_BITS = 2048


def local_names() -> list[str]:
    """The names a listener on this machine is reached by."""
    names = ["127.0.0.1", "localhost"]
    node = os.uname().nodename
    if node and node not in names:
        names.append(node)
    return names


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(org: str, cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sans(names: Iterable[str]) -> x509.SubjectAlternativeName:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _builder(subject: x509.Name, issuer: x509.Name, key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days)))


def _leaf(builder: x509.CertificateBuilder, names: Iterable[str], *, client: bool = False) -> x509.CertificateBuilder:
    # A server certificate is not a client one (and vice versa): a mover's certificate
    # stolen from a host does not authenticate to another host's mover.
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    return (builder.add_extension(_sans(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))


def self_signed(cert: str | Path, key: str | Path, *, names: Iterable[str] | None = None,
                org: str = "ovault", cn: str = "localhost", days: int = 825) -> None:
    """A self-signed server certificate for ``names`` (IPs and DNS names)."""
    k = _key()
    subject = _name(org, cn)
    c = _leaf(_builder(subject, subject, k, days), names or local_names()).sign(k, hashes.SHA256())
    _write(Path(key), _key_pem(k), 0o600)
    _write(Path(cert), c.public_bytes(serialization.Encoding.PEM), 0o644)


def make_ca(cert: str | Path, key: str | Path, *, org: str, cn: str, days: int = 3650) -> None:
    """A certificate authority: a self-signed CA certificate that signs `issue`d ones."""
    k = _key()
    subject = _name(org, cn)
    c = (_builder(subject, subject, k, days)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False, key_agreement=False,
                                      key_cert_sign=True, crl_sign=True, encipher_only=False,
                                      decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
         .sign(k, hashes.SHA256()))
    _write(Path(key), _key_pem(k), 0o600)
    _write(Path(cert), c.public_bytes(serialization.Encoding.PEM), 0o644)


def issue(cert: str | Path, key: str | Path, *, ca_cert: str | Path, ca_key: str | Path,
          names: Iterable[str], org: str, cn: str, days: int = 3650, client: bool = False) -> None:
    """A server (or, with ``client``, a TLS client) certificate for ``names``
    signed by the CA in ``ca_cert``/``ca_key``."""
    ca = x509.load_pem_x509_certificate(Path(ca_cert).read_bytes())
    ca_k = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    k = _key()
    c = (_leaf(_builder(_name(org, cn), ca.subject, k, days), names, client=client)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_k.public_key()), critical=False)
         .sign(ca_k, hashes.SHA256()))
    _write(Path(key), _key_pem(k), 0o600)
    _write(Path(cert), c.public_bytes(serialization.Encoding.PEM), 0o644)


def fingerprint(cert: str | Path) -> str:
    """``sha256 Fingerprint=AB:CD:...`` of a PEM certificate (openssl's spelling)."""
    c = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    return "sha256 Fingerprint=" + c.fingerprint(hashes.SHA256()).hex(":").upper()


def tls_context(cfg) -> ssl.SSLContext | None:
    """The API listener's TLS context for `cfg.listen` (None when tls = "off")."""
    if cfg.listen.tls == "off":
        return None
    cert, key = cfg.listen.cert_file, cfg.listen.key_file
    if cfg.listen.tls == "auto" and not (cert and key):
        tls_dir = Path(cfg.state_dir) / "tls"
        cert, key = str(tls_dir / "cert.pem"), str(tls_dir / "key.pem")
        if not Path(cert).exists():
            self_signed(cert, key)
        log.info("self-signed TLS certificate", cert=cert, fingerprint=fingerprint(cert))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def mover_credentials(movers_dir: str | Path, host: str, names: Iterable[str] = ()) -> dict[str, str]:
    """Issue host ``host`` its mover credentials under ``movers_dir`` (made on
    first use: ``ca.pem``/``ca.key``, the orchestrator's ``client.pem``/``client.key``).

    Writes ``<host>/cert.pem``, ``key.pem`` (a server certificate for ``names``,
    default the host name) and ``token`` (a secret of this host alone), and
    returns the paths: what the deployment copies to the host (cert, key, token,
    and ca.pem as the mover's ``client_ca``) and what the orchestrator uses
    (``client_cert``/``client_key``, ``ca`` as ``movers.ca_file``, the token in
    ``movers.tokens``). Re-running re-issues the host's certificate and token.
    """
    import secrets

    d = Path(movers_dir)
    if not host or "/" in host or host in (".", ".."):
        raise ValueError(f"bad host name {host!r}")
    ca, ca_key = d / "ca.pem", d / "ca.key"
    if not ca.exists():
        make_ca(ca, ca_key, org="ovault", cn="ovault mover CA")
    client, client_key = d / "client.pem", d / "client.key"
    if not client.exists():
        issue(client, client_key, ca_cert=ca, ca_key=ca_key, names=["ovault-orchestrator"], org="ovault",
              cn="ovault-orchestrator", client=True)
    hd = d / host
    issue(hd / "cert.pem", hd / "key.pem", ca_cert=ca, ca_key=ca_key, names=list(names) or [host], org="ovault",
          cn=host)
    _write(hd / "token", (secrets.token_urlsafe(32) + "\n").encode(), 0o600)
    return {"ca": str(ca), "client_cert": str(client), "client_key": str(client_key),
            "cert": str(hd / "cert.pem"), "key": str(hd / "key.pem"), "token_file": str(hd / "token")}
