"""Segment rules on email engagement, through the real path: a campaign's messages
(and a one-off message) are queued by the sending service, opens and clicks are
recorded by ``record_message_event`` (as the tracking routes do), and the rules name
the timeline kinds the product writes (``email.opened``, ``email.clicked``).

The email kinds are valid before an organization has recorded any of them (they
used to be refused as "no such event kind" until the first open)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent.service import ConsentChange
from carepost.contacts import lists
from carepost.contacts import service as contacts
from carepost.contacts.activity_models import EventKind
from carepost.contacts.events import BUILT_IN_KINDS
from carepost.contacts.id_sets import dialect_of
from carepost.core.database import utcnow
from carepost.core.errors import ValidationFailed
from carepost.messages import events as message_events
from carepost.messages.campaigns import advance_campaign, create_campaign, schedule_campaign
from carepost.messages.models import Message
from carepost.messages.schemas import CampaignIn, MessageIn
from carepost.messages.sending import SendContext, SendLimits, send_messages
from carepost.segments import service as segments
from carepost.segments.compiler import compile_segment

OPENED_LATELY = {"event": {"kind": "email.opened", "within_last_days": 30}}
NOT_MACHINE = {"machine": False}


def _person(session: Any, keys: Any, name: str) -> uuid.UUID:
    contact = contacts.create_contact(
        session, keys, values={"email": f"{name}-{uuid.uuid4().hex[:6]}@example.org"}, actor=SYSTEM
    )
    consent.record_consents(
        session,
        keys.tenant_id,
        contact_id=contact.id,
        changes=[ConsentChange("email", "marketing", "granted", "api")],
        actor=SYSTEM,
    )
    return contact.id


def _members(session: Any, keys: Any, rule: Any) -> set[uuid.UUID]:
    node = segments.parse_for(session, keys.tenant_id, rule)
    return set(session.scalars(compile_segment(node, keys, dialect_of(session))))


def _kinds_recorded(session: Any, tenant_id: uuid.UUID) -> set[str]:
    return set(session.scalars(select(EventKind.key).where(EventKind.tenant_id == tenant_id)))


@pytest.fixture
def engagement(runtime, tenant) -> dict[str, Any]:
    """ann and bob get campaign X, cy a one-off message, dan nothing; then ann opens
    (2 days ago) and clicks X, bob opened X 40 days ago, cy opens and clicks hers."""
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        people = {name: _person(session, keys, name) for name in ("ann", "bob", "cy", "dan")}
        audience = lists.create_list(
            session, tenant_row.id, name="Flu", description="", actor=SYSTEM
        )
        lists.change_members(
            session,
            tenant_row.id,
            audience.id,
            add=[people["ann"], people["bob"]],
            remove=[],
            actor=SYSTEM,
        )
        body = CampaignIn.model_validate(
            {
                "name": "Flu shots",
                "list_id": str(audience.id),
                "from": "news@clinic.example",
                "subject": "Flu shots are here",
                "html": "<p>Book now. <a href='{{ unsubscribe_url }}'>Unsubscribe</a></p>",
            }
        )
        campaign = create_campaign(session, keys, body, actor=SYSTEM)
        schedule_campaign(session, keys, campaign.id, None, actor=SYSTEM)
        campaign_id = campaign.id
        one_off = MessageIn.model_validate(
            {
                "contact_id": str(people["cy"]),
                "from": "care@clinic.example",
                "subject": "Your results are ready",
                "text": "Log in to read them.",
            }
        )
        limits = SendLimits(max_attachment_bytes=1024 * 1024, base_url="https://testserver")
        [sent] = send_messages(session, keys, [(one_off, None)], SendContext(SYSTEM, limits))
        assert sent.id is not None, sent
    assert advance_campaign(runtime, keys, campaign_id) == 2
    with runtime.bound_session(keys) as session:
        of_campaign = dict(
            session.execute(
                select(Message.contact_id, Message.id).where(Message.campaign_id == campaign_id)
            ).all()
        )
        assert set(of_campaign) == {people["ann"], people["bob"]}
    return {
        "people": people,
        "campaign_id": campaign_id,
        "messages": {"ann": of_campaign[people["ann"]], "bob": of_campaign[people["bob"]]}
        | {"cy": sent.id},
    }


def _record_engagement(runtime, keys, messages: dict[str, uuid.UUID]) -> None:
    now = utcnow()
    record = message_events.record_message_event
    with runtime.bound_session(keys) as session:
        for name, kind, days_ago, detail in (
            ("ann", "opened", 2, NOT_MACHINE),
            ("ann", "clicked", 2, NOT_MACHINE | {"link_index": 0}),
            ("bob", "opened", 40, NOT_MACHINE),
            ("cy", "opened", 0, NOT_MACHINE),
            ("cy", "clicked", 0, NOT_MACHINE | {"link_index": 0}),
        ):
            when = now - timedelta(days=days_ago, minutes=1)
            record(session, keys, messages[name], kind, occurred_at=when, detail=detail)


def test_opened_in_the_last_30_days_counts_the_contacts_who_opened(runtime, tenant, engagement):
    tenant_row, keys = tenant
    people = engagement["people"]
    with runtime.bound_session(keys) as session:
        assert "email.opened" not in _kinds_recorded(session, tenant_row.id)
        # Saved before anyone opened anything: valid, and nobody is in it yet.
        saved = segments.create_segment(
            session,
            tenant_row.id,
            name="Opened lately",
            description="",
            rule=OPENED_LATELY,
            actor=SYSTEM,
        )
        assert segments.count_segment(session, keys, saved.id) == 0
    _record_engagement(runtime, keys, engagement["messages"])
    with runtime.bound_session(keys) as session:
        members = segments.segment_members(
            session, keys, saved.id, after=None, limit=10, with_phi=False
        )
        assert {member.id for member in members} == {people["ann"], people["cy"]}
        ever = _members(session, keys, {"event": {"kind": "email.opened"}})
        assert ever == {people["ann"], people["bob"], people["cy"]}
        never = _members(session, keys, {"event": {"kind": "email.opened", "at_most": 0}})
        assert never == {people["dan"]}


def test_clicked_campaign_x_matches_only_clicks_of_that_campaign(runtime, tenant, engagement):
    _tenant_row, keys = tenant
    people = engagement["people"]
    campaign = str(engagement["campaign_id"])
    _record_engagement(runtime, keys, engagement["messages"])
    with runtime.bound_session(keys) as session:
        clicked_x = {"event": {"kind": "email.clicked", "campaign_id": campaign}}
        assert _members(session, keys, clicked_x) == {people["ann"]}
        # cy clicked too, in a message of no campaign.
        clicked = _members(session, keys, {"event": {"kind": "email.clicked"}})
        assert clicked == {people["ann"], people["cy"]}
        # Every event of X (queued, opened…) carries the campaign: bob got it, never clicked.
        any_of_x = _members(session, keys, {"event": {"campaign_id": campaign}})
        assert any_of_x == {people["ann"], people["bob"]}
        opened_not_clicked_x = {
            "all": [
                {"event": {"kind": "email.opened", "campaign_id": campaign}},
                {"not": clicked_x},
            ]
        }
        assert _members(session, keys, opened_not_clicked_x) == {people["bob"]}


def test_a_never_recorded_email_kind_validates_and_counts_nobody(runtime, tenant):
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        people = {_person(session, keys, name) for name in ("ann", "bob")}
        assert "email.complained" not in _kinds_recorded(session, tenant_row.id)
        complained = {"event": {"kind": "email.complained", "within_last_days": 365}}
        assert segments.count_rule(session, keys, complained) == 0
        assert segments.count_rule(session, keys, {"not": complained}) == 2
        never = {"event": {"kind": "email.complained", "at_most": 0}}
        assert _members(session, keys, never) == people
        either = {"event": {"kind": ["email.complained", "email.bounced"], "at_least": 2}}
        assert segments.count_rule(session, keys, either) == 0
        # Only parsed: the rule created no kind.
        assert not _kinds_recorded(session, tenant_row.id) & set(BUILT_IN_KINDS)


@pytest.mark.parametrize(
    ("kind", "pointer"),
    [
        ("email_opened", "rule/event/kind"),
        ("email.read", "rule/event/kind"),
        (["email.opened", "appointment_kept"], "rule/event/kind/1"),
    ],
)
def test_an_unknown_kind_is_still_a_fault_at_its_node(runtime, tenant, kind, pointer):
    _tenant_row, keys = tenant
    with runtime.bound_session(keys) as session, pytest.raises(ValidationFailed) as failed:
        segments.count_rule(session, keys, {"event": {"kind": kind}})
    [error] = failed.value.errors
    assert error.field == pointer
    assert "no such event kind" in error.message


def test_the_built_in_kinds_are_the_timeline_kinds_of_every_message_event():
    expected = tuple(message_events.timeline_kind(kind) for kind in message_events.KINDS)
    assert expected == BUILT_IN_KINDS
