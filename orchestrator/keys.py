"""Typed application keys: the resources `create_app` puts in the app."""
from __future__ import annotations

from typing import Any

from aiohttp import web

CONFIG = web.AppKey("config", Any)
CATALOG = web.AppKey("catalog", Any)
ENGINE = web.AppKey("engine", Any)
STORE = web.AppKey("store", Any)
RUNNER = web.AppKey("runner", Any)
TARGET_ID = web.AppKey("target_id", Any)
READY = web.AppKey("ready", dict)
