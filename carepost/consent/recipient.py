"""What a recipient does through a signed link: unsubscribe in one click, or choose
topics and channels in the preference center. No sign-in: the link is the proof.

Each change is audited with the recipient as the actor (the contact's id, never an
address). The page shows only what the link's owner already knows, and masks that:
``j•••@example.org``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.consent import service as consent
from carepost.consent import suppression as suppressions
from carepost.consent.decision import Channel, Purpose, Scope, Status
from carepost.consent.links import InvalidLink, RecipientLink
from carepost.contacts import service as contacts
from carepost.contacts.models import Contact
from carepost.core.database import utcnow
from carepost.core.errors import NotFound
from carepost.crypto.keyring import TenantKeys
from carepost.tenancy.models import Tenant

MARKETING_LABEL = "News, reminders and offers"
MASK = "\u2022\u2022\u2022"


def recipient_actor(link: RecipientLink, client_address: str) -> audit.Actor:
    return audit.Actor("recipient", str(link.contact_id), "recipient (signed link)", client_address)


def mask_address(channel: str, value: str) -> str:
    """``j•••@example.org`` for an email; ``+1•••••••23`` for a phone number."""
    if channel == Channel.EMAIL:
        local, _, domain = value.partition("@")
        return f"{local[:1]}{MASK}@{domain}"
    return value[:2] + "\u2022" * max(len(value) - 4, 3) + value[-2:]


def _contact(session: Session, link: RecipientLink) -> Contact:
    try:
        return contacts.get_contact(session, link.tenant_id, link.contact_id)
    except NotFound:
        raise InvalidLink from None


def _addresses(contact: Contact) -> dict[str, str]:
    found = {Channel.EMAIL.value: contact.email, Channel.SMS.value: contact.phone}
    return {channel: value for channel, value in found.items() if value}


def unsubscribe(
    session: Session,
    keys: TenantKeys,
    link: RecipientLink,
    *,
    client_address: str,
    source: str = "one_click",
) -> None:
    """Stop marketing to the link's address at once: revoke the marketing consent and
    suppress the address (scope marketing: treatment messages still arrive).
    ``source``: ``one_click`` (the link) or ``mailto`` (a mail to the message's
    List-Unsubscribe address, :mod:`carepost.delivery.inbound`)."""
    contact = _contact(session, link)
    actor = recipient_actor(link, client_address)
    consent.record_consent(
        session,
        link.tenant_id,
        contact_id=contact.id,
        change=consent.ConsentChange(link.channel, Purpose.MARKETING, Status.REVOKED, source),
        actor=actor,
    )
    address = _addresses(contact).get(link.channel)
    if address is not None:
        suppressions.add_suppression(
            session,
            keys,
            address=suppressions.Address(link.channel, address),
            reason="unsubscribe",
            scope=Scope.MARKETING,
            source=source,
            actor=actor,
        )
    audit.record(
        session,
        tenant_id=link.tenant_id,
        actor=actor,
        action="recipient.unsubscribe",
        object_type="contact",
        object_id=contact.id,
        details={"channel": link.channel, "source": source},
    )


@dataclass(frozen=True)
class Choice:
    """One checkbox of the preference center: a purpose on a channel."""

    purpose: str
    channel: str
    granted: bool

    @property
    def value(self) -> str:
        return f"{self.purpose}:{self.channel}"


@dataclass(frozen=True)
class Row:
    purpose: str
    label: str
    description: str
    choices: tuple[Choice, ...]


@dataclass(frozen=True)
class Preferences:
    organization: str
    masked: dict[str, str]  # channel -> masked address
    rows: tuple[Row, ...]
    unsubscribed: bool


def preferences(session: Session, keys: TenantKeys, link: RecipientLink) -> Preferences:
    contact = _contact(session, link)
    tenant = session.get(Tenant, link.tenant_id)
    if tenant is None:
        raise InvalidLink
    addresses = _addresses(contact)
    current = consent.current_consents(session, link.tenant_id, contact.id)
    offered: list[tuple[str, str, str, list[str]]] = [
        (Purpose.MARKETING, MARKETING_LABEL, "", [str(c) for c in Channel])
    ]
    offered += [
        (topic.key, topic.name, topic.description, list(topic.channels))
        for topic in consent.list_topics(session, link.tenant_id)
    ]
    shown = []
    for purpose, label, description, channels in offered:
        choices = []
        for channel in channels:
            if channel not in addresses:
                continue  # no address to receive it by
            state = current.get((channel, purpose))
            choices.append(
                Choice(purpose, channel, state is not None and state.granted_at(utcnow()))
            )
        if choices:
            shown.append(Row(purpose, label, description, tuple(choices)))
    # Only an unsubscribe is the recipient's to undo here; bounces and complaints are not.
    matches = [
        suppressions.suppression_match(session, keys, suppressions.Address(channel, value))
        for channel, value in addresses.items()
    ]
    unsubscribed = any(m is not None and m.reason == "unsubscribe" for m in matches)
    return Preferences(
        tenant.name,
        {channel: mask_address(channel, value) for channel, value in addresses.items()},
        tuple(shown),
        unsubscribed,
    )


def save_preferences(
    session: Session,
    keys: TenantKeys,
    link: RecipientLink,
    *,
    chosen: set[str],
    unsubscribe_all: bool,
    client_address: str,
) -> int:
    """Record what changed (source ``preference_center``); returns how many consents changed.

    Opting back in to anything on a channel lifts that address's *unsubscribe*
    suppression (only that kind: bounces and complaints stay)."""
    view = preferences(session, keys, link)
    contact = _contact(session, link)
    actor = recipient_actor(link, client_address)
    changes = []
    for row in view.rows:
        for choice in row.choices:
            wanted = choice.value in chosen and not unsubscribe_all
            if wanted != choice.granted:
                status = Status.GRANTED if wanted else Status.REVOKED
                changes.append(
                    consent.ConsentChange(
                        choice.channel, choice.purpose, status, "preference_center"
                    )
                )
    consent.record_consents(
        session, link.tenant_id, contact_id=contact.id, changes=changes, actor=actor
    )
    addresses = _addresses(contact)
    for channel, value in addresses.items():
        address = suppressions.Address(channel, value)
        entry = suppressions.find_suppression(session, keys, address)
        opted_in = any(c.channel == channel and c.status == Status.GRANTED for c in changes)
        if unsubscribe_all and entry is None:
            suppressions.add_suppression(
                session,
                keys,
                address=address,
                reason="unsubscribe",
                scope=Scope.MARKETING,
                source="preference_center",
                actor=actor,
            )
        elif opted_in and entry is not None and entry.reason == "unsubscribe":
            suppressions.remove_suppression(
                session,
                keys,
                suppression_id=entry.id,
                reason="the recipient opted in again in the preference center",
                actor=actor,
                may_override=False,
            )
    audit.record(
        session,
        tenant_id=link.tenant_id,
        actor=actor,
        action="recipient.preferences",
        object_type="contact",
        object_id=contact.id,
        details={"changed": len(changes), "unsubscribe_all": unsubscribe_all},
    )
    return len(changes)
