"""The topic registry: every topic, its partitions, retention and the event types it carries."""
from __future__ import annotations

import re
from dataclasses import dataclass

from schemas import events as ev
from schemas.envelope import Event

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Topic:
    name: str
    event_types: tuple[type[Event], ...]
    partitions: int = 3
    retention_ms: int = 7 * DAY_MS  # -1 keeps forever
    compacted: bool = False  # keep the latest record per key (cleanup.policy=compact)


TOPICS: dict[str, Topic] = {t.name: t for t in (
    Topic("requests", (ev.RequestSubmitted,)),
    Topic("prompt-verdicts", (ev.PromptVerdict,)),
    Topic("jobs", (ev.JobCreated,)),
    Topic("images", (ev.ImageGenerated,)),
    Topic("image-verdicts", (ev.ImageVerdict,)),
    Topic("review-tasks", (ev.ReviewTaskCreated,), retention_ms=30 * DAY_MS),
    Topic("review-decisions", (ev.ReviewDecided,), retention_ms=30 * DAY_MS),
    Topic("review-activity", (ev.ReviewActivity,), retention_ms=30 * DAY_MS),
    Topic("assets", (ev.AssetPublished,), retention_ms=-1),
    Topic("outcomes", (ev.Outcome,), retention_ms=30 * DAY_MS),
    Topic("audit", (ev.AuditRecord,), retention_ms=-1),
    Topic("audit-checkpoints", (ev.AuditCheckpoint,), retention_ms=-1, compacted=True),  # key: audit partition
    Topic("dlq", (ev.DeadLetter,), retention_ms=30 * DAY_MS),
)}


TENANT_SUFFIX = r"[a-z0-9][a-z0-9-]{0,47}"  # `requests.<tenant>`: one submission topic per tenant


def topic_named(name: str) -> Topic:
    """The registry entry of a topic name; a tenant's `requests.<tenant>` is a `requests` topic."""
    if name in TOPICS:
        return TOPICS[name]
    base, _, tenant = name.partition(".")
    if base == "requests" and re.fullmatch(TENANT_SUFFIX, tenant):
        return TOPICS["requests"]
    raise KeyError(f"unknown topic {name!r}")


def topic_for(event_type: str) -> Topic:
    """The topic an event type is published on."""
    for topic in TOPICS.values():
        if any(cls.event_type_name == event_type for cls in topic.event_types):
            return topic
    raise KeyError(f"no topic carries event type {event_type!r}")
