"""The REST client of the `ovault` client commands.

It finds the orchestrator through ``--server`` and ``--token-file`` (or
``--token``; OVAULT_SERVER, OVAULT_TOKEN_FILE, OVAULT_TOKEN, OVAULT_CA_FILE),
or through the ``client.json`` that `ovault serve` writes in its state
directory (``--state-dir``, or ``--sandbox DIR`` for DIR/ovault).
"""
from __future__ import annotations

import json
import os
import ssl
from pathlib import Path

import aiohttp

from .common import CliError


def read_token_file(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise CliError(f"cannot read the token file {path}: {e.strerror or e}") from None
    if not token:
        raise CliError(f"the token file {path} is empty")
    return token


def given_token(args) -> str | None:
    """The token the user gave: --token-file, --token, then OVAULT_TOKEN_FILE, OVAULT_TOKEN."""
    if getattr(args, "token_file", None):
        return read_token_file(args.token_file)
    if getattr(args, "token", None):
        return args.token
    if os.environ.get("OVAULT_TOKEN_FILE"):
        return read_token_file(os.environ["OVAULT_TOKEN_FILE"])
    return os.environ.get("OVAULT_TOKEN") or None


class Api:
    def __init__(self, args):
        url, token, ca = args.server, given_token(args), args.ca_file
        state = args.state_dir or (str(Path(args.sandbox) / "ovault") if args.sandbox else None)
        if state is None and not url:
            state = os.environ.get("OVAULT_STATE_DIR", "/var/lib/ovault")
        if state and (not url or not token):
            cj = Path(state) / "client.json"
            if not cj.exists():
                raise CliError(f"no running orchestrator found ({cj} is missing); start "
                               "`ovault serve` or pass --server and --token-file")
            info = json.loads(cj.read_text())
            url = url or info["url"]
            ca = ca or info.get("ca_file")
            if not token and info.get("token_file") and Path(info["token_file"]).exists():
                token = Path(info["token_file"]).read_text().strip()
        if not url or not token:
            raise CliError("need --server and --token-file (or OVAULT_SERVER and OVAULT_TOKEN_FILE)")
        self.url, self.token = url.rstrip("/"), token
        self.ssl = ssl.create_default_context(cafile=ca) if ca else None
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self):
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}"},
            connector=aiohttp.TCPConnector(ssl=self.ssl) if self.ssl else None,
            timeout=aiohttp.ClientTimeout(total=120))
        return self

    async def __aexit__(self, *exc):
        await self.session.close()

    async def req(self, method, path, body=None, params=None):
        try:
            async with self.session.request(method, self.url + path, json=body, params=params) as r:
                text = await r.text()
                doc = json.loads(text) if text else None
                if r.status >= 400:
                    detail = doc.get("detail") if isinstance(doc, dict) else text
                    raise CliError(f"{method} {path}: {r.status} {detail}")
                return doc
        except aiohttp.ClientError as e:
            raise CliError(f"cannot reach {self.url}: {e}") from None

    async def resolve_vms(self, names_or_ids):
        vms = (await self.req("GET", "/api/v1/vms"))["items"]
        by_name = {v["name"]: v["id"] for v in vms}
        ids = {v["id"] for v in vms}
        out = []
        for x in names_or_ids:
            if x in ids:
                out.append(x)
            elif x in by_name:
                out.append(by_name[x])
            else:
                raise CliError(f"no VM named or numbered {x!r}")
        return out
