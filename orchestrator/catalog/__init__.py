"""The catalog: PostgreSQL through asyncpg (architecture §5).

    pg = EmbeddedPostgres(state_dir); await pg.start()      # when no DSN is configured
    pool = await connect(dsn or pg.dsn)
    await migrate(pool)
    catalog = Catalog(pool)

Repositories return frozen dataclasses (`models`) and raise only `CatalogError`s.
"""
from .backups import BackupRepository
from .catalog import Catalog
from .db import Executor, connect
from .embedded import EmbeddedPostgres
from .errors import (CatalogError, Conflict, EmbeddedPostgresError, Invalid, LeaseLost,
                     MigrationError, NotFound, Retryable, Unavailable)
from .events import CHANNEL, EventListener, EventRepository
from .jobs import JobRepository, rollup_state
from .schema import migrate
from .models import (TERMINAL, ApiToken, Backup, BackupDisk, BackupMethod, BackupMode,
                     BackupState, BackupStatus, Consistency, Delivery, DeliveryStatus,
                     DueDelivery, Event, Job, JobKind, JobState, Machine, NewMachine, Page,
                     RestoreState, Role, Target, Webhook)
from .policies import Policy, PolicyRepository, Tick
from .targets import TargetRepository
from .tokens import TokenRepository
from .webhooks import WebhookRepository, backoff_delay

__all__ = [
    # running and reaching the database
    "EmbeddedPostgres", "connect", "migrate", "Executor", "Catalog",
    # repositories
    "JobRepository", "BackupRepository", "EventRepository", "EventListener", "CHANNEL",
    "WebhookRepository", "TokenRepository", "TargetRepository", "PolicyRepository",
    # pure helpers
    "rollup_state", "backoff_delay",
    # models
    "Job", "Machine", "NewMachine", "Backup", "BackupDisk", "Target", "Event", "Webhook",
    "Delivery", "DueDelivery", "ApiToken", "Page", "TERMINAL", "Policy", "Tick",
    "JobKind", "JobState", "BackupState", "RestoreState", "BackupMode", "BackupMethod",
    "BackupStatus", "Consistency", "DeliveryStatus", "Role",
    # errors
    "CatalogError", "Conflict", "Invalid", "NotFound", "Retryable", "Unavailable", "LeaseLost",
    "MigrationError", "EmbeddedPostgresError",
]
