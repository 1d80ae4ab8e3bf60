"""Reply delivery "by policy": with the portal setting ``reply_delivery = "deliver"`` the
reply itself (and its files) goes to the original sender through the outbox, marked
PHI, and the protection stage decides how: S/MIME when the sender has a certificate in
the key directory, verified TLS where the domain guarantees it, otherwise the policy's
fallback (the portal). Never in clear."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from email import message_from_bytes
from email.policy import SMTP as SMTP_POLICY

import pytest
from sqlalchemy import select, update

from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.core.database import utcnow
from carepost.e2ee import directory
from carepost.messages.models import Message
from carepost.portal import reply_files, service
from carepost.portal.models import PortalItem, PortalReply
from carepost.portal.schemas import PortalSettingsIn
from carepost.protection.models import DomainTlsRecord
from tests.canaries import phi_value
from tests.e2ee.conftest import test_ca  # noqa: F401 - the e2ee tests' PKI
from tests.portal.conftest import handoff
from tests.protection.conftest import empty_queue  # noqa: F401 - a fixture used here too
from tests.protection.protection_support import decisions, send
from tests.protection.test_protection_stage import prepare

PDF = b"%PDF-1.4\n%%EOF\n"


def _deliver_setting(runtime, tenant, mode: str = "deliver") -> None:
    with runtime.bound_session(tenant[1]) as session:
        service.save_settings(
            session, tenant[1].tenant_id, PortalSettingsIn(reply_delivery=mode), actor=SYSTEM
        )


def _reply(runtime, tenant, sender: str, text: str, files=()) -> tuple[PortalReply, uuid.UUID]:
    message_id = send(
        runtime,
        tenant,
        to=f"p-{uuid.uuid4().hex[:6]}@patients.example",
        text="Hi",
        **{"from": sender},
    )
    item_id = handoff(runtime, tenant[1], message_id)
    with runtime.database.session() as session:  # the original and its notice: not ours here
        session.execute(update(Message).where(Message.state == "queued").values(state="cancelled"))
    with runtime.bound_session(tenant[1]) as session:
        item = session.get(PortalItem, item_id)
        row = service.reply(
            session, item, text, now=utcnow(), base_url="https://testserver",
            client_address="127.0.0.9", files=list(files),
        )  # fmt: skip
        session.flush()
        _ = (row.body, row.attachments)
        session.expunge(row)
    return row, item_id


def _stored(runtime, tenant, message_id) -> Message:
    with runtime.bound_session(tenant[1]) as session:
        found = session.get(Message, message_id)
        assert found is not None
        _ = (found.body, found.attachments, found.subject, found.to_address)
        session.expunge(found)
        return found


pytestmark = pytest.mark.usefixtures("empty_queue")


def test_by_default_the_sender_gets_a_notice_not_the_reply(runtime, tenant):
    secret = phi_value("reply")
    row, item_id = _reply(runtime, tenant, "care@clinic.example", f"Reply {secret}")
    assert row.delivery_id is None
    with runtime.bound_session(tenant[1]) as session:
        rows = list(session.scalars(select(Message).where(Message.created_by_id == str(item_id))))
        subjects = sorted(m.subject for m in rows)
    assert "A secure reply is waiting" in subjects and service.REPLY_SUBJECT not in subjects


def test_a_delivered_reply_goes_smime_when_the_sender_has_a_certificate(
    runtime,
    tenant,
    test_ca,  # noqa: F811
):
    sender = f"care-{uuid.uuid4().hex[:6]}@clinic.example"
    with runtime.bound_session(tenant[1]) as session:
        directory.add_key(
            session, tenant[1].tenant_id, address=sender,
            material=test_ca.issue(sender).cert_pem, source="upload", actor=SYSTEM,
        )  # fmt: skip
    _deliver_setting(runtime, tenant)
    secret = phi_value("reply")
    upload = reply_files.Upload("results.pdf", PDF)
    row, item_id = _reply(runtime, tenant, sender, f"My reply {secret}", [upload])
    assert row.delivery_id is not None
    queued = _stored(runtime, tenant, row.delivery_id)
    assert queued.to_address == sender and queued.uses_phi is True
    assert queued.created_by_type == service.REPLY_DELIVERY
    assert queued.subject == service.REPLY_SUBJECT and secret not in queued.subject
    assert secret in queued.body["text"]
    assert [a["filename"] for a in queued.attachments] == ["results.pdf"]
    assert base64.b64decode(queued.attachments[0]["content"]) == PDF
    with runtime.bound_session(tenant[1]) as session:
        # No "reply waiting" notice: the reply itself goes.
        subjects = list(
            session.scalars(
                select(Message.subject).where(
                    Message.created_by_id == str(item_id), Message.created_by_type == "portal"
                )
            )
        )
    assert "A secure reply is waiting" not in subjects

    envelopes = prepare(runtime, tenant, [row.delivery_id])
    wire = envelopes[row.delivery_id].data
    assert secret.encode() not in wire and PDF not in wire
    outer = message_from_bytes(wire, policy=SMTP_POLICY)
    assert outer.get_content_type() == "application/pkcs7-mime"
    [decided] = decisions(runtime, row.delivery_id)
    assert decided["method"] == "smime" and decided["phi"] is True
    assert "phi.template" in decided["reasons"]


def test_without_a_key_or_guaranteed_tls_the_reply_goes_to_the_portal_never_in_clear(
    runtime, tenant
):
    _deliver_setting(runtime, tenant)
    secret = phi_value("reply")
    row, _item_id = _reply(
        runtime, tenant, f"care-{uuid.uuid4().hex[:6]}@clinic.example", f"Reply {secret}"
    )
    envelopes = prepare(runtime, tenant, [row.delivery_id])
    assert row.delivery_id not in envelopes  # held, not sent
    stored = _stored(runtime, tenant, row.delivery_id)
    assert stored.protection_method == "portal"
    assert stored.state_reason == "held for secure portal pickup"
    with runtime.bound_session(tenant[1]) as session:
        held = session.scalar(select(PortalItem).where(PortalItem.message_id == row.delivery_id))
        assert held is not None and secret in held.content["text"]
        notice = session.get(Message, held.notice_id)
        assert notice is not None and secret not in notice.body["text"]


def test_a_sender_domain_with_enforced_mta_sts_gets_the_reply_by_verified_tls(runtime, tenant):
    domain = f"sts-{uuid.uuid4().hex[:8]}.clinic.example"
    now = utcnow()
    with runtime.database.session() as session:
        session.add(
            DomainTlsRecord(
                domain=domain, mta_sts_id="20261204", mta_sts_mode="enforce",
                mta_sts_mx=[f"*.{domain}"], mta_sts_max_age=86400,
                mta_sts_expires_at=now + timedelta(days=1), dane_usable=False,
                starttls_seen=False, checked_at=now, next_check_at=now + timedelta(hours=1),
            )
        )  # fmt: skip
    _deliver_setting(runtime, tenant)
    row, _item_id = _reply(runtime, tenant, f"care@{domain}", "Reply by TLS")
    envelopes = prepare(runtime, tenant, [row.delivery_id], mta_sts_enabled=True)
    envelope = envelopes[row.delivery_id]
    assert (envelope.tls, envelope.mx_patterns) == ("verified", (f"*.{domain}",))
    stored = _stored(runtime, tenant, row.delivery_id)
    assert (stored.protection_method, stored.protection_tls) == ("tls_required", "verified")


def test_the_setting_is_read_and_saved_through_the_api_audited(
    client, runtime, tenant, make_api_key
):
    headers = make_api_key(tenant)
    assert (
        client.get("/api/v1/portal/settings", headers=headers).json()["reply_delivery"] == "notice"
    )
    saved = client.put(
        "/api/v1/portal/settings", json={"reply_delivery": "deliver"}, headers=headers
    )
    assert saved.status_code == 200 and saved.json()["reply_delivery"] == "deliver"
    bad = client.put("/api/v1/portal/settings", json={"reply_delivery": "clear"}, headers=headers)
    assert bad.status_code == 422
    assert "#/body/reply_delivery" in [e["pointer"] for e in bad.json()["errors"]]
    with runtime.bound_session(tenant[1]) as session:
        details = session.scalars(
            select(AuditEvent.details)
            .where(
                AuditEvent.action == "portal.settings_update",
                AuditEvent.object_id == str(tenant[1].tenant_id),
            )
            .order_by(AuditEvent.seq.desc())
        ).first()
    assert details is not None and details["reply_delivery"] == "deliver"


def test_the_console_settings_form_saves_the_reply_delivery(
    client, runtime, tenant, make_user, sign_in
):
    user_id, _email, _password = make_user(tenant, role="owner")
    headers = sign_in(tenant, user_id)
    page = client.get("/portal/settings", headers=headers)
    assert page.status_code == 200 and 'name="reply_delivery"' in page.text
    saved = client.post(
        "/portal/settings",
        data={
            "csrf_token": headers["X-CSRF-Token"], "notice_subject": "", "expiry_days": "30",
            "logo_url": "", "brand_color": "#0b5394", "reply_delivery": "deliver",
        },
        headers=headers,
        follow_redirects=False,
    )  # fmt: skip
    assert saved.status_code == 303, saved.text
    with runtime.bound_session(tenant[1]) as session:
        assert service.branding(session, tenant[1].tenant_id).reply_delivery == "deliver"
