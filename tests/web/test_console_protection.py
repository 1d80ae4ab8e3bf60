"""The console's message page shows how the message was protected (method, TLS and
reason codes: no PHI)."""

from __future__ import annotations

from sqlalchemy import update

from carepost.messages.models import Message
from tests.web.sent_messages import make_message


def test_a_message_page_shows_its_protection_decision(runtime, tenant, make_person, sign_in):
    message_id = make_message(runtime, tenant)
    with runtime.database.session() as session:
        session.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(
                protection_method="portal",
                protection_tls="opportunistic",
                protection_reasons=["phi.dlp:ssn", "tls.mta_sts:none", "fallback.portal"],
            )
        )
    analyst = sign_in(make_person(tenant, "analyst"))
    page = analyst.get(f"/messages/{message_id}")
    assert page.status_code == 200
    assert 'id="message-protection"' in page.text
    assert "phi.dlp:ssn, tls.mta_sts:none, fallback.portal" in page.text
