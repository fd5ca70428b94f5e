"""The event envelope every topic shares, and strict parsing that dead-letters instead of guessing."""
from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timezone
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = "1.0"  # major.minor; minors are additive, a new major is dead-lettered by old consumers


def new_event_id() -> uuid.UUID:
    """UUIDv7 (RFC 9562): 48-bit unix-ms timestamp, version 7, 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Producer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    service: str
    version: str


def producer_for(service: str) -> Producer:
    """The producer stamp of a Hallmark service (`hallmark-<service>`, the package version)."""
    from hallmark import __version__

    return Producer(service=f"hallmark-{service}", version=__version__)


class Event(BaseModel):
    """Envelope fields; subclasses pin `event_type` and type `payload`."""

    model_config = ConfigDict(extra="forbid")
    event_type_name: ClassVar[str] = ""

    event_id: uuid.UUID = Field(default_factory=new_event_id)
    event_type: str
    schema_version: str = SCHEMA_VERSION
    request_id: str = Field(min_length=1, max_length=64)
    tenant_id: str = Field(min_length=1, max_length=64)
    occurred_at: datetime = Field(default_factory=utcnow)
    producer: Producer
    causation_id: uuid.UUID | None = None
    payload: Any

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must carry a timezone (UTC)")
        return value.astimezone(timezone.utc)

    @field_validator("schema_version")
    @classmethod
    def _known_major(cls, value: str) -> str:
        major = value.split(".", 1)[0]
        if major != SCHEMA_VERSION.split(".", 1)[0]:
            raise ValueError(f"unknown schema major version {value!r} (this consumer speaks {SCHEMA_VERSION})")
        return value

    def key(self) -> bytes:
        """Kafka key: the request id, so one request's events stay ordered on one partition."""
        return self.request_id.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def follow(self, cls: type["Event"], payload: BaseModel, producer: Producer) -> "Event":
        """A new event caused by this one, on the same request."""
        return cls(event_type=cls.event_type_name, request_id=self.request_id, tenant_id=self.tenant_id,
                   producer=producer, causation_id=self.event_id, payload=payload)


class PoisonMessage(Exception):
    """A message a stage cannot process; it goes to `dlq` with `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
