"""The portal reply with files, in Chromium: a message sent with the sender's identity
question is handed to the portal; the patient, on a phone, opens the link, answers the
question, tries a file type that is not allowed (the error is tied to the field), then
replies with a PDF and a text file and sees what they sent; the sender signs in to the
console, sees the files' types and sizes, reads the reply and downloads a file
(audited). Screenshots of each step go to the artifacts directory."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.core.database import utcnow
from carepost.messages.models import Message
from carepost.messages.schemas import MessageIn
from carepost.messages.sending import SendContext, SendLimits, send_messages
from carepost.portal.handoff import hand_to_portal
from tests.canaries import phi_value, secret_value
from tests.e2e.conftest import open_page, sign_in
from tests.portal.conftest import LINK, notices
from tests.web.people import create_person

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def shoot(page: Page, screenshots, name: str) -> None:
    page.screenshot(path=str(screenshots / f"portal2-{name}.png"), full_page=True)


def test_patient_replies_with_files_and_the_sender_downloads_one(
    page: Page, chromium, live_server, runtime, make_tenant, screenshots
):
    tenant = make_tenant("Lakeside Clinic")
    tenant_row, keys = tenant
    name = phi_value("name")
    subject = f"Scan results for {name}"
    answer = secret_value(f"Maple {uuid.uuid4().hex[:4]}")
    request = MessageIn.model_validate(
        {
            "to": f"{phi_value('mail').lower()}@patients.example",
            "from": "care@clinic.example",
            "subject": subject,
            "text": f"Dear {name}, please send us your insurance card and the referral.",
            "portal": {"question": "Which street did you grow up on?", "answer": answer},
        }
    )
    with runtime.bound_session(keys) as session:
        [sent] = send_messages(
            session, keys, [(request, None)], SendContext(SYSTEM, SendLimits(10**6, ""))
        )
        message = session.get(Message, sent.id)
        assert message is not None
        item_id = hand_to_portal(session, message, reasons=["dlp:name"], now=utcnow())
        message.state = "delivered"
    [notice] = notices(runtime, keys, item_id)
    [path] = LINK.findall(notice.body["text"])

    # 1. The patient answers the sender's question instead of waiting for a code.
    page.set_viewport_size(PHONE)
    page.goto(path)
    expect(page.get_by_role("heading", name="Or answer the sender's question")).to_be_visible()
    page.get_by_label("Which street did you grow up on?").fill(answer.upper())
    shoot(page, screenshots, "1-question")
    page.get_by_role("button", name="Open with my answer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(subject)

    # 2. A file type that is not allowed: the error is tied to the file field.
    reply_box = page.get_by_label("Your reply")
    files = page.get_by_label("Attach files (optional)")
    expect(files).to_have_attribute("aria-describedby", "files-hint")
    reply_text = f"Here they are. {phi_value('reply')}"
    reply_box.fill(reply_text)
    files.set_input_files(
        [{"name": "tool.exe", "mimeType": "application/octet-stream", "buffer": b"MZ\x90\x00"}]
    )
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator("#files-error")).to_contain_text("is not a PDF")
    files = page.get_by_label("Attach files (optional)")
    expect(files).to_have_attribute("aria-invalid", "true")
    expect(files).to_have_attribute("aria-describedby", "files-hint files-error")
    expect(page.get_by_label("Your reply")).to_have_value(reply_text)
    shoot(page, screenshots, "2-file-refused")

    # 3. A PDF and a text file: sent, and listed back to the patient.
    card = f"Insurance card of {name}".encode()
    files.set_input_files(
        [
            {"name": "referral.pdf", "mimeType": "application/pdf", "buffer": PDF},
            {"name": "../card <front>.txt", "mimeType": "text/plain", "buffer": card},
        ]
    )
    page.get_by_role("button", name="Send reply").click()
    expect(page.get_by_role("status")).to_contain_text("Your reply was sent securely")
    sent_list = page.locator("#sent-replies")
    expect(sent_list).to_contain_text(reply_text)
    expect(sent_list).to_contain_text("referral.pdf")
    expect(sent_list).to_contain_text("card_front_.txt")
    shoot(page, screenshots, "3-replied-with-files")

    # 4. The sender: types and sizes first, then (phi:read) the reply and a download.
    sender = create_person(runtime, tenant, "marketer", name="Dana Sender")
    context, console = open_page(chromium, live_server)
    try:
        sign_in(console, tenant_row.slug, sender.email, sender.password)
        console.goto(f"/portal/messages/{message.id}")
        replies = console.locator("#replies")
        expect(replies).to_contain_text("2 files")
        expect(replies).to_contain_text(f"text/plain, {len(card)} bytes")
        assert "referral.pdf" not in console.content()
        shoot(console, screenshots, "4-console-files-listed")
        console.get_by_role("button", name="Read replies").click()
        expect(console.locator(".reply-text")).to_have_text(reply_text)
        shoot(console, screenshots, "5-console-reply-read")
        with console.expect_download() as download_info:
            console.get_by_role("button", name="Download card_front_.txt").click()
        download = download_info.value
        assert download.suggested_filename == "card_front_.txt"
        saved = screenshots / f"portal2-download-{uuid.uuid4().hex[:6]}.txt"
        download.save_as(str(saved))
        assert saved.read_bytes() == card
        saved.unlink()
        assert not console.problems.messages, console.problems.messages
    finally:
        context.close()
    with runtime.bound_session(keys) as session:
        downloads = list(
            session.scalars(
                select(AuditEvent.details).where(
                    AuditEvent.action == "portal.reply_attachment_download",
                    AuditEvent.object_id == str(item_id),
                )
            )
        )
    assert [d["attachment"] for d in downloads] == [1]
