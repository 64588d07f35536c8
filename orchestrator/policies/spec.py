"""A policy as the API accepts it: validated once here, with messages that say what
to change (the API turns `Invalid` into a 422).

    spec = PolicySpec.from_json(body, default_timezone="UTC")
    merged = spec.patched(patch_body)           # PATCH: same checks on the result
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import Invalid
from .retention import Retention, RetentionError
from .schedule import Schedule

__all__ = ["PolicySpec", "Rules", "Notify", "NOTIFY_ON"]

NOTIFY_ON = ("failure", "success", "summary")
_FIELDS = {"name", "schedule", "timezone", "retention", "vm_ids", "rules", "window_minutes",
           "full_every_days", "target_id", "enabled", "notify"}
_RULE_FIELDS = {"tags", "cluster_ids", "name_regex", "exclude_name_regex"}
_EMAIL = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+$")
DEFAULT_WINDOW_MINUTES = 60


def _strings(v: Any, name: str, *, max_items: int = 1000, max_len: int = 200) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, (list, tuple)) or len(v) > max_items:
        raise Invalid(f"{name} must be a list of at most {max_items} strings")
    out = []
    for x in v:
        if not isinstance(x, str) or not x.strip() or len(x) > max_len:
            raise Invalid(f"{name} has an invalid item {str(x)[:50]!r} "
                          f"(non-empty strings of at most {max_len} characters)")
        if x not in out:
            out.append(x)
    return tuple(out)


_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _vm_ids(v: Any) -> tuple[str, ...]:
    ids = _strings(v, "vm_ids")
    for x in ids:
        if not _UUID.match(x):
            raise Invalid(f"vm_ids: {x[:50]!r} is not a VM id (a UUID)")
    return tuple(dict.fromkeys(x.lower() for x in ids))


def _regex(v: Any, name: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not v or len(v) > 500:
        raise Invalid(f"{name} must be a regular expression of 1 to 500 characters")
    try:
        re.compile(v)
    except re.error as e:
        raise Invalid(f"{name} {v!r} is not a valid regular expression: {e}") from None
    return v


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise Invalid(f"{name} must be an integer between {lo} and {hi}, got {v!r}")
    return v


@dataclass(frozen=True)
class Rules:
    """Dynamic membership: a VM matches when it has any of `tags`, is in any of
    `cluster_ids`, or its name matches `name_regex` (re.search); a VM whose name
    matches `exclude_name_regex` never matches. Empty rules match nothing."""
    tags: tuple[str, ...] = ()
    cluster_ids: tuple[str, ...] = ()
    name_regex: str | None = None
    exclude_name_regex: str | None = None

    @classmethod
    def from_json(cls, doc: Any) -> "Rules":
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise Invalid("rules must be an object")
        extra = set(doc) - _RULE_FIELDS
        if extra:
            raise Invalid(f"unknown rules fields: {', '.join(sorted(extra))}; "
                          f"allowed: {', '.join(sorted(_RULE_FIELDS))}")
        return cls(_strings(doc.get("tags"), "rules.tags"),
                   _strings(doc.get("cluster_ids"), "rules.cluster_ids"),
                   _regex(doc.get("name_regex"), "rules.name_regex"),
                   _regex(doc.get("exclude_name_regex"), "rules.exclude_name_regex"))

    @property
    def empty(self) -> bool:
        return not (self.tags or self.cluster_ids or self.name_regex)

    def to_dict(self) -> dict[str, Any]:
        return {"tags": list(self.tags), "cluster_ids": list(self.cluster_ids),
                "name_regex": self.name_regex, "exclude_name_regex": self.exclude_name_regex}


@dataclass(frozen=True)
class Notify:
    emails: tuple[str, ...] = ()
    on: tuple[str, ...] = ("failure",)

    @classmethod
    def from_json(cls, doc: Any) -> "Notify":
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise Invalid("notify must be an object {\"emails\": [...], \"on\": [...]}")
        extra = set(doc) - {"emails", "on"}
        if extra:
            raise Invalid(f"unknown notify fields: {', '.join(sorted(extra))}")
        emails = _strings(doc.get("emails"), "notify.emails", max_items=50, max_len=254)
        for e in emails:
            if not _EMAIL.match(e):
                raise Invalid(f"notify.emails: {e!r} is not an e-mail address")
        on = _strings(doc.get("on", ["failure"]), "notify.on", max_items=3)
        for o in on:
            if o not in NOTIFY_ON:
                raise Invalid(f"notify.on: {o!r} is not one of {', '.join(NOTIFY_ON)}")
        return cls(emails, on)

    def to_dict(self) -> dict[str, Any]:
        return {"emails": list(self.emails), "on": list(self.on)}


@dataclass(frozen=True)
class PolicySpec:
    name: str
    schedule: str
    timezone: str
    retention: Retention = field(default_factory=Retention)
    vm_ids: tuple[str, ...] = ()
    rules: Rules = field(default_factory=Rules)
    window_minutes: int = DEFAULT_WINDOW_MINUTES
    full_every_days: int | None = None
    target_id: uuid.UUID | None = None
    enabled: bool = True
    notify: Notify = field(default_factory=Notify)

    @classmethod
    def from_json(cls, body: Any, *, default_timezone: str = "UTC") -> "PolicySpec":
        if not isinstance(body, Mapping):
            raise Invalid("a policy must be a JSON object")
        extra = set(body) - _FIELDS
        if extra:
            raise Invalid(f"unknown fields: {', '.join(sorted(extra))}")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100 \
                or any(ord(c) < 32 for c in name):
            raise Invalid("name must be a non-empty string of at most 100 printable characters")
        tz = body.get("timezone") if body.get("timezone") is not None else default_timezone
        sched = Schedule.parse(body.get("schedule"), tz)
        try:
            retention = Retention.from_mapping(body.get("retention"))
        except RetentionError as e:
            raise Invalid(str(e)) from None
        target = body.get("target_id")
        if target is not None:
            try:
                target = uuid.UUID(target) if isinstance(target, str) else None
            except ValueError:
                target = None
            if target is None:
                raise Invalid("target_id must be a UUID")
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise Invalid("enabled must be true or false")
        full = body.get("full_every_days")
        return cls(
            name=name.strip(), schedule=sched.cron, timezone=str(sched.tz.key),
            retention=retention, vm_ids=_vm_ids(body.get("vm_ids")),
            rules=Rules.from_json(body.get("rules")),
            window_minutes=_int(body.get("window_minutes", DEFAULT_WINDOW_MINUTES),
                                "window_minutes", 1, 7 * 24 * 60),
            full_every_days=None if full is None else _int(full, "full_every_days", 1, 3650),
            target_id=target, enabled=enabled, notify=Notify.from_json(body.get("notify")))

    @property
    def schedule_obj(self) -> Schedule:
        return Schedule.parse(self.schedule, self.timezone)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "schedule": self.schedule, "timezone": self.timezone,
                "retention": self.retention.to_dict(), "vm_ids": list(self.vm_ids),
                "rules": self.rules.to_dict(), "window_minutes": self.window_minutes,
                "full_every_days": self.full_every_days,
                "target_id": None if self.target_id is None else str(self.target_id),
                "enabled": self.enabled, "notify": self.notify.to_dict()}

    def patched(self, patch: Any) -> "PolicySpec":
        """PATCH semantics: the given top-level fields replace the stored ones (a null
        resets an optional field to its default); the result is validated whole."""
        if not isinstance(patch, Mapping):
            raise Invalid("the body must be a JSON object")
        extra = set(patch) - _FIELDS
        if extra:
            raise Invalid(f"unknown fields: {', '.join(sorted(extra))}")
        doc = self.to_json()
        for k, v in patch.items():
            if v is None and k in ("name", "schedule"):
                raise Invalid(f"{k} cannot be null")
            if v is None:
                doc.pop(k, None)
            else:
                doc[k] = v
        return PolicySpec.from_json(doc, default_timezone=self.timezone)
