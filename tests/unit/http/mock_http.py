"""aioresponses, made to work with aiohttp 3.14.

aiohttp 3.14 added a required `stream_writer` argument to `ClientResponse`,
which aioresponses 0.7.9 (the newest release) does not pass
(pnuckowski/aioresponses#289). Until a release handles it, every mocked
response is built with this subclass, which supplies a writer that reports
nothing sent. Import `aioresponses` from here, not from the package.
"""
from __future__ import annotations

import inspect
from types import SimpleNamespace

from aiohttp import ClientResponse
from aioresponses import aioresponses as _aioresponses

_NEEDS_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


class _Response(ClientResponse):
    def __init__(self, method, url, **kw):
        kw.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kw)


class aioresponses(_aioresponses):  # noqa: N801 - the package's own name
    def add(self, url, method="GET", *args, **kw):
        if _NEEDS_WRITER and kw.get("response_class") is None and not args:
            kw["response_class"] = _Response
        super().add(url, method, *args, **kw)
