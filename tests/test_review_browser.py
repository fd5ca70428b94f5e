"""The reviewer console in a real headless Chromium (Debian's, driven by Playwright) against the real broker."""
from __future__ import annotations

import concurrent.futures
import io
import shutil
import time
import uuid

import pytest

from schemas import ImageGenerated, ImageVerdict
from schemas.events import (Decision, GateResult, GenerationSpec, ImageGeneratedPayload, ImageRef,
                            ImageVerdictPayload)
from tests.test_review_console import PASSWORD, start_console, wait_task
from tests.test_spine_flow import REVIEW, TEST_PRODUCER, kafka_request

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = '<script>window.__xss = 1; alert(1)</script><img src=x onerror="window.__xss = 2">'


def off_loop(fn, *args, **kwargs):
    """Run a spine helper (they use asyncio.run) outside Playwright's event loop, which owns this thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.fail("Debian Chromium is missing: apt-get install -y chromium (./scripts/setup.sh installs it)")
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def console(spine):
    return start_console(spine)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def arrived(page, pattern: str) -> None:
    """Wait for the navigation a click started; on the wrong page, fail with what the console said."""
    try:
        page.wait_for_url(pattern)
    except Exception:
        raise AssertionError(f"expected {pattern}, at {page.url}: {page.inner_text('main')[:500]}") from None


def history_has(spine, request_id: str, event_type: str, timeout: float = 90.0) -> None:
    """Wait until the review-queue stage indexed the audit record of an `event_type` event of the request."""
    from sqlmodel import Session, select

    from hallmark.db import engine_for
    from review.queue import ReviewHistoryRow

    engine, deadline = engine_for(spine.settings.db_url), time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as session:
            if session.exec(select(ReviewHistoryRow).where(ReviewHistoryRow.request_id == request_id,
                                                           ReviewHistoryRow.source_event_type == event_type)).first():
                return
        time.sleep(0.5)
    raise AssertionError(f"no audited {event_type} for {request_id} in the history after {timeout:.0f}s")


def log_in(page, base: str, name: str) -> None:
    page.goto(f"{base}/")
    assert "/login" in page.url  # not logged in yet: sent to the login page
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_selector("#who")


def image_review_request(spine, category: str, prompt: str):
    """A request whose image the output gate was unsure about: a real PNG in the blob store, its `image.generated`
    and a `review` verdict."""
    from PIL import Image, ImageDraw

    from provenance.store import BlobStore

    image = Image.new("RGB", (256, 256), (40, 60, 160))
    ImageDraw.Draw(image).ellipse((64, 32, 192, 160), fill=(220, 30, 30))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    sha = BlobStore(spine.settings.blob_dir).put(buf.getvalue())
    spec = GenerationSpec(prompt=prompt, seed=3, steps=4, width=256, height=256)
    verdict = GateResult(decision=Decision.REVIEW, stage="nsfw", categories=[category], score=0.52,
                         reasons=["score 0.52 in the review band <b>0.45–0.85</b>"], policy_id="hallmark-default",
                         policy_version="1.0.0")
    images = [ImageRef(sha256=sha, index=0, width=256, height=256, seed=3)]
    generated = ImageGenerated(event_type=ImageGenerated.event_type_name, request_id=f"browser-{uuid.uuid4().hex}",
                               tenant_id="browser-tenant", producer=TEST_PRODUCER, payload=ImageGeneratedPayload(
                                   spec=spec, policy_version="1.0.0", model_id="shapes-ldm", images=images,
                                   generation_ms=1.0))
    return generated, generated.follow(ImageVerdict, ImageVerdictPayload(spec=spec, model_id="shapes-ldm",
                                                                         images=images, verdict=verdict),
                                       TEST_PRODUCER)


def test_log_in_claim_next_reveal_and_approve_reaches_published(spine, console, page, tmp_path):
    category = f"nudity-{uuid.uuid4().hex[:6]}"  # its own queue, so "claim next" is this task
    generated, event = image_review_request(spine, category, "a red circle above a blue square")
    off_loop(spine.produce_event, generated)  # as the generation stage records it: the publisher signs only that
    off_loop(spine.produce_event, event)
    task = off_loop(wait_task, spine, event.request_id, audited=True)
    log_in(page, console, "ann")
    row = page.locator(f'tr[data-queue="{category}"]')
    assert row.locator(".count").inner_text() == "1"
    row.locator("button.claim-queue").click()
    arrived(page, f"**/tasks/{task.task_id}")
    assert page.inner_text("#queue") == category and page.inner_text("#holder").startswith("ann")
    image = page.locator("#image-0")
    image.wait_for()
    page.wait_for_function("() => document.getElementById('image-0').naturalWidth > 0")  # a function: CSP bars eval
    assert "blurred" in image.get_attribute("class")
    assert "blur" in image.evaluate("img => getComputedStyle(img).filter")
    assert "grayscale" in image.evaluate("img => getComputedStyle(img).filter")
    assert page.inner_text("#prompt") == "a red circle above a blue square"
    page.click("#reveal-0")
    page.wait_for_function("() => { const i = document.getElementById('image-0');"
                           " return i.classList.contains('revealed') && i.complete && i.naturalWidth === 256"
                           " && getComputedStyle(i).filter === 'none' }")  # once the un-blur transition ended
    assert "variant=full" in image.get_attribute("src")
    page.screenshot(path=str(tmp_path / "revealed.png"), full_page=True)
    page.fill("#reason", "abstract shapes, nothing explicit")
    page.click("#approve")
    arrived(page, "**/?msg=decided")
    assert "Decision sent" in page.inner_text("#message")
    page.screenshot(path=str(tmp_path / "queues-after-approve.png"), full_page=True)
    outcome = off_loop(spine.outcome, event.request_id)
    assert outcome.payload.status.value == "published", outcome.payload.reason
    assert outcome.payload.asset_ids and off_loop(spine.events, "assets", event.request_id)
    (decision,) = off_loop(spine.events, "review-decisions", event.request_id)
    assert (decision.payload.reviewer, decision.payload.decision, decision.payload.gate) == ("ann", "approve", "image")
    from tests.test_review_console import audited_activity

    assert off_loop(audited_activity, spine, event.request_id, "image_revealed", "ann")
    assert (tmp_path / "revealed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not page.dialogs


def test_script_in_a_prompt_and_a_reason_renders_as_text(spine, console, page, tmp_path):
    prompt = f"{XSS} {REVIEW}"
    event = kafka_request(prompt, seed=31)
    off_loop(spine.produce_event, event)
    task = off_loop(wait_task, spine, event.request_id, audited=True)
    log_in(page, console, "boss")  # an admin opens any task, then claims it from its page
    page.goto(f"{console}/tasks/{task.task_id}")
    page.click("#claim-this")
    page.wait_for_selector("#decide-form")
    assert page.text_content("#prompt") == prompt
    assert page.locator("#prompt script, #prompt img").count() == 0
    assert page.locator("script:not([src])").count() == 0
    page.fill("#reason", XSS)
    page.click("#reject")
    arrived(page, "**/?msg=decided")
    assert off_loop(spine.outcome, event.request_id).payload.status.value == "rejected"
    history_has(spine, event.request_id, "review.decided")  # the history shows what the audit log holds
    page.goto(f"{console}/tasks/{task.task_id}")
    assert f"boss: reject — {XSS}" in page.inner_text("#history")
    assert page.locator("#history script, #history img").count() == 0
    page.screenshot(path=str(tmp_path / "xss-as-text.png"), full_page=True)
    assert page.evaluate("window.__xss === undefined") and not page.dialogs
