"""The SMTP gateway's own suppression check (``store_many``): a relayed message to an
address on the tenant's suppression list for all mail (a hard bounce, a complaint) is
stored as ``suppressed`` and never delivered, while its other recipients are; a
marketing-only suppression (an unsubscribe) does not hold relayed mail, which is
transactional. Real clients (smtplib) to the gateway on loopback, the real worker to
an aiosmtpd receiver."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.consent import suppression as suppressions
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Message, MessageEvent

MIME = (
    b"From: Clinic <care@clinic.example>\r\n"
    b"To: Patients <undisclosed-recipients:;>\r\n"
    b"Subject: Your lab results\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Your results are ready in the portal.\r\n"
)


def _suppress(runtime, tenant, address: str, reason: str) -> None:
    with runtime.bound_session(tenant[1]) as session:
        suppressions.add_suppression(
            session, tenant[1], address=address, reason=reason, source="api", actor=SYSTEM
        )


def _rows(runtime, tenant) -> dict[str, Message]:
    with runtime.tenant_session(tenant[0].id) as session:
        rows = list(
            session.scalars(
                select(Message).where(
                    Message.tenant_id == tenant[0].id, Message.created_by_type == "gateway"
                )
            )
        )
        for row in rows:
            _ = (row.to_address, row.body, row.subject)
        session.expunge_all()
        return {row.to_address: row for row in rows}


def _events(runtime, message_id: uuid.UUID) -> list[str]:
    with runtime.database.session() as session:
        return list(
            session.scalars(
                select(MessageEvent.kind)
                .where(MessageEvent.message_id == message_id)
                .order_by(MessageEvent.id)
            )
        )


def _relay_audit(runtime, tenant) -> list[dict]:
    with runtime.database.session() as session:
        return [
            dict(e.details)
            for e in session.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.tenant_id == tenant[0].id,
                    AuditEvent.action == "message.gateway_relay",
                )
                .order_by(AuditEvent.seq)
            )
        ]


def _relay(gateway, creds, to: list[str]) -> dict:
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        return smtp.sendmail("care@clinic.example", to, MIME)


def test_a_relay_to_a_hard_bounced_address_is_stored_suppressed_and_never_delivered(
    gateway, make_client, make_tenant, delivering, smtp_sink
):
    tenant = make_tenant()
    gone = f"gone-{uuid.uuid4().hex[:8]}@example.org"
    opted_out = f"optout-{uuid.uuid4().hex[:8]}@example.org"
    fine = f"pat-{uuid.uuid4().hex[:8]}@example.org"
    _suppress(gateway.runtime, tenant, gone, "hard_bounce")
    _suppress(gateway.runtime, tenant, opted_out, "unsubscribe")  # marketing only
    creds = make_client(tenant)
    # The suppressed address in another case: the same mailbox, the same suppression.
    refused = _relay(
        gateway, creds, [fine, gone.upper().replace("@EXAMPLE.ORG", "@Example.org"), opted_out]
    )
    assert refused == {}  # accepted (a 250 after DATA), then held back, not bounced to the client

    rows = _rows(gateway.runtime, tenant)
    assert set(rows) == {fine, gone, opted_out}
    assert (rows[gone].state, rows[gone].state_reason) == ("suppressed", "suppressed")
    assert rows[fine].state == "queued" and rows[opted_out].state == "queued"
    assert all(
        r.purpose == "transactional" and r.created_by_id == creds.client_id for r in rows.values()
    )
    assert _events(gateway.runtime, rows[gone].id) == ["suppressed"]
    [audited] = _relay_audit(gateway.runtime, tenant)
    assert (audited["queued"], audited["suppressed"]) == (2, 1)

    deliver_due_messages(delivering, budget_seconds=30)
    delivered_to = sorted(a for r in smtp_sink.received for a in r.recipients)
    assert delivered_to == sorted([fine, opted_out])
    ids = {r.carepost_id for r in smtp_sink.received}
    assert str(rows[gone].id) not in ids
    after = _rows(gateway.runtime, tenant)
    assert (after[gone].state, after[gone].attempts, after[gone].sent_at) == ("suppressed", 0, None)
    assert after[fine].state == "delivered" and after[opted_out].state == "delivered"
    assert _events(gateway.runtime, rows[gone].id) == ["suppressed"]


def test_a_relay_whose_only_recipient_complained_delivers_nothing(
    gateway, make_client, make_tenant, delivering, smtp_sink
):
    tenant = make_tenant()
    complained = f"angry-{uuid.uuid4().hex[:8]}@example.org"
    _suppress(gateway.runtime, tenant, complained, "complaint")
    creds = make_client(tenant)
    assert _relay(gateway, creds, [complained]) == {}
    [row] = _rows(gateway.runtime, tenant).values()
    assert row.state == "suppressed"
    deliver_due_messages(delivering, budget_seconds=30)
    assert smtp_sink.received == []
    [after] = _rows(gateway.runtime, tenant).values()
    assert (after.state, after.attempts) == ("suppressed", 0)


def test_a_suppression_of_another_tenant_does_not_hold_this_tenants_relay(
    gateway, make_client, make_tenant, delivering, smtp_sink
):
    mine, theirs = make_tenant(), make_tenant()
    shared = f"shared-{uuid.uuid4().hex[:8]}@example.org"
    _suppress(gateway.runtime, theirs, shared, "hard_bounce")
    creds = make_client(mine)
    assert _relay(gateway, creds, [shared]) == {}
    [row] = _rows(gateway.runtime, mine).values()
    assert row.state == "queued"
    deliver_due_messages(delivering, budget_seconds=30)
    assert [r.recipients for r in smtp_sink.received] == [[shared]]
