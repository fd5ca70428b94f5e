"""The console's actions, shared by the HTML pages and the JSON API; each view and change is an audited event."""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Callable

from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from hallmark.config import HallmarkConfig
from hallmark.db import create_tables, engine_for
from hallmark.tenants import tenant_keys
from hallmark.web import HttpError
from provenance.store import BlobStore
from review.claims import Claim, ClaimError, ClaimStore
from review.events import activity_event, decision_event
from review.queue import SENIOR, TABLES, ReviewHistoryRow, ReviewQueueRow
from review_ui.login_throttle import LoginThrottle, ThrottleConfig
from review_ui.sessions import SessionStore
from review_ui.users import User, UserStore
from streams.kafkaio import EventSender, read_event_at

DECISIONS = ("approve", "reject", "escalate")
MAX_REASON = 2000


@dataclass(frozen=True)
class ConsoleConfig:
    lease_s: float = 900.0
    session_idle_s: float = 1800.0
    session_absolute_s: float = 12 * 3600.0
    max_body: int = 64 * 1024
    secure_cookies: bool = True  # only `serve --insecure-cookies` (plain-HTTP hosts other than localhost) clears it
    login_throttle: ThrottleConfig = field(default_factory=ThrottleConfig)


ConsoleError = HttpError  # a refused action: HTTP status and a reason safe to show


@dataclass
class TaskView:
    task: ReviewQueueRow
    queue: str
    claim: Claim | None
    holder: str | None
    decided: str | None
    prompt: str | None
    negative_prompt: str | None
    prompt_note: str
    reasons: list[str]
    categories: list[str]
    images: list[str]
    history: list[ReviewHistoryRow] = field(default_factory=list)

    def as_json(self) -> dict:
        t = self.task
        return {"task_id": t.task_id, "request_id": t.request_id, "tenant_id": t.tenant_id, "gate": t.gate,
                "queue": self.queue, "category": t.category, "categories": self.categories, "severity": t.severity,
                "reasons": self.reasons, "score": t.score, "verdict_stage": t.verdict_stage, "policy_id": t.policy_id,
                "policy_version": t.policy_version, "created_at": t.created_at, "sla_deadline": t.sla_deadline,
                "holder": self.holder, "decided": self.decided,
                "claim": {"claim_token": self.claim.token, "lease_expires": self.claim.lease_expires}
                if self.claim else None,
                "prompt": self.prompt, "negative_prompt": self.negative_prompt, "prompt_note": self.prompt_note,
                "images": [{"index": i, "blurred": f"/api/v1/tasks/{t.task_id}/images/{i}",
                            "full": f"/api/v1/tasks/{t.task_id}/images/{i}?variant=full"}
                           for i in range(len(self.images))],
                "history": [{"at": h.occurred_at, "topic": h.source_topic, "event_type": h.source_event_type,
                             "producer": h.producer, "summary": h.summary} for h in self.history]}


