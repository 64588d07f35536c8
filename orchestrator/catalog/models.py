"""What the repositories return: frozen dataclasses, and the state names as enums.

The enum values are API (REST, websocket, webhooks). The job and machine states
come from the machine classes (statemachines/); the schema's CHECK constraints
are held to them by tests/integration/catalog/test_catalog_lifecycle.py.
"""
from __future__ import annotations

import dataclasses
import functools
import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Mapping, Sequence, TypeVar

from statemachines import JOB_STATES, MACHINES, BackupMachine, RestoreMachine
from statemachines import TERMINAL as _TERMINAL

T = TypeVar("T")


class JobKind(enum.StrEnum):
    """What a job does. Every machine kind (`statemachines.MACHINES`) is one."""
    BACKUP = "backup"
    RESTORE = "restore"
    # no VM machines: run by handlers registered with the job runner (policies/jobs.py)
    PRUNE = "prune"
    GC = "gc"
    VERIFY = "verify"  # orchestrator/jobs/verify.py


def _states(name: str, states: Sequence[str], doc: str) -> type[enum.StrEnum]:
    cls = enum.StrEnum(name, [(s.upper(), s) for s in states], module=__name__)
    cls.__doc__ = doc
    return cls


# The lifecycles are declared by the machines (statemachines/); these enums
# are derived from them, in the machines' order.
JobState = _states("JobState", JOB_STATES, "States of a job (statemachines/lifecycle.py).")
BackupState = _states("BackupState", BackupMachine.STATES,
                      "States of a BackupMachine (statemachines/backup.py).")
RestoreState = _states("RestoreState", RestoreMachine.STATES,
                       "States of a RestoreMachine (statemachines/restore.py).")

TERMINAL = frozenset(_TERMINAL)
TERMINAL_SQL = "(" + ", ".join(f"'{s}'" for s in _TERMINAL) + ")"  # for `state IN …`
MACHINE_STATES: Mapping[str, frozenset[str]] = {
    JobKind(kind): frozenset(m.STATES) for kind, m in MACHINES.items()
}


class BackupMode(enum.StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"


class BackupMethod(enum.StrEnum):
    CBT = "cbt"
    SNAPSHOT = "snapshot"


class BackupStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DELETED = "deleted"


class Consistency(enum.StrEnum):
    CRASH = "crash"
    FILESYSTEM = "filesystem"  # the engine froze the guest's file systems first


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Role(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


E = TypeVar("E", bound=enum.Enum)


def parse_enum(cls: type[E], value: Any, what: str) -> E:
    """`cls(value)`, or `Invalid` naming the allowed values."""
    try:
        return cls(value)
    except ValueError:
        from .errors import Invalid
        allowed = ", ".join(m.value for m in cls)
        raise Invalid(f"{what} must be one of {allowed}, got {value!r}") from None


def _uuid(v: Any) -> uuid.UUID | None:
    # asyncpg hands out its own UUID subclass; normalise for equality/hashing/json
    # (through its integer: parsing its text costs more, in lists of hundreds of rows).
    if v is None or type(v) is uuid.UUID:
        return v
    return uuid.UUID(int=v.int) if hasattr(v, "int") else uuid.UUID(str(v))


@functools.lru_cache(maxsize=None)
def _shape(cls) -> tuple[frozenset, tuple]:
    """A model's field names and its UUID id fields (computed once per class: lists
    of hundreds of rows convert each one)."""
    fields = dataclasses.fields(cls)
    return (frozenset(f.name for f in fields),
            tuple(f.name for f in fields if (f.name == "id" or f.name.endswith("_id"))
                  and f.type in ("uuid.UUID", "uuid.UUID | None")))


def _from_record(cls, rec: Mapping[str, Any], **extra: Any):
    names, uuids = _shape(cls)
    values = {k: rec[k] for k in rec.keys() if k in names}
    for name in uuids:
        if name in values:
            values[name] = _uuid(values[name])
    values.update(extra)
    return cls(**values)


@dataclass(frozen=True)
class NewMachine:
    """One VM of a job being created."""
    vm_id: str
    vm_name: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    backup_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Machine:
    id: uuid.UUID
    job_id: uuid.UUID
    kind: str
    vm_id: str
    vm_name: str | None
    state: str
    resources: dict
    context: dict
    disks: dict
    backup_id: uuid.UUID | None
    error: str | None
    bytes_total: int
    bytes_done: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    version: int

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    from_record = classmethod(_from_record)


@dataclass(frozen=True)
class Job:
    id: uuid.UUID
    kind: str
    state: str
    request: dict
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    attempts: int
    cancel_requested: bool
    machines: tuple[Machine, ...] = ()
    result: dict | None = None       # what a prune or gc job did

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    from_record = classmethod(_from_record)


@dataclass(frozen=True)
class BackupDisk:
    disk_id: str
    provisioned_size: int
    format: str                      # 'raw' | 'cow' (oVirt's disk formats)
    alias: str | None = None
    bytes_read: int = 0
    bytes_written: int = 0
    index_digest: str | None = None
    info: dict = field(default_factory=dict)

    from_record = classmethod(_from_record)


@dataclass(frozen=True)
class Backup:
    id: uuid.UUID
    vm_id: str
    vm_name: str | None
    job_id: uuid.UUID | None
    target_id: uuid.UUID | None
    mode: str
    method: str
    parent_id: uuid.UUID | None
    checkpoint_id: str | None
    status: str
    consistency: str | None
    created_at: datetime
    completed_at: datetime | None
    size_bytes: int
    new_bytes: int
    fallback_reason: str | None
    error: str | None
    config: dict
    disks: tuple[BackupDisk, ...] = ()
    protected: bool = False          # never pruned, not deletable until unmarked
    damaged: bool = False            # verify found damage on the target (see `damage`)
    damage: dict | None = None       # what verify found: damaged chunks with ranges, bad indexes
    verified_at: datetime | None = None

    from_record = classmethod(_from_record)


@dataclass(frozen=True)
class Target:
    id: uuid.UUID
    name: str
    url: str
    options: dict
    created_at: datetime

    from_record = classmethod(_from_record)


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    job_id: uuid.UUID | None
    payload: dict
    created_at: datetime

    from_record = classmethod(_from_record)


@dataclass(frozen=True)
class Webhook:
    id: uuid.UUID
    url: str
    events: tuple[str, ...]
    enabled: bool
    created_at: datetime
    secret: str = field(repr=False, default="")

    from_record = classmethod(_from_record)


@dataclass(frozen=True)
class Delivery:
    id: int
    webhook_id: uuid.UUID
    event_id: int
    attempt: int
    status: str
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    from_record = classmethod(_from_record)


@dataclass(frozen=True)
class DueDelivery:
    """A claimed delivery with everything the sender needs (no second query)."""
    delivery: Delivery
    url: str
    event: Event
    secret: str = field(repr=False, default="")


@dataclass(frozen=True)
class ApiToken:
    id: uuid.UUID
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool

    from_record = classmethod(_from_record)




@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; pass `next_cursor` back to get the next one."""
    items: Sequence[T]
    next_cursor: str | None
