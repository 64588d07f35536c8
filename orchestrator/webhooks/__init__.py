"""Webhooks: signed JSON POSTs of catalog events, from the durable outbox.

    worker = DeliveryWorker(catalog, cfg.webhooks, metrics=m); await worker.start()
    signing.verify(secret, request.headers["X-Ovault-Signature"], raw_body)

The outbox rows are written by `catalog.EventRepository.append` in the event's
own transaction and claimed, in order per (webhook, job), by
`catalog.WebhookRepository.claim_due`; this package sends them
(`worker.DeliveryWorker`) and signs them (`signing`).
"""
from . import payload, signing
from .worker import DeliveryWorker

__all__ = ["DeliveryWorker", "payload", "signing"]
