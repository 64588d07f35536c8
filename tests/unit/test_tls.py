"""Certificates made with `cryptography`: the API's self-signed one and the sandbox's CA."""
from __future__ import annotations

import asyncio
import re
import ssl
import stat
from types import SimpleNamespace

from cryptography import x509

from orchestrator.tls import fingerprint, issue, make_ca, self_signed, tls_context
from sandbox.pki import make_pki


def names(cert_path) -> set[str]:
    c = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in san}


async def handshake(cert, key, ca, host="localhost") -> str:
    """A real TLS handshake against a server presenting cert/key, trusting ca."""
    srv_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    srv_ctx.load_cert_chain(cert, key)

    async def on_client(reader, writer):
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=srv_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        cli_ctx = ssl.create_default_context(cafile=str(ca))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=cli_ctx, server_hostname=host)
        data = await reader.read()
        writer.close()
        return data.decode()
    finally:
        server.close()
        await server.wait_closed()


async def test_auto_tls_makes_a_self_signed_certificate_once(tmp_path):
    cfg = SimpleNamespace(state_dir=str(tmp_path), listen=SimpleNamespace(tls="auto", cert_file="", key_file=""))
    assert isinstance(tls_context(cfg), ssl.SSLContext)
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert {"127.0.0.1", "localhost"} <= names(cert)
    first = cert.read_bytes()
    tls_context(cfg)
    assert cert.read_bytes() == first  # kept across restarts
    assert re.fullmatch(r"sha256 Fingerprint=([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint(cert))
    assert await handshake(cert, key, cert) == "hello"
    cfg.listen.tls = "off"
    assert tls_context(cfg) is None


async def test_a_ca_issues_server_certificates_that_verify(tmp_path):
    make_ca(tmp_path / "ca.pem", tmp_path / "ca.key", org="t", cn="test-ca")
    issue(tmp_path / "s.pem", tmp_path / "s.key", ca_cert=tmp_path / "ca.pem", ca_key=tmp_path / "ca.key",
          names=["127.0.0.1", "localhost"], org="t", cn="localhost")
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((tmp_path / "s.pem").read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert names(tmp_path / "s.pem") == {"127.0.0.1", "localhost"}
    assert await handshake(tmp_path / "s.pem", tmp_path / "s.key", tmp_path / "ca.pem") == "hello"
    assert await handshake(tmp_path / "s.pem", tmp_path / "s.key", tmp_path / "ca.pem", host="127.0.0.1") == "hello"


async def test_sandbox_pki_keeps_its_files(tmp_path):
    got = await make_pki(tmp_path / "pki")
    assert {k: p.name for k, p in got.items()} == {"ca": "ca.pem", "key": "server.key", "cert": "server.pem"}
    assert stat.S_IMODE(got["key"].stat().st_mode) == 0o600 and (tmp_path / "pki" / "ca.key").exists()
    assert await handshake(got["cert"], got["key"], got["ca"]) == "hello"
    before = got["cert"].read_bytes()
    await make_pki(tmp_path / "pki")
    assert got["cert"].read_bytes() == before
