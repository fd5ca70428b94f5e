"""Hallmark's event contracts: the envelope, one model per event type, the topic registry."""
from schemas.envelope import SCHEMA_VERSION, Event, PoisonMessage, Producer, new_event_id, producer_for
from schemas.events import (
    AssetPublished, AuditRecord, DeadLetter, Decision, EVENT_TYPES, GenerationSpec, ImageGenerated,
    ImageRef, ImageVerdict, JobCreated, Outcome, OutcomeStatus, PromptVerdict, RequestSubmitted,
    ReviewActivity, ReviewDecided, ReviewTaskCreated, parse_event,
)
from schemas.topics import TOPICS, Topic, topic_for

__all__ = [
    "SCHEMA_VERSION", "Event", "PoisonMessage", "Producer", "new_event_id", "parse_event", "producer_for",
    "AssetPublished", "AuditRecord", "DeadLetter", "Decision", "EVENT_TYPES", "GenerationSpec",
    "ImageGenerated", "ImageRef", "ImageVerdict", "JobCreated", "Outcome", "OutcomeStatus",
    "PromptVerdict", "RequestSubmitted", "ReviewActivity", "ReviewDecided", "ReviewTaskCreated",
    "TOPICS", "Topic", "topic_for",
]
