"""The whole secure portal journey in Chromium, with real mail on loopback: a PHI
message is handed to the portal, the notice (no PHI) reaches an aiosmtpd receiver,
the patient opens its link on a phone, asks for a code, reads the code from the
delivered email, reads the message, downloads the attachment and replies; the sender
gets a "reply waiting" email (no PHI), signs in to the console and reads the reply.
Screenshots of each step go to the artifacts directory."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from carepost.audit.service import SYSTEM
from carepost.core.database import utcnow
from carepost.core.runtime import Runtime
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Message
from carepost.messages.schemas import MessageIn
from carepost.messages.sending import SendContext, SendLimits, send_messages
from carepost.portal.handoff import hand_to_portal
from tests.canaries import phi_value
from tests.e2e.conftest import open_page, sign_in
from tests.messages.smtp_sink import SmtpSink, delivering_to
from tests.web.people import create_person

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}
LINK = re.compile(r"https?://[^/\s]+(/s/[A-Za-z0-9_-]+)")
CONSOLE_LINK = re.compile(r"https?://[^/\s]+(/portal/messages/[0-9a-f-]+)")
CODE = re.compile(r"Your code is (\d{6})")


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    running = SmtpSink().start()
    yield running
    running.stop()


@pytest.fixture
def delivering(runtime: Runtime, sink: SmtpSink) -> Runtime:
    return delivering_to(runtime, sink)


def shoot(page: Page, screenshots, name: str) -> None:
    page.screenshot(path=str(screenshots / f"portal-{name}.png"), full_page=True)


def _text_of(received) -> str:
    body = received.message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def _mail_to(runtime: Runtime, sink: SmtpSink, address: str, count: int):
    """Deliver what is due, then the newest email to ``address`` (the ``count``-th)."""
    deliver_due_messages(runtime, budget_seconds=30)
    mails = [r for r in sink.received if address in r.recipients]
    assert len(mails) == count, [r.recipients for r in sink.received]
    return mails[-1]


def test_patient_picks_up_reads_downloads_and_replies_sender_reads_the_reply(
    page: Page, chromium, live_server, runtime, make_tenant, delivering, sink, screenshots
):
    tenant = make_tenant("Harbor Health")
    tenant_row, keys = tenant
    address = f"{phi_value('mail').lower()}@patients.example"
    name = phi_value("name")
    subject = f"Biopsy results for {name}"
    report = f"Pathology report of {name}: benign.".encode()
    request = MessageIn.model_validate(
        {
            "to": address,
            "from": "care@clinic.example",
            "subject": subject,
            "html": f"<h2>Dear {name}</h2><p>Your biopsy was <strong>benign</strong>.</p>",
            "text": f"Dear {name}, your biopsy was benign.",
            "purpose": "transactional",
            "attachments": [
                {
                    "filename": "report.txt",
                    "content_type": "text/plain",
                    "content": base64.b64encode(report).decode(),
                }
            ],
        }
    )
    with runtime.bound_session(keys) as session:
        [sent] = send_messages(
            session, keys, [(request, None)], SendContext(SYSTEM, SendLimits(10**6, ""))
        )
        message = session.get(Message, sent.id)
        assert message is not None
        # What the protection stage does: hand over, then mark the original delivered.
        hand_to_portal(session, message, reasons=["dlp:diagnosis"], now=utcnow())
        message.state = "delivered"

    # 1. The notice reaches the patient's mailbox: no PHI, a link.
    notice = _mail_to(delivering, sink, address, 1)
    notice_text = _text_of(notice)
    assert "Harbor Health" in str(notice.message["Subject"])
    for phi in (name, subject, "biopsy", "report.txt"):
        assert phi not in notice_text and phi not in str(notice.message["Subject"])
    [path] = LINK.findall(notice_text)

    page.set_viewport_size(PHONE)
    page.goto(path)
    expect(page.get_by_role("heading", name="You have a secure message")).to_be_visible()
    expect(page.get_by_text("Harbor Health").first).to_be_visible()
    assert name not in page.content()
    shoot(page, screenshots, "1-notice-link-opened")

    # 2. Ask for a code; it arrives by email (no PHI either).
    page.get_by_role("button", name="Email me a code").click()
    expect(page.get_by_role("status")).to_contain_text("We emailed you a 6-digit code")
    shoot(page, screenshots, "2-code-requested")
    code_mail = _mail_to(delivering, sink, address, 2)
    code_text = _text_of(code_mail)
    assert name not in code_text and subject not in str(code_mail.message["Subject"])
    [code] = CODE.findall(code_text)

    # A wrong code first: counted, explained.
    wrong = "000000" if code != "000000" else "111111"
    page.get_by_label("Code from the email").fill(wrong)
    page.get_by_role("button", name="Open the message").click()
    expect(page.get_by_role("alert")).to_contain_text("not right")
    shoot(page, screenshots, "3-wrong-code")

    # 3. The right code opens the message (sanitized HTML).
    page.get_by_label("Code from the email").fill(code)
    page.get_by_role("button", name="Open the message").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(subject)
    expect(page.get_by_text("benign").first).to_be_visible()
    shoot(page, screenshots, "4-message-read")

    # 4. Download the attachment.
    with page.expect_download() as download_info:
        page.get_by_role("link", name="report.txt").click()
    download = download_info.value
    saved = screenshots / f"portal-download-{uuid.uuid4().hex[:6]}.txt"
    download.save_as(str(saved))
    assert saved.read_bytes() == report
    saved.unlink()

    # 5. Reply securely.
    reply = f"Thank you. {phi_value('reply')} - can I call tomorrow?"
    page.get_by_label("Your reply").fill(reply)
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_role("status")).to_contain_text("Your reply was sent securely")
    shoot(page, screenshots, "5-replied")

    # 6. The sender is told (no PHI) and reads the reply in the console.
    told = _mail_to(delivering, sink, "care@clinic.example", 1)
    told_text = _text_of(told)
    for phi in (name, subject, reply, address):
        assert phi not in told_text and phi not in str(told.message["Subject"])
    [console_path] = CONSOLE_LINK.findall(told_text)

    sender = create_person(runtime, tenant, "marketer", name="Sam Sender")
    context, console = open_page(chromium, live_server)
    try:
        sign_in(console, tenant_row.slug, sender.email, sender.password)
        expect(console.get_by_role("navigation", name="Console")).to_be_visible()
        console.get_by_role("navigation", name="Console").get_by_role(
            "link", name="Secure portal"
        ).click()
        expect(console.get_by_role("heading", level=1)).to_have_text("Secure portal")
        expect(console.locator("#portal-items tbody tr")).to_have_count(1)
        shoot(console, screenshots, "6-console-list")
        console.goto(console_path)
        events = console.locator("#portal-events")
        for label in ("Code emailed", "Wrong code", "Opened", "Attachment downloaded", "Replied"):
            expect(events).to_contain_text(label)
        assert reply not in console.content()
        console.get_by_role("button", name="Read replies").click()
        expect(console.locator(".reply-text")).to_have_text(reply)
        shoot(console, screenshots, "7-console-reply-read")
        assert not console.problems.messages, console.problems.messages
    finally:
        context.close()
