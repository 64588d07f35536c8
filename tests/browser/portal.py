"""A tiny stand-in for the engine's web server, for the browser tests.

It serves, on 127.0.0.1 over plain HTTP, what the engine's httpd would:

- `/ovirt-engine/webadmin/` — the portal (here: the harness page), with the UI
  plugin definitions written into it as `window.pluginDefinitions`, built like
  the engine does from `ui-plugins/*.json` with `<name>-config.json` overrides
  (`config` shallow-merged, `enabled`, `order`);
- `/ovirt-engine/webadmin/plugin/<name>/<path>` — the plugin's resourcePath;
- `/ovault-api/…` — a reverse proxy to the orchestrator (HTTP and websocket),
  i.e. the "proxied same-origin" deployment of docs/ui-plugin.md.

It runs its own event loop in a thread so synchronous Playwright tests can use it.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import threading
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).resolve().parent / "harness"
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
       "transfer-encoding", "upgrade", "host", "content-length"}


def plugin_definitions(plugins_dir: Path, overrides: dict[str, dict]) -> list[dict]:
    defs = []
    for f in sorted(plugins_dir.glob("*.json")):
        d = json.loads(f.read_text())
        o = overrides.get(d["name"], {})
        d["config"] = {**d.get("config", {}), **o.get("config", {})}
        d["enabled"] = o.get("enabled", True)
        d["order"] = o.get("order", 2**31 - 1)
        defs.append(d)
    return sorted(defs, key=lambda d: d["order"])


class Portal:
    def __init__(self, upstream: str, ca_file: str, vms: list[dict], overrides: dict | None = None,
                 plugins_dir: Path = ROOT / "ui-plugin"):
        self.upstream = upstream.rstrip("/")
        self.ssl = ssl.create_default_context(cafile=ca_file)
        self.vms = vms
        self.overrides = overrides or {}
        self.plugins_dir = plugins_dir
        self.requests: list[str] = []      # every path the browser asked for
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.error: BaseException | None = None
        self._started = threading.Event()

    # --- routes ---------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application()
        app.middlewares.append(self._log)
        app.router.add_get("/ovirt-engine/webadmin/", self._file(HARNESS / "index.html"))
        app.router.add_get("/ovirt-engine/webadmin/harness.js", self._file(HARNESS / "harness.js"))
        app.router.add_get("/ovirt-engine/webadmin/harness.css", self._file(HARNESS / "harness.css"))
        app.router.add_get("/ovirt-engine/webadmin/__plugin_definitions.js", self._definitions)
        app.router.add_get("/ovirt-engine/webadmin/__vms.json", self._vms)
        app.router.add_get("/ovirt-engine/webadmin/plugin/{name}/{path:.+}", self._resource)
        app.router.add_route("*", "/ovault-api/{tail:.*}", self._proxy)
        return app

    @web.middleware
    async def _log(self, request, handler):
        self.requests.append(request.path_qs)
        return await handler(request)

    def _file(self, path: Path):
        async def handler(request):
            return web.FileResponse(path, headers={"Cache-Control": "no-store"})
        return handler

    async def _vms(self, request):
        return web.json_response(self.vms)

    async def _definitions(self, request):
        defs = plugin_definitions(self.plugins_dir, self.overrides)
        return web.Response(text=f"window.pluginDefinitions = {json.dumps(defs)};",
                            content_type="application/javascript", headers={"Cache-Control": "no-store"})

    async def _resource(self, request):
        name, rel = request.match_info["name"], request.match_info["path"]
        d = next((d for d in plugin_definitions(self.plugins_dir, self.overrides) if d["name"] == name), None)
        if d is None:
            raise web.HTTPNotFound()
        base = (self.plugins_dir / d["resourcePath"]).resolve()
        path = (base / rel).resolve()
        if base not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    async def _proxy(self, request: web.Request):
        url = f"{self.upstream}/{request.match_info['tail']}"
        if request.query_string:
            url += "?" + request.query_string
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP and k.lower() != "origin"}
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._proxy_ws(request, url.replace("https://", "wss://", 1), headers)
        async with self.session.request(request.method, url, headers=headers, data=await request.read(),
                                        allow_redirects=False) as r:
            body = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in HOP and k.lower() != "content-encoding"}
            return web.Response(status=r.status, body=body, headers=out)

    async def _proxy_ws(self, request, url, headers):
        headers = {k: v for k, v in headers.items() if not k.lower().startswith("sec-websocket")}
        try:
            upstream = await self.session.ws_connect(url, headers=headers)
        except aiohttp.WSServerHandshakeError as e:
            return web.Response(status=e.status or 502, text="upstream refused the websocket")
        ws = web.WebSocketResponse()
        await ws.prepare(request)

        async def pump(src, dst):
            try:
                async for msg in src:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await dst.send_bytes(msg.data)
                    else:
                        break
            finally:  # a side that vanished mid-send must not leave the other open
                await dst.close()

        try:
            await asyncio.gather(pump(ws, upstream), pump(upstream, ws), return_exceptions=True)
        finally:
            await upstream.close()
        return ws

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> "Portal":
        self._thread = threading.Thread(target=self._run, daemon=True, name="portal")
        self._thread.start()
        if not self._started.wait(15) or self.error:
            raise RuntimeError(f"portal server did not start: {self.error!r}")
        return self

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def up():
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl))
            self.runner = web.AppRunner(self._app(), access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            port = self.runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            self._started.set()
        try:
            self.loop.run_until_complete(up())
        except BaseException as e:
            self.error = e
            self._started.set()
            self.loop.close()
            return
        self.loop.run_forever()
        # Proxied websockets still open: their tasks close both sides before the loop goes.
        left = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in left:
            t.cancel()
        self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def stop(self):
        async def down():
            await self.runner.cleanup()
            await self.session.close()
        asyncio.run_coroutine_threadsafe(down(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(15)
