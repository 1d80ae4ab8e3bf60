"""A campaign's own sender: its From name and address and its Reply-To, as set when it
was created (or changed while still a draft), are the headers every recipient gets
from the real delivery loop (to an aiosmtpd sink on loopback)."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from carepost.messages.campaigns import advance_campaigns
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Message
from tests.messages.smtp_sink import SmtpSink
from tests.messages.test_campaign_ab import _audience

V1 = "/api/v1"


def _list(runtime, tenant, count: int) -> uuid.UUID:
    return _audience(runtime, tenant, count)[0]


def _body(list_id: uuid.UUID, **extra) -> dict:
    return {
        "name": "Open house",
        "list_id": str(list_id),
        "subject": "Open house on Saturday",
        "html": "<p>Come by. <a href='{{ unsubscribe_url }}'>Unsubscribe</a></p>",
        "text": "Come by. Unsubscribe: {{ unsubscribe_url }}",
    } | extra


def _run(client, delivering, headers, campaign_id: str) -> None:
    scheduled = client.post(f"{V1}/campaigns/{campaign_id}/schedule", json={}, headers=headers)
    assert scheduled.status_code == 200, scheduled.text
    advance_campaigns(delivering)
    deliver_due_messages(delivering, budget_seconds=30)
    advance_campaigns(delivering)


def _received(smtp_sink: SmtpSink, runtime, tenant, campaign_id: str):
    with runtime.bound_session(tenant[1]) as session:
        rows = list(
            session.scalars(select(Message).where(Message.campaign_id == uuid.UUID(campaign_id)))
        )
    ids = {str(row.id) for row in rows}
    assert rows and {row.state for row in rows} == {"delivered"}
    found = [r for r in smtp_sink.received if r.carepost_id in ids]
    assert len(found) == len(rows)
    return rows, found


def test_a_campaign_delivers_with_its_reply_to_and_sender(
    client, delivering, smtp_sink: SmtpSink, tenant, make_api_key
):
    headers = make_api_key(tenant)
    list_id = _list(delivering, tenant, 3)
    created = client.post(
        f"{V1}/campaigns",
        json=_body(
            list_id,
            **{
                "from": "Events@Clinic.example",
                "from_name": "Clinique Sainté Events",
                "reply_to": "Front.Desk@clinic.example",
            },
        ),
        headers=headers,
    )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    _run(client, delivering, headers, campaign_id)

    rows, received = _received(smtp_sink, delivering, tenant, campaign_id)
    assert {(r.from_address, r.from_name, r.reply_to) for r in rows} == {
        ("events@clinic.example", "Clinique Sainté Events", "front.desk@clinic.example")
    }
    for message in (r.message for r in received):
        [sender] = message["From"].addresses
        assert sender.display_name == "Clinique Sainté Events"
        assert sender.addr_spec == "events@clinic.example"
        [reply] = message["Reply-To"].addresses
        assert reply.addr_spec == "front.desk@clinic.example"
        assert str(message["Reply-To"]) == "front.desk@clinic.example"
        assert len(message.get_all("Reply-To")) == 1


def test_a_reply_to_changed_on_the_draft_is_the_one_delivered(
    client, delivering, smtp_sink: SmtpSink, tenant, make_api_key
):
    headers = make_api_key(tenant)
    list_id = _list(delivering, tenant, 2)
    created = client.post(
        f"{V1}/campaigns",
        json=_body(
            list_id,
            **{"from": "news@clinic.example", "from_name": "Old", "reply_to": "old@clinic.example"},
        ),
        headers=headers,
    )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    changed = client.patch(
        f"{V1}/campaigns/{campaign_id}",
        json={
            "from": "desk@a.example",
            "from_name": "Riverside Desk",
            "reply_to": "help@a.example",
        },
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    _run(client, delivering, headers, campaign_id)
    _rows, received = _received(smtp_sink, delivering, tenant, campaign_id)
    for message in (r.message for r in received):
        [sender] = message["From"].addresses
        assert (sender.display_name, sender.addr_spec) == ("Riverside Desk", "desk@a.example")
        assert str(message["Reply-To"]) == "help@a.example"


def test_a_campaign_without_reply_to_sends_no_reply_to_header(
    client, delivering, smtp_sink: SmtpSink, tenant, make_api_key
):
    headers = make_api_key(tenant)
    list_id = _list(delivering, tenant, 1)
    created = client.post(
        f"{V1}/campaigns",
        json=_body(list_id, **{"from": "news@clinic.example", "from_name": "The Clinic"}),
        headers=headers,
    )
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    _run(client, delivering, headers, campaign_id)
    _rows, [received] = _received(smtp_sink, delivering, tenant, campaign_id)
    assert "Reply-To" not in received.message
    assert received.message["From"].addresses[0].display_name == "The Clinic"
