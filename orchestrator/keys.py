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
SSO = web.AppKey("sso", Any)  # api.sso.SsoVerifier
HUB = web.AppKey("hub", Any)  # live.Hub: websocket clients and cross-replica events
METRICS = web.AppKey("metrics", Any)  # metrics.Metrics
DELIVERY = web.AppKey("delivery", Any)  # webhooks.DeliveryWorker
DSN = web.AppKey("dsn", str)
POLICIES = web.AppKey("policies", Any)  # policies.PolicyService
TARGETS = web.AppKey("targets", Any)  # policies.targets.TargetStores: every target's store
