"""The sandbox's own certificate authority, made with the openssl command.

The engine simulator and every host's imageio daemon present certificates
signed by this CA, for 127.0.0.1 and localhost, like an engine's
`/etc/pki/ovirt-engine/ca.pem` chain.
"""
from __future__ import annotations

from pathlib import Path

from .proc import run


async def make_pki(pki_dir: Path) -> dict:
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = pki_dir / "ca.key", pki_dir / "ca.pem"
    key, cert = pki_dir / "server.key", pki_dir / "server.pem"
    if not ca_pem.exists():
        await run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                  "-subj", "/O=ovault sandbox/CN=ovault-sandbox-ca", "-keyout", ca_key,
                  "-out", ca_pem, "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    if not cert.exists():
        csr = pki_dir / "server.csr"
        ext = pki_dir / "server.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                       "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
        await run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj",
                  "/O=ovault sandbox/CN=localhost", "-keyout", key, "-out", csr)
        await run("openssl", "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
                  "-CAcreateserial", "-days", "3650", "-extfile", ext, "-out", cert)
    return {"ca": ca_pem, "key": key, "cert": cert}
