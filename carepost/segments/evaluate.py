"""A straightforward Python evaluation of segment rules over decrypted contacts.

The reference the SQL compiler is tested against (``tests/segments``): it reads
every contact of a tenant with its PHI decrypted, its current list memberships,
consents and events, and decides each rule one contact at a time from the stored
*values* — never from tokens. It is meant for tests and small checks, not for
production paths (it loads the whole tenant into memory).

Semantics it shares with the compiler (docs/segments.md): a number or a date is
compared at its field's granularity — a value matches when its bucket touches the
range asked for, so ranges are exact at bucket boundaries and rounded out
otherwise; a negated condition holds for contacts without a value.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.consent.models import ConsentCurrent, Suppression
from carepost.contacts.activity_models import ContactEvent, ListMembership
from carepost.contacts.models import Contact
from carepost.contacts.tokens import FieldType, date_bucket_range, fold_text, number_bucket
from carepost.crypto.keyring import TenantKeys
from carepost.segments.nodes import (
    AllOf,
    AnyOf,
    AttributeCondition,
    ConsentCondition,
    EventCondition,
    FieldCondition,
    ListCondition,
    Node,
    Not,
    SuppressedCondition,
)
from carepost.segments.rules import BIRTH_DATE


@dataclass(frozen=True)
class EventFact:
    kind_id: int
    occurred_at: datetime
    campaign_id: uuid.UUID | None = None


@dataclass
class ContactFacts:
    """Everything a rule may ask about one contact, in clear."""

    id: uuid.UUID
    custom: Mapping[str, Any] = field(default_factory=dict)
    birth_date: str | None = None
    journey_stage: str = "new"
    language: str | None = None
    email_index: str | None = None
    phone_index: str | None = None
    lists: set[uuid.UUID] = field(default_factory=set)
    consents: dict[tuple[str, str], tuple[str, datetime | None]] = field(default_factory=dict)
    events: list[EventFact] = field(default_factory=list)


@dataclass
class Population:
    contacts: list[ContactFacts]
    # Suppressed address blind indexes by channel (email, sms).
    suppressed: dict[str, set[str]] = field(default_factory=dict)


def _day_of(value: Any, field_type: FieldType) -> date:
    if field_type is FieldType.DATETIME:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return moment.astimezone(UTC).date()
    return date.fromisoformat(str(value))


def _field(node: FieldCondition, contact: ContactFacts) -> bool:
    spec = node.spec
    value = contact.birth_date if spec is BIRTH_DATE else contact.custom.get(spec.key)
    if node.op == "present":
        return value is not None
    if node.op == "absent":
        return value is None
    if value is None:
        return False
    kind = spec.type
    if node.op == "any_of":
        if kind is FieldType.STRING:
            return fold_text(str(value)) in {fold_text(str(v)) for v in node.values}
        if kind is FieldType.MULTI_CHOICE:
            return bool(set(value) & set(node.values))
        if kind is FieldType.BOOLEAN:
            return any(value is v for v in node.values)
        return value in node.values
    if node.op == "all_of":
        return set(node.values) <= set(value)
    if node.op == "numbers":
        assert node.numbers is not None and spec.granularity is not None
        assert isinstance(value, int | float)
        bucket = number_bucket(value, spec.granularity)
        low = number_bucket(node.numbers.low, spec.granularity)
        high = number_bucket(node.numbers.high, spec.granularity)
        return low <= bucket <= high
    assert node.dates is not None and spec.granularity is not None
    start, end = date_bucket_range(_day_of(value, kind), spec.granularity)
    return start <= node.dates.high and end > node.dates.low


def _attribute(node: AttributeCondition, contact: ContactFacts) -> bool:
    value = {
        "journey_stage": contact.journey_stage,
        "language": contact.language,
        "email": contact.email_index,
        "phone": contact.phone_index,
    }[node.attribute]
    if node.op == "present":
        return value is not None
    if node.op == "absent":
        return value is None
    return value is not None and value in node.values


def _consent(node: ConsentCondition, contact: ContactFacts) -> bool:
    state = contact.consents.get((node.channel, node.purpose))
    if node.status == "none":
        return state is None
    if state is None:
        return False
    status, expires_at = state
    if node.status in ("granted", "expired"):
        unexpired = expires_at is None or expires_at > node.now
        return status == "granted" and unexpired == (node.status == "granted")
    return status == node.status


def _suppressed(node: SuppressedCondition, contact: ContactFacts, population: Population) -> bool:
    checks = []
    if node.channel in ("email", "any"):
        checks.append(contact.email_index in population.suppressed.get("email", set()))
    if node.channel in ("sms", "any"):
        checks.append(contact.phone_index in population.suppressed.get("sms", set()))
    return any(checks)


def _event(node: EventCondition, contact: ContactFacts) -> bool:
    count = sum(
        1
        for event in contact.events
        if (not node.kind_ids or event.kind_id in node.kind_ids)
        and (node.campaign_id is None or event.campaign_id == node.campaign_id)
        and (node.since is None or event.occurred_at >= node.since)
    )
    return count >= node.at_least and (node.at_most is None or count <= node.at_most)


def matches(node: Node, contact: ContactFacts, population: Population) -> bool:
    """Whether one contact is in the segment the rule describes."""
    if isinstance(node, AllOf):
        return all(matches(child, contact, population) for child in node.children)
    if isinstance(node, AnyOf):
        return any(matches(child, contact, population) for child in node.children)
    if isinstance(node, Not):
        return not matches(node.child, contact, population)
    if isinstance(node, FieldCondition):
        return _field(node, contact)
    if isinstance(node, AttributeCondition):
        return _attribute(node, contact)
    if isinstance(node, ListCondition):
        return node.list_id in contact.lists
    if isinstance(node, ConsentCondition):
        return _consent(node, contact)
    if isinstance(node, SuppressedCondition):
        return _suppressed(node, contact, population)
    return _event(node, contact)


def evaluate(node: Node, population: Population) -> set[uuid.UUID]:
    """The ids of the contacts in the segment."""
    return {c.id for c in population.contacts if matches(node, c, population)}


def load_population(session: Session, keys: TenantKeys) -> Population:
    """Every contact of the tenant with its data in clear (the session must be bound
    to the tenant's keys). For tests and small tenants only."""
    tenant_id = keys.tenant_id
    contacts: dict[uuid.UUID, ContactFacts] = {}
    for row in session.scalars(select(Contact).where(Contact.tenant_id == tenant_id)):
        contacts[row.id] = ContactFacts(
            id=row.id,
            custom=dict(row.custom or {}),
            birth_date=row.birth_date,
            journey_stage=row.journey_stage,
            language=row.language,
            email_index=row.email_index,
            phone_index=row.phone_index,
        )
    memberships = session.execute(
        select(ListMembership.contact_id, ListMembership.list_id).where(
            ListMembership.tenant_id == tenant_id, ListMembership.left_at.is_(None)
        )
    )
    for contact_id, list_id in memberships:
        contacts[contact_id].lists.add(list_id)
    for consent in session.scalars(
        select(ConsentCurrent).where(ConsentCurrent.tenant_id == tenant_id)
    ):
        contacts[consent.contact_id].consents[(consent.channel, consent.purpose)] = (
            consent.status,
            consent.expires_at,
        )
    events = session.execute(
        select(
            ContactEvent.contact_id,
            ContactEvent.kind_id,
            ContactEvent.occurred_at,
            ContactEvent.campaign_id,
        ).where(ContactEvent.tenant_id == tenant_id)
    )
    for contact_id, kind_id, occurred_at, campaign_id in events:
        contacts[contact_id].events.append(EventFact(kind_id, occurred_at, campaign_id))
    suppressed: dict[str, set[str]] = {}
    for channel, index in session.execute(
        select(Suppression.channel, Suppression.address_index).where(
            Suppression.tenant_id == tenant_id
        )
    ):
        suppressed.setdefault(channel, set()).add(index)
    return Population(list(contacts.values()), suppressed)
