"""Webhooks: signed JSON POSTs of catalog events, from the durable outbox.

    worker = DeliveryWorker(catalog, cfg.webhooks, metrics=m); await worker.start()
    signing.verify(secret, request.headers["X-Ovault-Signature"], raw_body)

The outbox rows are written by `catalog.EventRepository.append` in the event's
own transaction; this package only reads them (`outbox.Outbox`), sends them
(`worker.DeliveryWorker`) and signs them (`signing`).
"""
from . import payload, signing
from .outbox import Outbox
from .worker import DeliveryWorker

__all__ = ["DeliveryWorker", "Outbox", "payload", "signing"]
