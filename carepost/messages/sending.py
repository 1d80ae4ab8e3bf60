"""Accepting messages into the outbox: one or a batch of up to 10,000, in one transaction.

For each message the service finds the recipient (an address, or a contact by id or
external id), checks the sender, content and attachments, renders the content
with the contact and ``data`` (an unknown variable refuses the message before
anything is queued), and decides with the consent rules
(:func:`carepost.consent.decision.may_send`) whether it may go. A refused message
is stored as ``suppressed`` with its reason codes, never dropped silently.

Everything is set-based: idempotency keys, contacts, suppressions and consents
are each read with one statement for the whole batch, and the messages, their
first events and the contacts' timeline entries are written with one executemany
each. A batch is *partial* by default (valid items queued, each invalid one
reported by index) or *atomic* on request (nothing queued when any item is bad).

Idempotency: a key (the ``Idempotency-Key`` header, or ``idempotency_key`` per
batch item) is unique per tenant; a repeat returns the first message. Two
concurrent requests with the same key race on the unique constraint: the loser's
transaction fails and :func:`send_messages` is run again by the caller
(:func:`send_with_retry`), which then finds the winner's message.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.consent.decision import (
    Channel,
    ConsentState,
    Decision,
    SuppressionMatch,
    may_send,
)
from carepost.consent.links import LinkKind, make_token
from carepost.consent.models import ConsentCurrent, Suppression
from carepost.contacts.custom_fields import load_schema
from carepost.contacts.fields import STANDARD_FIELDS, normalize_email
from carepost.contacts.id_sets import dialect_of, id_in, text_in
from carepost.contacts.models import Contact
from carepost.core.config import Settings
from carepost.core.database import new_id, new_ids, utcnow
from carepost.core.errors import CarepostError, FieldError, ValidationFailed
from carepost.core.text import has_forbidden_characters
from carepost.crypto.keyring import TenantKeys
from carepost.messages import ports
from carepost.messages.events import EventRow, write_events
from carepost.messages.models import (
    MESSAGES_TABLE,
    PRIORITIES,
    TEXT_FROM_HTML,
    Message,
    MessageState,
)
from carepost.messages.outbox import Sealer, outbox_writer
from carepost.messages.schemas import MessageIn
from carepost.portal.presets import store_presets

MESSAGE_COLUMNS = tuple(column.key for column in MESSAGES_TABLE.columns)
# A row's values in the order of MESSAGE_COLUMNS (one C call per row, not a loop).
ROW_VALUES = itemgetter(*MESSAGE_COLUMNS)
EMAIL_INDEX_LABEL = STANDARD_FIELDS["email"].index_label
EXTERNAL_ID_INDEX_LABEL = STANDARD_FIELDS["external_id"].index_label
MAX_DATA_BYTES = 64 * 1024
MAX_METADATA_BYTES = 4 * 1024
LATEST_SEND_AT = timedelta(days=90)
IDEMPOTENCY_RETRIES = 3


@dataclass
class SendOutcome:
    """What became of one message (the API's SendResult, without its validation cost)."""

    index: int
    state: str
    id: uuid.UUID | None = None
    reason: str = ""
    duplicate: bool = False
    errors: list[FieldError] = field(default_factory=list)  # field: a JSON pointer

    def as_dict(self) -> dict[str, Any]:
        """For pydantic-core's ``to_json`` (which writes the id as its canonical text)."""
        return {
            "index": self.index,
            "id": self.id,
            "state": self.state,
            "reason": self.reason,
            "duplicate": self.duplicate,
            "errors": [{"pointer": e.field, "detail": e.message} for e in self.errors]
            if self.errors
            else [],
        }


@dataclass(frozen=True)
class SendLimits:
    max_attachment_bytes: int
    base_url: str
    # How long a message's "view in browser" link works (setting ``web_copy_days``).
    web_copy_days: int = 90

    @classmethod
    def from_settings(cls, settings: Settings) -> SendLimits:
        return cls(
            max_attachment_bytes=settings.outbox_max_attachment_bytes,
            base_url=settings.base_url,
            web_copy_days=settings.web_copy_days,
        )


@dataclass
class _Item:
    index: int
    request: MessageIn
    key: str | None
    errors: list[FieldError] = field(default_factory=list)
    address: str = ""
    to_index: str = ""
    contact_id: uuid.UUID | None = None
    by: str = "to"  # to, contact_id or external_id
    lookup: str = ""  # the contact id (text) or the external id's blind index
    from_address: str = ""
    reply_to: str | None = None
    attachments: list[dict[str, str]] | None = None
    duplicate_of: int | None = None
    # Chosen before rendering: the view-in-browser link in the content names it.
    message_id: uuid.UUID = field(default_factory=new_id)


def _fail(item: _Item, pointer: str, message: str) -> None:
    item.errors.append(FieldError(pointer, message))


def _email(value: str, item: _Item, pointer: str) -> str:
    try:
        return normalize_email(value)
    except ValidationFailed:
        _fail(item, pointer, "not a valid email address")
        return ""


@dataclass
class _BatchFacts:
    """What the items of one batch share, worked out once: the sender addresses
    (normalized, or refused) and whether the organization may send from them."""

    addresses: dict[str, str] = field(default_factory=dict)  # "" when not valid
    senders: dict[str, str | None] = field(default_factory=dict)
    names: dict[str, bool] = field(default_factory=dict)  # sender name: one line

    def address(self, value: str, item: _Item, pointer: str) -> str:
        found = self.addresses.get(value)
        if found is None:
            try:
                found = normalize_email(value)
            except ValidationFailed:
                found = ""
            self.addresses[value] = found
        if not found:
            _fail(item, pointer, "not a valid email address")
        return found

    def one_line(self, name: str) -> bool:
        """Whether a sender name is one line without control characters (a batch
        repeats one or a few names)."""
        found = self.names.get(name)
        if found is None:
            found = self.names[name] = not has_forbidden_characters(name)
        return found

    def sender_refused(self, session: Session, tenant_id: uuid.UUID, address: str) -> str | None:
        if address not in self.senders:
            self.senders[address] = ports.check_sender(session, tenant_id, address)
        return self.senders[address]


_SCALARS = (str, int, float, bool, type(None))


def _json_size(value: dict[str, Any]) -> int:
    """The size of ``value`` as compact JSON; a flat object of short scalars (the usual
    personalization data) is bounded without serializing it."""
    if len(value) <= 64 and all(
        type(v) in _SCALARS and (type(v) is not str or len(v) <= 256) for v in value.values()
    ):
        # Each scalar is at most its text (or 6x it, escaped) plus quotes and separators.
        bound = sum(
            len(k) * 6 + 8 + (len(v) * 6 if type(v) is str else 32) for k, v in value.items()
        )
        if bound <= MAX_DATA_BYTES:
            return bound
    return len(json.dumps(value, separators=(",", ":"), default=str))


def _check_item(
    item: _Item, keys: TenantKeys, limits: SendLimits, now: datetime, facts: _BatchFacts
) -> None:
    """Everything that needs no database: shapes, addresses, sizes."""
    request = item.request
    named = [
        name
        for name, value in (
            ("to", request.to),
            ("contact_id", request.contact_id),
            ("external_id", request.external_id),
        )
        if value is not None
    ]
    if len(named) != 1:
        _fail(item, "to", "name the recipient by exactly one of to, contact_id or external_id")
    elif request.to is not None:
        item.address = _email(request.to, item, "to")
        if item.address:
            item.to_index = keys.blind_index(EMAIL_INDEX_LABEL, item.address)
    elif request.contact_id is not None:
        item.by, item.lookup = "contact_id", str(request.contact_id)
    elif request.external_id is not None:
        item.by = "external_id"
        item.lookup = keys.blind_index(EXTERNAL_ID_INDEX_LABEL, request.external_id.strip())
    if request.to_name is not None and has_forbidden_characters(request.to_name):
        _fail(item, "to_name", "must be one line without control characters")
    if request.from_name is not None and not facts.one_line(request.from_name):
        _fail(item, "from_name", "must be one line without control characters")
    # A batch comes from one or a few senders: each is checked once.
    item.from_address = facts.address(request.from_address, item, "from")
    if request.reply_to is not None:
        item.reply_to = facts.address(request.reply_to, item, "reply_to") or None
    if request.template_id is None:
        if request.subject is None:
            _fail(item, "subject", "a subject is required (or a template_id)")
        if request.html is None and request.text is None:
            _fail(item, "html", "give html or text content (or a template_id)")
    elif request.subject is not None or request.html is not None or request.text is not None:
        _fail(item, "template_id", "send either a template_id or raw subject/html/text, not both")
    if request.data and _json_size(request.data) > MAX_DATA_BYTES:
        _fail(item, "data", f"data holds at most {MAX_DATA_BYTES} bytes as JSON")
    if request.metadata and _json_size(request.metadata) > MAX_METADATA_BYTES:
        _fail(item, "metadata", f"metadata holds at most {MAX_METADATA_BYTES} bytes as JSON")
    if request.send_at is not None and request.send_at > now + LATEST_SEND_AT:
        _fail(item, "send_at", "a message can be scheduled at most 90 days ahead")
    _check_attachments(item, limits)


def _check_attachments(item: _Item, limits: SendLimits) -> None:
    if not item.request.attachments:
        return
    total = 0
    kept = []
    for number, attachment in enumerate(item.request.attachments):
        pointer = f"attachments/{number}"
        if has_forbidden_characters(attachment.filename) or "/" in attachment.filename:
            _fail(item, f"{pointer}/filename", "a file name is one line without '/'")
        try:
            content = base64.b64decode(attachment.content, validate=True)
        except (binascii.Error, ValueError):
            _fail(item, f"{pointer}/content", "not valid base64")
            continue
        total += len(content)
        kept.append(
            {
                "filename": attachment.filename,
                "content_type": attachment.content_type.lower(),
                "content": attachment.content,
            }
        )
    if total > limits.max_attachment_bytes:
        _fail(
            item,
            "attachments",
            f"the attachments of one message hold at most {limits.max_attachment_bytes} bytes "
            f"(these hold {total})",
        )
    item.attachments = kept


def _find_existing(
    session: Session, tenant_id: uuid.UUID, keys_wanted: set[str]
) -> dict[str, tuple[uuid.UUID, str, str]]:
    if not keys_wanted:
        return {}
    query = select(Message.idempotency_key, Message.id, Message.state, Message.state_reason).where(
        Message.tenant_id == tenant_id,
        text_in(Message.idempotency_key, keys_wanted, dialect_of(session)),
    )
    return {str(key): (mid, state, reason) for key, mid, state, reason in session.execute(query)}


def _raw_reads_contact(request: MessageIn) -> bool:
    return any("contact" in (part or "") for part in (request.subject, request.html, request.text))


@dataclass(frozen=True)
class _Reachable:
    """What a contact named by id or external id needs to be sent to."""

    id: uuid.UUID
    email: str | None
    email_index: str | None


def _resolve_contacts(
    session: Session,
    tenant_id: uuid.UUID,
    items: list[_Item],
    needs_contact: Callable[[_Item], bool],
    fields_read: Callable[[Sequence[_Item]], frozenset[str] | None],
) -> dict[uuid.UUID, Contact | ports.ContactView]:
    """Fill each item's contact (and address, when named by contact): one SELECT per kind,
    of the id and address only. Returns, by id, the contacts (PHI decrypted) that
    personalization needs: only those of items whose content reads the contact, and of
    them only the standard fields the contents read (``fields_read``), or the whole
    record when a content may read more (custom fields, every field)."""
    dialect = dialect_of(session)
    by_id = {uuid.UUID(i.lookup) for i in items if i.by == "contact_id"}
    by_external = {i.lookup for i in items if i.by == "external_id"}
    by_address = {i.to_index for i in items if i.by == "to" and i.to_index}
    reachable: dict[uuid.UUID, _Reachable] = {}
    id_of_external: dict[str, uuid.UUID] = {}
    if by_id:
        query = select(Contact.id, Contact.email, Contact.email_index).where(
            Contact.tenant_id == tenant_id, id_in(Contact.id, by_id, dialect)
        )
        reachable |= {row[0]: _Reachable(*row) for row in session.execute(query)}
    if by_external:
        by_index = select(
            Contact.id, Contact.email, Contact.email_index, Contact.external_id_index
        ).where(
            Contact.tenant_id == tenant_id,
            text_in(Contact.external_id_index, by_external, dialect),
        )
        for found_id, email, email_index, external_index in session.execute(by_index):
            reachable[found_id] = _Reachable(found_id, email, email_index)
            id_of_external[str(external_index)] = found_id
    id_of_address: dict[str, uuid.UUID] = {}
    if by_address:
        query2 = select(Contact.email_index, Contact.id).where(
            Contact.tenant_id == tenant_id, text_in(Contact.email_index, by_address, dialect)
        )
        id_of_address = {str(index): cid for index, cid in session.execute(query2)}
    for item in items:
        if item.by == "to":
            item.contact_id = id_of_address.get(item.to_index)
            continue
        contact_id = (
            uuid.UUID(item.lookup) if item.by == "contact_id" else id_of_external.get(item.lookup)
        )
        found = reachable.get(contact_id) if contact_id is not None else None
        if found is None:
            _fail(item, item.by, "no such contact")
        elif not found.email or not found.email_index:
            _fail(item, item.by, "this contact has no email address")
        else:
            item.contact_id, item.address, item.to_index = (
                found.id,
                found.email,
                found.email_index,
            )
    full: dict[uuid.UUID, Contact | ports.ContactView] = {}
    # Personalization needs the contact: those it needs, in one go.
    reading = [i for i in items if i.contact_id is not None and not i.errors and needs_contact(i)]
    wanted = {i.contact_id for i in reading if i.contact_id is not None}
    if not wanted:
        return full
    fields = fields_read(reading)
    if fields is None:
        whole = select(Contact).where(
            Contact.tenant_id == tenant_id, id_in(Contact.id, wanted, dialect)
        )
        full |= {c.id: c for c in session.scalars(whole)}
        return full
    # Only the fields read (each decrypted by its column type), as ContactView.of keeps
    # them: those with a value.
    names = sorted(fields)
    some = select(Contact.id, *(getattr(Contact, name) for name in names)).where(
        Contact.tenant_id == tenant_id, id_in(Contact.id, wanted, dialect)
    )
    for contact_id, *values in session.execute(some):
        full[contact_id] = ports.ContactView(
            id=contact_id,
            fields={
                name: value
                for name, value in zip(names, values, strict=True)
                if value not in (None, "")
            },
        )
    return full


def suppressions_by_index(
    session: Session, tenant_id: uuid.UUID, indexes: set[str]
) -> dict[str, SuppressionMatch]:
    """The tenant's suppressions of these address indexes (one query)."""
    if not indexes:
        return {}
    query = select(Suppression.address_index, Suppression.reason, Suppression.scope).where(
        Suppression.tenant_id == tenant_id,
        text_in(Suppression.address_index, indexes, dialect_of(session)),
    )
    return {str(index): SuppressionMatch(r, s) for index, r, s in session.execute(query)}


def email_consents(
    session: Session, tenant_id: uuid.UUID, contact_ids: set[uuid.UUID]
) -> dict[uuid.UUID, dict[tuple[str, str], ConsentState]]:
    """The current email consents of these contacts (one query)."""
    found: dict[uuid.UUID, dict[tuple[str, str], ConsentState]] = {}
    if not contact_ids:
        return found
    query = select(
        ConsentCurrent.contact_id,
        ConsentCurrent.channel,
        ConsentCurrent.purpose,
        ConsentCurrent.status,
        ConsentCurrent.expires_at,
    ).where(
        ConsentCurrent.tenant_id == tenant_id,
        ConsentCurrent.channel == Channel.EMAIL,
        id_in(ConsentCurrent.contact_id, contact_ids, dialect_of(session)),
    )
    for contact_id, channel, purpose, status, expires_at in session.execute(query):
        found.setdefault(contact_id, {})[(channel, purpose)] = ConsentState(status, expires_at)
    return found


def recipient_links(
    keys: TenantKeys, contact_id: uuid.UUID | None, base_url: str, now: datetime
) -> dict[str, str]:
    """The per-message links templates may use: signed, ids only, never an address."""
    if contact_id is None:
        return {}
    unsubscribe = make_token(keys, LinkKind.UNSUBSCRIBE, contact_id, Channel.EMAIL, now=now)
    preferences = make_token(keys, LinkKind.PREFERENCES, contact_id, Channel.EMAIL, now=now)
    return {
        "unsubscribe_url": f"{base_url}/u/{unsubscribe}",
        "preferences_url": f"{base_url}/p/{preferences}",
    }


@dataclass
class _Rendering:
    """What rendering a batch shares: each saved template (and variant) compiled once,
    or the error that refused it, and the tenant's custom field keys."""

    templates: dict[tuple[uuid.UUID, str | None], ports.PreparedTemplate | CarepostError] = field(
        default_factory=dict
    )
    # Raw content by (subject, html, text): a batch usually repeats one content with
    # different data, so it is compiled and analysed once, not per message.
    raw: dict[tuple[str, str | None, str | None], ports.PreparedTemplate | CarepostError] = field(
        default_factory=dict
    )
    custom_fields: list[str] | None = None
    # Whether a saved template (and variant) names ``contact`` anywhere.
    reading: dict[tuple[uuid.UUID, str | None], bool] = field(default_factory=dict)
    # The standard contact fields a content reads (None: it may read more).
    read_fields: dict[tuple[Any, ...], frozenset[str] | None] = field(default_factory=dict)

    def raw_content(
        self, subject: str, html: str | None, text: str | None
    ) -> ports.PreparedTemplate:
        """Raw content compiled as :func:`carepost.templates.rendering.render_raw` does
        (PHI judged without the tenant's field definitions: any custom field is PHI)."""
        found = self.raw.get((subject, html, text))
        if found is None:
            try:
                parts = ports.compile_content(subject, html, text)
                trees = [part.tree for part in parts if part is not None]
                found = ports.PreparedTemplate(
                    subject=parts[0],
                    html=parts[1],
                    text=parts[2],
                    uses_phi=ports.uses_phi(ports.contact_references(trees), {}),
                )
            except CarepostError as failed:
                found = failed
            self.raw[(subject, html, text)] = found
        if isinstance(found, CarepostError):
            raise found
        return found

    def prepared(
        self, session: Session, keys: TenantKeys, template_id: uuid.UUID, variant: str | None
    ) -> ports.PreparedTemplate:
        found = self.templates.get((template_id, variant))
        if found is None:
            try:
                found = ports.prepare_template(session, keys, template_id, variant=variant)
            except CarepostError as failed:
                found = failed
            self.templates[(template_id, variant)] = found
        if isinstance(found, CarepostError):
            raise found
        return found

    def reads_contact(self, session: Session, keys: TenantKeys, request: MessageIn) -> bool:
        """Whether the content names ``contact`` at all (else rendering never needs the
        contact's fields, and they are not read and decrypted)."""
        if request.template_id is None:
            return _raw_reads_contact(request)
        key = (request.template_id, request.variant)
        found = self.reading.get(key)
        if found is None:
            try:
                prepared = self.prepared(session, keys, request.template_id, request.variant)
            except CarepostError:
                found = False  # the template cannot render: the item fails without it
            else:
                references = ports.contact_references(part.tree for part in prepared.parts())
                found = bool(references.every_field or references.fields or references.custom)
            self.reading[key] = found
        return found

    def load(
        self,
        session: Session,
        keys: TenantKeys,
        tenant_id: uuid.UUID,
        items: Sequence[_Item],
        with_contacts: bool,
    ) -> None:
        """Read (and compile) now what rendering ``items`` will need from the database:
        their saved templates and, when contacts are rendered, the custom fields."""
        for item in items:
            request = item.request
            if request.template_id is not None:
                # A template that cannot render is remembered: the item fails then.
                with suppress(CarepostError):
                    self.prepared(session, keys, request.template_id, request.variant)
        if with_contacts and self.custom_fields is None:
            self.custom_fields = list(load_schema(session, tenant_id))

    def fields_read(
        self, session: Session, keys: TenantKeys, items: Sequence[_Item]
    ) -> frozenset[str] | None:
        """The standard contact fields the contents of ``items`` read, or None when one
        may read more (a custom field, every field) or does not compile (the whole
        record is read then, as before; the item fails when it renders)."""
        fields: set[str] = set()
        for item in items:
            request = item.request
            key: tuple[Any, ...] = (
                (request.subject, request.html, request.text)
                if request.template_id is None
                else (request.template_id, request.variant)
            )
            if key not in self.read_fields:
                found: frozenset[str] | None
                try:
                    if request.template_id is None:
                        prepared = self.raw_content(
                            request.subject or "", request.html, request.text
                        )
                    else:
                        prepared = self.prepared(
                            session, keys, request.template_id, request.variant
                        )
                except CarepostError:
                    found = None
                else:
                    references = ports.contact_references(part.tree for part in prepared.parts())
                    found = (
                        None
                        if references.every_field or references.custom
                        else frozenset(references.fields)
                    )
                self.read_fields[key] = found
            read = self.read_fields[key]
            if read is None:
                return None
            fields |= read
        return frozenset(fields)

    def contact_view(
        self, session: Session, contact: Contact | ports.ContactView
    ) -> ports.ContactView:
        if isinstance(contact, ports.ContactView):
            return contact  # read with only the fields the contents read
        if self.custom_fields is None:
            self.custom_fields = list(load_schema(session, contact.tenant_id))
        return ports.ContactView.of(contact, self.custom_fields)


def _body(content: ports.RenderedMessage) -> dict[str, Any]:
    """The stored content; says when the text part was made from the HTML, so that
    the protection stage's DLP scan does not make it again to compare them."""
    body: dict[str, Any] = {"html": content.html, "text": content.text}
    if content.text_from_html:
        body[TEXT_FROM_HTML] = True
    return body


def _render(
    session: Session,
    keys: TenantKeys,
    item: _Item,
    contacts: Mapping[uuid.UUID, Contact | ports.ContactView],
    limits: SendLimits,
    now: datetime,
    shared: _Rendering,
) -> ports.RenderedMessage | None:
    request = item.request
    contact = contacts.get(item.contact_id) if item.contact_id else None
    view = shared.contact_view(session, contact) if contact is not None else None
    data: dict[str, Any] = dict(request.data)
    if request.template_id is not None or any(
        "_url" in (part or "") for part in (request.subject, request.html, request.text)
    ):
        data |= recipient_links(keys, item.contact_id, limits.base_url, now)
        web_copy = ports.view_url(
            keys,
            item.message_id,
            limits.base_url,
            now=now,
            ttl=timedelta(days=limits.web_copy_days),
        )
        data["view_in_browser_url"] = web_copy
    try:
        if request.template_id is not None:
            prepared = shared.prepared(session, keys, request.template_id, request.variant)
            return prepared.render(contact=view, data=data)
        prepared = shared.raw_content(request.subject or "", request.html, request.text)
        return prepared.render(contact=view, data=data)
    except CarepostError as failed:
        part = failed.extensions.get("part") or (
            "template_id" if request.template_id is not None else "subject"
        )
        _fail(item, part, failed.detail)
        return None


@dataclass
class SendContext:
    """Who sends, and the limits of this deployment."""

    actor: audit.Actor
    limits: SendLimits
    atomic: bool = False
    campaign_id: uuid.UUID | None = None


def send_messages(
    session: Session,
    keys: TenantKeys,
    requests: Sequence[tuple[MessageIn, str | None]],
    context: SendContext,
    *,
    now: datetime | None = None,
) -> list[SendOutcome]:
    """Accept messages (each with its idempotency key); one result per request, in order."""
    now = now or utcnow()
    tenant_id = keys.tenant_id
    ids = new_ids(len(requests))
    items = [
        _Item(index, request, key, message_id=ids[index])
        for index, (request, key) in enumerate(requests)
    ]
    facts = _BatchFacts()
    results: list[SendOutcome | None] = [None] * len(items)
    existing = _find_existing(session, tenant_id, {i.key for i in items if i.key})
    first_with_key: dict[str, int] = {}
    fresh: list[_Item] = []
    for item in items:
        if item.key is not None and item.key in existing:
            message_id, state, reason = existing[item.key]
            results[item.index] = SendOutcome(item.index, state, message_id, reason, duplicate=True)
        elif item.key is not None and item.key in first_with_key:
            item.duplicate_of = first_with_key[item.key]
        else:
            if item.key is not None:
                first_with_key[item.key] = item.index
            _check_item(item, keys, context.limits, now, facts)
            fresh.append(item)
    checked = [i for i in fresh if not i.errors]
    rendering = _Rendering()
    contacts = _resolve_contacts(
        session,
        tenant_id,
        checked,
        lambda item: rendering.reads_contact(session, keys, item.request),
        lambda reading: rendering.fields_read(session, keys, reading),
    )
    for item in checked:
        refused = (
            None if item.errors else facts.sender_refused(session, tenant_id, item.from_address)
        )
        if refused:
            _fail(item, "from", refused)
    to_render = [i for i in checked if not i.errors]
    # Everything rendering reads from the database is read now: while the messages
    # stream into the outbox (one COPY on PostgreSQL) the connection runs nothing else.
    rendering.load(session, keys, tenant_id, to_render, bool(contacts))
    suppressions = suppressions_by_index(session, tenant_id, {i.to_index for i in to_render})
    consents = email_consents(session, tenant_id, {i.contact_id for i in to_render if i.contact_id})
    good: list[_Item] = []
    queued = 0
    seal = Sealer(keys, MESSAGES_TABLE)
    decided: dict[tuple[SuppressionMatch | None, str, bool], Decision] = {}
    # Atomic with a bad item already known: rendered for their errors, nothing written.
    doomed = context.atomic and any(i.errors for i in fresh)
    events: list[EventRow] = []
    with outbox_writer(session, MESSAGES_TABLE, MESSAGE_COLUMNS) as write:
        for item in to_render:
            # Rendered, sealed and written one by one: on PostgreSQL the rows stream
            # into one binary COPY, and the server stores them while the next ones
            # render (on the other core).
            content = _render(session, keys, item, contacts, context.limits, now, rendering)
            if content is None:
                doomed = doomed or context.atomic
                continue
            if doomed:
                continue
            request = item.request
            suppression = suppressions.get(item.to_index)
            contact_consents = consents.get(item.contact_id) if item.contact_id else None
            if contact_consents:
                decision = may_send(
                    contact_consents,
                    suppression,
                    Channel.EMAIL,
                    request.purpose,
                    content.uses_phi,
                    now,
                )
            else:
                # Without consents recorded the decision depends on these alone.
                shared = (suppression, request.purpose, content.uses_phi)
                decision = decided.get(shared) or decided.setdefault(
                    shared,
                    may_send(
                        {}, suppression, Channel.EMAIL, request.purpose, content.uses_phi, now
                    ),
                )
            state = MessageState.QUEUED if decision.allowed else MessageState.SUPPRESSED
            reason = "" if decision.allowed else ",".join(decision.reasons)
            message_id = item.message_id
            due = max(request.send_at or now, now)
            row = {
                "id": message_id,
                "tenant_id": tenant_id,
                "contact_id": item.contact_id,
                "campaign_id": context.campaign_id,
                "to_address": seal.text("to_address", item.address),
                "to_index": item.to_index,
                "to_name": seal.text("to_name", request.to_name),
                "from_address": item.from_address,
                "from_name": request.from_name,
                "reply_to": item.reply_to,
                "subject": seal.text("subject", content.subject),
                "body": seal.json("body", _body(content)),
                "data": seal.json("data", request.data or None),
                "attachments": seal.json("attachments", item.attachments or None),
                "metadata": seal.json("metadata", request.metadata or None),
                "tags": list(request.tags),
                "template_id": content.template_id,
                "variant": content.variant,
                "uses_phi": content.uses_phi,
                "purpose": request.purpose,
                "priority": PRIORITIES[request.priority],
                "state": state,
                "state_reason": reason[:200],
                "attempts": 0,
                "next_attempt_at": due,
                "lease_until": None,
                "lease_owner": "",
                "first_queued_at": due,
                "last_event_at": now,
                "sent_at": None,
                "idempotency_key": item.key,
                "created_at": now,
                "created_by_type": context.actor.type,
                "created_by_id": context.actor.id,
                # Decided when the message is prepared for delivery (carepost/protection).
                "protection_method": None,
                "protection_tls": None,
                "protection_reasons": None,
            }
            write(ROW_VALUES(row))
            good.append(item)
            queued += state == MessageState.QUEUED
            detail: dict[str, Any] = {"reasons": list(decision.reasons)} if reason else {}
            if request.send_at is not None and request.send_at > now:
                detail["send_at"] = due.isoformat()
            events.append((message_id, item.contact_id, state, detail))
            results[item.index] = SendOutcome(item.index, state, message_id, reason)
    bad = [i for i in fresh if i.errors]
    if bad and context.atomic:
        # The transaction rolls back: nothing of the batch stays.
        raise ValidationFailed(
            f"{len(bad)} of {len(items)} messages are invalid: nothing was queued",
            errors=[
                FieldError(f"#/body/items/{i.index}/{e.field}", e.message)
                for i in bad
                for e in i.errors
            ],
        )
    if good:
        write_events(session, tenant_id, events, now=now, campaign_id=context.campaign_id)
        _store_portal_presets(session, keys, good, now)
    for item in bad:
        results[item.index] = SendOutcome(
            item.index,
            "error",
            errors=[
                FieldError(f"#/body/items/{item.index}/{e.field}", e.message) for e in item.errors
            ],
        )
    for item in items:
        if item.duplicate_of is not None:
            first = results[item.duplicate_of]
            assert first is not None
            results[item.index] = SendOutcome(
                item.index, first.state, first.id, first.reason, True, first.errors
            )
    if good and context.campaign_id is None:
        # A campaign's batches are audited by the campaign (start, counts), not each.
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=context.actor,
            action="message.send",
            object_type="message",
            object_id=str(good[0].message_id) if len(good) == 1 else "",
            details={"queued": queued, "suppressed": len(good) - queued, "failed": len(bad)},
        )
    return [r for r in results if r is not None]


def _store_portal_presets(
    session: Session, keys: TenantKeys, written: Sequence[_Item], now: datetime
) -> None:
    """The portal's identity question set with a message (``portal``): hashed and stored
    by the portal (carepost/portal/presets.py), never in the message or its metadata."""
    presets = [
        (i.message_id, identity)
        for i in written
        if (identity := getattr(i.request, "portal", None)) is not None
    ]
    if presets:
        store_presets(session, keys, presets, now=now)


def send_with_retry(
    unit_of_work: Callable[[], AbstractContextManager[Session]],
    keys: TenantKeys,
    requests: Sequence[tuple[MessageIn, str | None]],
    context: SendContext,
) -> list[SendOutcome]:
    """:func:`send_messages` in its own transaction, run again when a concurrent request
    with the same idempotency key committed first (the repeat then finds its message)."""
    for attempt in range(IDEMPOTENCY_RETRIES):
        try:
            with unit_of_work() as session:
                return send_messages(session, keys, requests, context)
        except IntegrityError:
            if attempt == IDEMPOTENCY_RETRIES - 1 or not any(key for _r, key in requests):
                raise
    raise AssertionError("unreachable")