class Console:
    """Everything the console does, over the shared SQL database and the broker."""

    def __init__(self, settings: HallmarkConfig, config: ConsoleConfig, clock: Callable[[], float] = time.time):
        self.settings, self.config, self.clock = settings, config, clock
        self.engine = engine_for(settings.db_url)
        create_tables(self.engine, TABLES)  # usable before the projector first ran
        self.claims = ClaimStore(self.engine, config.lease_s, clock)
        self.users = UserStore(self.engine)
        self.sessions = SessionStore(self.engine, config.session_idle_s, config.session_absolute_s, clock)
        self.sender = EventSender(settings.kafka_client())
        self.prompt_keys = tenant_keys(settings)
        self.blobs = BlobStore(settings.blob_dir)
        self.throttle = LoginThrottle(self.engine, config.login_throttle, clock)

    def authenticate(self, name: str, password: str, client: str) -> User | None:
        """The user, or None for a wrong name or password; 429 once this account or client failed too often."""
        wait = self.throttle.retry_after(name, client)
        if wait:
            raise ConsoleError(429, f"too many failed logins; try again in {wait} s", {"Retry-After": str(wait)})
        user = self.users.authenticate(name, password)
        if user is None:
            self.throttle.failed(name, client)
        else:
            self.throttle.succeeded(name)
        return user

    # ---- reads --------------------------------------------------------------------------------------------

    def task_row(self, task_id: str) -> ReviewQueueRow:
        if len(task_id) > 64:
            raise ConsoleError(404, "no such review task")
        with Session(self.engine) as session:
            row = session.get(ReviewQueueRow, task_id)
        if row is None:
            raise ConsoleError(404, f"no review task {task_id}")
        return row

    def queues(self):
        return self.claims.summaries()

    def my_tasks(self, user: User):
        return self.claims.open_tasks(holder=user.name)

    def _state(self, row: ReviewQueueRow) -> tuple[str, str | None, str | None]:
        """(queue, live holder, decision) with this console's own not-yet-projected changes folded in."""
        claim = self.claims.claim_of(row.task_id)
        decided = row.decision or (claim.decided if claim else None)
        escalated = row.escalated_at is not None or bool(claim and claim.escalated)
        live = claim.holder if claim and claim.holder and claim.lease_expires > self.clock() and not decided else None
        return (SENIOR if escalated else row.category), live, decided

    def _may_open(self, user: User, row: ReviewQueueRow) -> Claim | None:
        """Reviewers open only tasks they hold; admins open any. Returns the caller's live claim, if any."""
        claim = self.claims.live_claim(user.name, row.task_id)
        if claim is None and not user.is_admin:
            raise ConsoleError(403, "claim this task before opening it")
        return claim

    async def view(self, user: User, task_id: str) -> TaskView:
        """The item view; audited (who, which task, what was shown) before anything is returned."""
        row = await run_in_threadpool(self.task_row, task_id)
        claim = await run_in_threadpool(self._may_open, user, row)
        queue, holder, decided = await run_in_threadpool(self._state, row)
        history = await run_in_threadpool(self._history, row.request_id)
        prompt, negative, note = None, None, "prompts are shown only to reviewers with prompt access"
        if user.prompt_access and (claim or user.is_admin):
            prompt, negative, note = self._prompt(row, history)
        images = json.loads(row.image_sha256s)
        shown = ["reasons", "history"] + (["prompt"] if prompt is not None else []) \
            + [f"image:{i}:blurred" for i in range(len(images))]
        await self._audit(row, "viewed", user, shown)
        return TaskView(row, queue, claim, holder, decided, prompt, negative, note, json.loads(row.reasons),
                        json.loads(row.categories), images, history)

    def _history(self, request_id: str) -> list[ReviewHistoryRow]:
        with Session(self.engine) as session:
            return list(session.exec(select(ReviewHistoryRow).where(ReviewHistoryRow.request_id == request_id)
                                     .order_by(ReviewHistoryRow.occurred_at, ReviewHistoryRow.audit_partition,
                                               ReviewHistoryRow.audit_offset)).all())

    def _prompt(self, row: ReviewQueueRow, history: list[ReviewHistoryRow]) -> tuple[str | None, str | None, str]:
        """Open the task's sealed prompts server-side with the tenant's key (older tasks: the audit's ciphertext)."""
        from cryptography.exceptions import InvalidTag

        from hallmark.sealing import unseal
        from hallmark.tenant_keys import Shredded
        from schemas.events import SealedText

        sealed = {name: SealedText.model_validate(v) for name, v in json.loads(row.sealed_prompts or "{}").items()}
        if sealed:
            try:
                texts = {name: unseal(box, self.prompt_keys.private(row.tenant_id, box.key_id), row.tenant_id,
                                      row.request_id, name) for name, box in sealed.items()}
            except Shredded:
                return None, None, "the prompt was crypto-shredded: its tenant's keys have been deleted"
            except InvalidTag:
                return None, None, "the prompt cannot be opened with its tenant's key"
            return texts.get("prompt"), texts.get("negative_prompt") or None, ""
        return self._audited_prompt(row, history)

    def _audited_prompt(self, row: ReviewQueueRow, history: list[ReviewHistoryRow]):
        """Tasks from before prompts were sealed: the audit's AES-GCM ciphertext (the task's own record first)."""
        from cryptography.exceptions import InvalidTag

        from streams.auditlog import AuditKeys, decrypt_prompts

        records = sorted((h for h in history if h.prompt_ciphertext),
                         key=lambda h: h.source_event_id != row.task_event_id)
        if not records:
            return None, None, "the prompt is not in the audit log yet; reload in a moment"
        try:
            keys = AuditKeys.load(self.settings.keys_dir, create=False)
            prompts = decrypt_prompts(keys, records[0].prompt_ciphertext, (records[0].source_event_id or "").encode())
        except FileNotFoundError:
            return None, None, "the audit keys are missing on this host"
        except PermissionError as exc:
            return None, None, str(exc)
        except (InvalidTag, ValueError):
            return None, None, "the prompt cannot be decrypted with the current reviewer key (crypto-shredded)"
        return prompts.get("prompt"), prompts.get("negative_prompt") or None, ""

    async def image(self, user: User, task_id: str, index: int, full: bool) -> bytes:
        """A task's image as PNG: blurred and grayscale unless `full` (the reveal, which is audited)."""
        row = await run_in_threadpool(self.task_row, task_id)
        await run_in_threadpool(self._may_open, user, row)
        shas = json.loads(row.image_sha256s)
        if not 0 <= index < len(shas):
            raise ConsoleError(404, "no such image on this task")
        try:
            data = await run_in_threadpool(self.blobs.get, shas[index])
        except (FileNotFoundError, ValueError):
            raise ConsoleError(404, "the image is not in the blob store") from None
        if full:
            await self._audit(row, "image_revealed", user, [f"image:{index}:full"])
            return data
        return await run_in_threadpool(blurred, data)

    # ---- changes ------------------------------------------------------------------------------------------

    async def claim_next(self, user: User, queue: str | None) -> Claim | None:
        claim = await self._claims(self.claims.claim_next, user.name, user.senior, queue)
        if claim is not None:
            await self._audited_claim(claim, user, "claimed", f"next in {queue or 'any queue'}")
        return claim

    async def claim(self, user: User, task_id: str) -> Claim:
        claim = await self._claims(self.claims.claim, user.name, user.senior, task_id)
        await self._audited_claim(claim, user, "claimed", "by id")
        return claim

    async def release(self, user: User, task_id: str) -> None:
        row = await run_in_threadpool(self.task_row, task_id)
        await self._claims(self.claims.release, user.name, task_id)
        await self._audit(row, "released", user, [])

    async def reassign(self, admin: User, task_id: str, to: str) -> Claim:
        if not admin.is_admin:
            raise ConsoleError(403, "only admins reassign tasks")
        target = await run_in_threadpool(self.users.get, to)
        if target is None:
            raise ConsoleError(422, f"no active user {to!r}")
        row = await run_in_threadpool(self.task_row, task_id)
        claim = await self._claims(self.claims.reassign, task_id, target.name, target.senior)
        await self._audit(row, "reassigned", admin, [], detail=f"to {target.name}")
        return claim

    async def decide(self, user: User, task_id: str, decision: str, reason: str, token: str) -> str:
        """Send the decision as a `review-decisions` event under the caller's live claim; returns its event id."""
        reason = (reason or "").strip()
        if decision not in DECISIONS:
            raise ConsoleError(422, f"decision must be one of {', '.join(DECISIONS)}")
        if not reason or len(reason) > MAX_REASON:
            raise ConsoleError(422, f"a reason of 1–{MAX_REASON} characters is required")
        row = await run_in_threadpool(self.task_row, task_id)
        if self.claims.live_claim(user.name, task_id) is None or not token:
            raise ConsoleError(409, "you do not hold a live claim on this task (claim it first)")
        try:
            task = await read_event_at(self.settings.kafka_client(), "review-tasks", row.task_partition,
                                       row.task_offset)
        except LookupError as exc:
            raise ConsoleError(410, str(exc)) from None
        except Exception as exc:
            raise ConsoleError(503, f"the broker is unavailable ({exc.__class__.__name__})") from None
        event = decision_event(task, decision, user.name, reason)
        before = await self._claims(self.claims.begin_decision, user.name, task_id, token, decision)
        try:
            await self.sender.send(event)
        except Exception as exc:
            await run_in_threadpool(self.claims.undo_decision, before)
            raise ConsoleError(503, f"the decision could not be sent ({exc.__class__.__name__}); try again") from None
        return str(event.event_id)

    # ---- plumbing -----------------------------------------------------------------------------------------

    async def _claims(self, fn, *args):
        try:
            return await run_in_threadpool(fn, *args)
        except ClaimError as exc:
            raise ConsoleError(exc.status, exc.reason) from None

    async def _audited_claim(self, claim: Claim, user: User, action: str, detail: str) -> None:
        row = await run_in_threadpool(self.task_row, claim.task_id)
        try:
            await self._audit(row, action, user, [], detail)
        except ConsoleError:
            await run_in_threadpool(self.claims.release, user.name, claim.task_id)  # unaudited claims don't stand
            raise

    async def _audit(self, row: ReviewQueueRow, action: str, user: User, shown: list[str], detail: str = "") -> None:
        """Fail closed: if the activity cannot reach the broker, the caller gets 503 and sees nothing."""
        event = activity_event(row.request_id, row.tenant_id, row.task_id, row.task_event_id, action, user.name,
                               shown, detail)
        try:
            await self.sender.send(event)
        except Exception as exc:
            raise ConsoleError(503, f"the audit trail is unavailable ({exc.__class__.__name__})") from None


def blurred(png: bytes) -> bytes:
    """Grayscale and strongly blurred, so nothing is seen until the reviewer chooses to look."""
    from PIL import Image, ImageFilter

    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("L")
        small.thumbnail((256, 256))
        out = small.filter(ImageFilter.GaussianBlur(radius=max(small.size) / 12))
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()
