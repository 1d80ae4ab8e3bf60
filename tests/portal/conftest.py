"""Fixtures of the portal tests: a PHI message accepted through the API and handed to
the portal the way the delivery path does (a tenant session with its keys bound)."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

import pytest
from sqlalchemy import select

from carepost.core.database import utcnow
from carepost.messages.models import Message
from carepost.portal.handoff import hand_to_portal
from tests.canaries import phi_value

LINK = re.compile(r"https?://[^/\s]+(/s/[A-Za-z0-9_-]+)")
CODE = re.compile(r"Your code is (\d{6})")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Deposit:
    tenant: tuple
    headers: dict[str, str]
    message_id: uuid.UUID
    item_id: uuid.UUID
    path: str
    subject: str
    name: str
    address: str
    attachment: bytes
    filename: str

    @property
    def keys(self):
        return self.tenant[1]


def notices(runtime, keys, item_id: uuid.UUID) -> list[Message]:
    """The portal's outbox rows of an item, oldest first."""
    with runtime.bound_session(keys) as session:
        rows = list(
            session.scalars(
                select(Message)
                .where(Message.created_by_type == "portal", Message.created_by_id == str(item_id))
                .order_by(Message.created_at, Message.id)
            )
        )
        for row in rows:
            _ = (row.subject, row.body, row.to_address)
        session.expunge_all()
        return rows


def latest_code(runtime, keys, item_id: uuid.UUID) -> str:
    codes = [CODE.search(n.body["text"]) for n in notices(runtime, keys, item_id)]
    found = [m.group(1) for m in codes if m]
    assert found, "no code email queued"
    return found[-1]


def handoff(runtime, keys, message_id: uuid.UUID, *, now: datetime | None = None) -> uuid.UUID:
    with runtime.bound_session(keys) as session:
        message = session.get(Message, message_id)
        assert message is not None
        return hand_to_portal(session, message, reasons=["dlp:ssn"], now=now or utcnow())


@pytest.fixture
def deposit(client, runtime, tenant, make_api_key) -> Deposit:
    headers = make_api_key(tenant)
    name = phi_value("name")
    subject = f"Lab results for {name}"
    address = f"{phi_value('mail').lower()}@patients.example"
    attachment = f"Report of {name}".encode()
    filename = f"{phi_value('file')}.txt"
    response = client.post(
        "/api/v1/messages",
        json={
            "to": address,
            "from": "care@clinic.example",
            "subject": subject,
            "html": f"<p>Dear {name}, your results are normal.</p><script>alert(1)</script>",
            "text": f"Dear {name}, your results are normal.",
            "purpose": "transactional",
            "attachments": [
                {
                    "filename": filename,
                    "content_type": "text/plain",
                    "content": base64.b64encode(attachment).decode(),
                }
            ],
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    message_id = uuid.UUID(response.json()["id"])
    item_id = handoff(runtime, tenant[1], message_id)
    [notice] = notices(runtime, tenant[1], item_id)
    [path] = LINK.findall(notice.body["text"])
    return Deposit(
        tenant, headers, message_id, item_id, path, subject, name, address, attachment, filename
    )


def csrf_of(page_text: str) -> str:
    found = CSRF.search(page_text)
    assert found, "no CSRF token on the page"
    return found.group(1)


def sign_in_with_code(client, runtime, deposit: Deposit) -> None:
    page = client.get(deposit.path)
    assert page.status_code == 200, page.text
    sent = client.post(f"{deposit.path}/code", data={"csrf_token": csrf_of(page.text)})
    assert sent.status_code in (200, 303), sent.text
    page = client.get(f"{deposit.path}?sent=1")
    code = latest_code(runtime, deposit.keys, deposit.item_id)
    opened = client.post(
        f"{deposit.path}/verify", data={"code": code, "csrf_token": csrf_of(page.text)}
    )
    assert opened.status_code == 200, opened.text
    assert deposit.subject in opened.text
