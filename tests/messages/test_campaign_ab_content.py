"""A/B variants that differ in their content (HTML and text), not only their subject or
sender name: a campaign of a stored template with two content variants, queued and
delivered to an aiosmtpd sink on loopback, where each recipient gets the body of the
variant recorded on its message row, and both variants go out as the split says."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from carepost.audit.service import SYSTEM
from carepost.messages.campaigns import advance_campaigns
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Message
from carepost.templates import service as templates
from carepost.templates.variants import VariantSplit, assign_variant
from carepost.tenancy import service as tenancy
from tests.messages.smtp_sink import SmtpSink
from tests.messages.test_campaign_ab import _audience

V1 = "/api/v1"
ADDRESS = "100 Main Street\nSpringfield, IL 62701"
FOOTER = (
    '<p>{{ organization.physical_address }}</p><p><a href="{{ unsubscribe_url }}">'
    "Unsubscribe</a></p>"
)
TEXT_FOOTER = "\n\n{{ organization.physical_address }}\nUnsubscribe: {{ unsubscribe_url }}\n"
BASE = "Base template body, never sent in a test arm"
ARM_A_HTML = "Arm A: the flu clinic opens Monday"
ARM_A_TEXT = "Arm A plain: the flu clinic opens Monday"
ARM_B_HTML = "Arm B: walk in any weekday for your flu shot"


@pytest.fixture
def clinic(runtime, make_tenant):
    tenant = make_tenant()
    with runtime.bound_session(tenant[1]) as session:
        tenancy.update_tenant_settings(
            session, tenant_id=tenant[0].id, actor=SYSTEM, physical_address=ADDRESS
        )
    return tenant


def _content_variant_template(runtime, tenant, *, percent_a: int, percent_b: int) -> str:
    """A marketing template whose two variants replace its body: ``a`` with HTML and
    text, ``b`` with HTML only (its text part derived from it)."""
    with runtime.bound_session(tenant[1]) as session:
        row = templates.create_template(
            session,
            tenant[0].id,
            name=f"content-ab-{uuid.uuid4().hex[:8]}",
            kind="marketing",
            subject="Flu season at the clinic",
            html=f"<p>{BASE}</p>{FOOTER}",
            text=f"{BASE}{TEXT_FOOTER}",
            actor=SYSTEM,
        )
        templates.create_variant(
            session,
            tenant[0].id,
            row.id,
            values={
                "key": "a",
                "html": f"<p>{ARM_A_HTML}</p>{FOOTER}",
                "text": f"{ARM_A_TEXT}{TEXT_FOOTER}",
                "percent": percent_a,
            },
            actor=SYSTEM,
        )
        templates.create_variant(
            session,
            tenant[0].id,
            row.id,
            values={"key": "b", "html": f"<p>{ARM_B_HTML}</p>{FOOTER}", "percent": percent_b},
            actor=SYSTEM,
        )
        return str(row.id)


def _campaign(client, headers, list_id, template_id) -> str:
    created = client.post(
        f"{V1}/campaigns",
        json={
            "name": "Flu season",
            "list_id": str(list_id),
            "template_id": template_id,
            "from": "news@clinic.example",
            "from_name": "The Clinic",
            "ab_metric": "opens",
            "ab_window_hours": 2,
        },
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["ab_test"]["metric"] == "opens"
    campaign_id = created.json()["id"]
    scheduled = client.post(f"{V1}/campaigns/{campaign_id}/schedule", json={}, headers=headers)
    assert scheduled.status_code == 200, scheduled.text
    return campaign_id


def _messages(runtime, tenant, campaign_id) -> dict[str, Message]:
    with runtime.bound_session(tenant[1]) as session:
        rows = list(
            session.scalars(select(Message).where(Message.campaign_id == uuid.UUID(campaign_id)))
        )
        for row in rows:
            _ = (row.to_address, row.body)  # decrypted while the keys are bound
        return {str(row.id): row for row in rows}


def _parts(received) -> tuple[str, str]:
    parsed = received.message
    html = parsed.get_body(("html",))
    text = parsed.get_body(("plain",))
    assert html is not None and text is not None, parsed.get_content_type()
    return html.get_content(), text.get_content()


def _received_by_message(smtp_sink: SmtpSink, campaign_rows: dict[str, Message]):
    received = [r for r in smtp_sink.received if r.carepost_id in campaign_rows]
    assert len(received) == len(campaign_rows)
    assert len({r.carepost_id for r in received}) == len(received)  # each exactly once
    return received


def test_content_variants_each_recipient_gets_the_body_of_its_arm(
    client, delivering, smtp_sink: SmtpSink, clinic, make_api_key
):
    headers = make_api_key(clinic)
    list_id, members = _audience(delivering, clinic, 20)
    template_id = _content_variant_template(delivering, clinic, percent_a=50, percent_b=50)
    campaign_id = _campaign(client, headers, list_id, template_id)
    advance_campaigns(delivering)

    # 50 + 50: no holdout, everyone is in the test and gets the arm assign_variant says.
    rows = _messages(delivering, clinic, campaign_id)
    assert len(rows) == len(members)
    splits = [VariantSplit("a", 50), VariantSplit("b", 50)]
    expected = {
        c: assign_variant(f"{campaign_id}:{c}", splits).key  # type: ignore[union-attr]
        for c in members
    }
    assert {m.contact_id: m.variant for m in rows.values()} == expected
    assert {m.variant for m in rows.values()} == {"a", "b"}  # both arms used

    deliver_due_messages(delivering, budget_seconds=30)
    seen = {"a": 0, "b": 0}
    for received in _received_by_message(smtp_sink, rows):
        row = rows[received.carepost_id]
        assert row.state == "queued"  # as read before delivery
        assert received.recipients == [row.to_address]
        assert received.message["Subject"] == "Flu season at the clinic"
        html, text = _parts(received)
        assert BASE not in html and BASE not in text
        if row.variant == "a":
            assert ARM_A_HTML in html and ARM_A_TEXT not in html
            assert ARM_A_TEXT in text
            assert ARM_B_HTML not in html and ARM_B_HTML not in text
        else:
            assert row.variant == "b"
            assert ARM_B_HTML in html
            # No text of its own: derived from b's HTML, never a's text or the base.
            assert ARM_B_HTML in text and "Arm A" not in text and "Arm A" not in html
        # The CAN-SPAM footer of the variant's content went with it.
        assert "100 Main Street" in html and "/u/" in html
        seen[row.variant] += 1
    assert seen["a"] >= 1 and seen["b"] >= 1
    assert seen == {arm: sum(1 for v in expected.values() if v == arm) for arm in ("a", "b")}
    delivered = _messages(delivering, clinic, campaign_id)
    assert {m.state for m in delivered.values()} == {"delivered"}


def test_a_hundred_to_nothing_split_sends_only_the_first_arms_content(
    client, delivering, smtp_sink: SmtpSink, clinic, make_api_key
):
    headers = make_api_key(clinic)
    list_id, members = _audience(delivering, clinic, 6)
    template_id = _content_variant_template(delivering, clinic, percent_a=100, percent_b=0)
    campaign_id = _campaign(client, headers, list_id, template_id)
    advance_campaigns(delivering)
    rows = _messages(delivering, clinic, campaign_id)
    assert len(rows) == len(members) and {m.variant for m in rows.values()} == {"a"}
    deliver_due_messages(delivering, budget_seconds=30)
    for received in _received_by_message(smtp_sink, rows):
        html, text = _parts(received)
        assert ARM_A_HTML in html and ARM_A_TEXT in text
        assert ARM_B_HTML not in html + text and BASE not in html + text
