"""The sandbox's own certificate authority, made with `cryptography`
(orchestrator/tls.py; no openssl process, no key on a command line).

The engine simulator and every host's imageio daemon present certificates
signed by this CA, for 127.0.0.1 and localhost (and 10.0.2.2, the address under
which a qemu VM on user-mode networking reaches this machine's loopback), like an engine's
`/etc/pki/ovirt-engine/ca.pem` chain. Files: ``ca.pem``/``ca.key`` and
``server.pem``/``server.key`` (PEM; keys PKCS#8, mode 0600).
"""
from __future__ import annotations

from pathlib import Path

from orchestrator.tls import issue, make_ca


async def make_pki(pki_dir: Path) -> dict:
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = pki_dir / "ca.key", pki_dir / "ca.pem"
    key, cert = pki_dir / "server.key", pki_dir / "server.pem"
    if not ca_pem.exists():
        make_ca(ca_pem, ca_key, org="ovault sandbox", cn="ovault-sandbox-ca")
    if not cert.exists():
        issue(cert, key, ca_cert=ca_pem, ca_key=ca_key, names=["127.0.0.1", "localhost", "10.0.2.2"],
              org="ovault sandbox", cn="localhost")
    return {"ca": ca_pem, "key": key, "cert": cert}
