"""The tenant-wide suppression list: addresses nothing (or no marketing) goes to.

Entries come from unsubscribes, hard bounces, complaints, people adding them by
hand and imported lists. One entry per address: adding an address already listed
widens its scope when the new entry is broader (an unsubscribe followed by a hard
bounce suppresses everything) and otherwise changes nothing.

The address is PHI: stored encrypted, found by a keyed blind index computed with
the same labels as the contact's email and phone indexes, so "suppressed contacts"
is a join of index columns. Errors and audit events never quote an address.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.consent.decision import Channel, Purpose, Scope, SuppressionMatch
from carepost.consent.models import Suppression
from carepost.contacts.fields import STANDARD_FIELDS, normalize_email, normalize_phone
from carepost.contacts.models import Contact
from carepost.core.database import new_id, utcnow
from carepost.core.errors import NotFound, PermissionDenied, ValidationFailed
from carepost.crypto.keyring import TenantKeys

# "deceased": set by a FHIR import for a Patient with deceased[x] (docs/fhir-import.md).
REASONS = ("unsubscribe", "hard_bounce", "complaint", "manual", "imported", "deceased")
# Entries a sender may not lift on its own: mailbox providers act on them.
PROTECTED_REASONS = frozenset({"hard_bounce", "complaint"})
OVERRIDE_PERMISSION = "suppressions:override"
SOURCES = (
    "api",
    "import",
    "one_click",
    "mailto",
    "preference_center",
    "bounce",
    "complaint",
    "console",
)
DEFAULT_SCOPE = {"unsubscribe": Scope.MARKETING}
SCOPE_RANK = {Scope.MARKETING: 1, Scope.ALL: 2}
IMPORT_BATCH = 1000
MAX_REPORTED_ERRORS = 1000
# What the upload's decoder puts in place of bytes that are not UTF-8.
UNDECODABLE = "\ufffd"
_INDEX_LABEL = {Channel.EMAIL: "email", Channel.SMS: "phone"}


@dataclass(frozen=True)
class Address:
    """A normalized address with its channel (email, or an E.164 number for SMS)."""

    channel: str
    value: str

    def index(self, keys: TenantKeys) -> str:
        spec = STANDARD_FIELDS[_INDEX_LABEL[Channel(self.channel)]]
        return keys.blind_index(spec.index_label, self.value)


def parse_address(raw: str, *, field: str = "address") -> Address:
    """An email address or an E.164 phone number; the message never quotes the value."""
    text = raw.strip()
    try:
        if "@" in text:
            return Address(Channel.EMAIL, normalize_email(text))
        if text.startswith("+"):
            return Address(Channel.SMS, normalize_phone(text))
    except ValidationFailed:
        pass
    raise ValidationFailed(
        "not an email address or an international phone number (+14155552671)", field=field
    )


def _scope_for(reason: str, scope: str | None) -> str:
    if reason not in REASONS:
        raise ValidationFailed(f"must be one of {', '.join(REASONS)}", field="reason")
    chosen = scope or DEFAULT_SCOPE.get(reason, Scope.ALL)
    if chosen not in tuple(Scope):
        raise ValidationFailed("must be all or marketing", field="scope")
    return str(chosen)


def find_suppression(session: Session, keys: TenantKeys, address: Address) -> Suppression | None:
    return session.scalar(
        select(Suppression).where(
            Suppression.tenant_id == keys.tenant_id,
            Suppression.address_index == address.index(keys),
        )
    )


def suppression_match(
    session: Session, keys: TenantKeys, address: str | Address
) -> SuppressionMatch | None:
    """The suppression of an address, shaped for :func:`carepost.consent.decision.may_send`."""
    parsed = address if isinstance(address, Address) else parse_address(address)
    row = session.execute(
        select(Suppression.reason, Suppression.scope).where(
            Suppression.tenant_id == keys.tenant_id,
            Suppression.address_index == parsed.index(keys),
        )
    ).one_or_none()
    return SuppressionMatch(row.reason, row.scope) if row is not None else None


def is_suppressed(session: Session, keys: TenantKeys, address: str | Address, purpose: str) -> bool:
    """Whether a message of ``purpose`` to ``address`` is blocked by the suppression list."""
    match = suppression_match(session, keys, address)
    if match is None:
        return False
    return match.scope == Scope.ALL or purpose != Purpose.TRANSACTIONAL


def add_suppression(
    session: Session,
    keys: TenantKeys,
    *,
    address: str | Address,
    reason: str,
    source: str,
    actor: audit.Actor,
    scope: str | None = None,
) -> tuple[Suppression, bool]:
    """Suppress an address; returns the entry and whether it is new."""
    parsed = address if isinstance(address, Address) else parse_address(address)
    chosen = _scope_for(reason, scope)
    if source not in SOURCES:
        raise ValidationFailed(f"must be one of {', '.join(SOURCES)}", field="source")
    existing = find_suppression(session, keys, parsed)
    if existing is None:
        entry = Suppression(
            id=new_id(),
            tenant_id=keys.tenant_id,
            channel=parsed.channel,
            address=parsed.value,
            address_index=parsed.index(keys),
            reason=reason,
            scope=chosen,
            source=source,
            created_by_type=actor.type,
            created_by_id=actor.id,
            created_by_label=actor.label,
        )
        try:
            with session.begin_nested():
                session.add(entry)
                session.flush()
        except IntegrityError:
            # A concurrent writer listed it first: that entry stands (and may widen below).
            existing = find_suppression(session, keys, parsed)
            if existing is None:
                raise
        else:
            _audit(session, keys, actor, "suppression.create", entry)
            return entry, True
    if SCOPE_RANK[Scope(chosen)] > SCOPE_RANK[Scope(existing.scope)]:
        existing.scope, existing.reason, existing.source = chosen, reason, source
        session.flush()
        _audit(session, keys, actor, "suppression.widen", existing)
    return existing, False


def _audit(
    session: Session,
    keys: TenantKeys,
    actor: audit.Actor,
    action: str,
    entry: Suppression,
    reason: str = "",
) -> None:
    audit.record(
        session,
        tenant_id=keys.tenant_id,
        actor=actor,
        action=action,
        object_type="suppression",
        object_id=entry.id,
        reason=reason,
        details={
            "channel": entry.channel,
            "reason": entry.reason,
            "scope": entry.scope,
            "source": entry.source,
        },
    )


@dataclass(frozen=True)
class ContactSuppression:
    """A suppression that matches one of a contact's addresses (never the address)."""

    id: uuid.UUID
    channel: str
    reason: str
    scope: str
    source: str
    created_at: datetime


def suppressions_of_contact(
    session: Session, tenant_id: uuid.UUID, contact_id: uuid.UUID
) -> list[ContactSuppression]:
    """The entries suppressing a contact's email or phone: a join of blind-index
    columns (the same labels on both sides), so nothing is decrypted."""
    matches_address = or_(
        and_(
            Suppression.channel == Channel.EMAIL,
            Suppression.address_index == Contact.email_index,
        ),
        and_(
            Suppression.channel == Channel.SMS,
            Suppression.address_index == Contact.phone_index,
        ),
    )
    query = (
        select(
            Suppression.id,
            Suppression.channel,
            Suppression.reason,
            Suppression.scope,
            Suppression.source,
            Suppression.created_at,
        )
        .join(Contact, matches_address)
        .where(
            Suppression.tenant_id == tenant_id,
            Contact.tenant_id == tenant_id,
            Contact.id == contact_id,
        )
        .order_by(Suppression.channel)
    )
    return [ContactSuppression(*row) for row in session.execute(query)]


def get_suppression(
    session: Session, tenant_id: uuid.UUID, suppression_id: uuid.UUID
) -> Suppression:
    entry = session.scalar(
        select(Suppression).where(
            Suppression.tenant_id == tenant_id, Suppression.id == suppression_id
        )
    )
    if entry is None:
        raise NotFound("no such suppression")
    return entry


def list_suppressions(
    session: Session, tenant_id: uuid.UUID, *, after: uuid.UUID | None = None, limit: int = 100
) -> list[Suppression]:
    query = select(Suppression).where(Suppression.tenant_id == tenant_id).order_by(Suppression.id)
    if after is not None:
        query = query.where(Suppression.id > after)
    return list(session.scalars(query.limit(limit)))


def remove_suppression(
    session: Session,
    keys: TenantKeys,
    *,
    suppression_id: uuid.UUID,
    reason: str,
    actor: audit.Actor,
    may_override: bool,
) -> None:
    """Lift a suppression, saying why; bounces and complaints need ``suppressions:override``."""
    entry = get_suppression(session, keys.tenant_id, suppression_id)
    if entry.reason in PROTECTED_REASONS and not may_override:
        raise PermissionDenied(
            f"lifting a {entry.reason.replace('_', ' ')} needs the "
            f"{OVERRIDE_PERMISSION!r} permission"
        )
    if not reason.strip():
        raise ValidationFailed("say why the suppression is lifted", field="reason")
    _audit(session, keys, actor, "suppression.delete", entry, reason=reason.strip())
    session.delete(entry)
    session.flush()


# --- import ---------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did: counts, and the rejected lines (line number, column, why)."""

    imported: int = 0
    already_listed: int = 0
    rejected: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)

    def reject(self, line: int, column: str, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append((line, column, message))


def _rows(lines: Iterable[str], report: ImportReport) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise ValidationFailed("the file is empty", field="file") from None
    columns = [name.strip().lower() for name in header]
    if "address" not in columns:
        raise ValidationFailed(
            "the first line must name the columns, one of them 'address'", field="file"
        )
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            report.reject(reader.line_num, "", "not valid CSV (a NUL byte, or a field too long)")
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if any(UNDECODABLE in cell for cell in row):
            report.reject(line, "", "not UTF-8 text")
            continue
        if len(row) != len(columns):
            report.reject(line, "", f"expected {len(columns)} columns, found {len(row)}")
            continue
        yield line, dict(zip(columns, row, strict=True))


def import_suppressions(
    session: Session,
    keys: TenantKeys,
    lines: Iterable[str],
    *,
    actor: audit.Actor,
    default_reason: str = "imported",
) -> ImportReport:
    """Stream a CSV (columns ``address``, optional ``reason`` and ``scope``) into the list.

    Rows are checked one by one and written in batches; a bad row is reported by its
    line number and skipped while the good rows import. Addresses already listed are
    counted and left as they are.
    """
    report = ImportReport()
    _scope_for(default_reason, None)
    batch: dict[str, dict[str, object]] = {}

    def flush() -> None:
        if not batch:
            return
        taken = set(
            session.scalars(
                select(Suppression.address_index).where(
                    Suppression.tenant_id == keys.tenant_id,
                    Suppression.address_index.in_(list(batch)),
                )
            )
        )
        fresh = [row for index, row in batch.items() if index not in taken]
        report.already_listed += len(batch) - len(fresh)
        if fresh:
            session.execute(insert(Suppression), fresh)
        report.imported += len(fresh)
        batch.clear()

    for line, row in _rows(lines, report):
        try:
            address = parse_address(row["address"])
            reason = row.get("reason", "").strip() or default_reason
            scope = _scope_for(reason, row.get("scope", "").strip() or None)
        except ValidationFailed as error:
            column = error.errors[0].field if error.errors else ""
            report.reject(line, column, error.detail)
            continue
        index = address.index(keys)
        if index in batch:
            report.already_listed += 1
            continue
        batch[index] = {
            "id": new_id(),
            "tenant_id": keys.tenant_id,
            "created_at": utcnow(),
            "channel": address.channel,
            "address": address.value,
            "address_index": index,
            "reason": reason,
            "scope": scope,
            "source": "import",
            "created_by_type": actor.type,
            "created_by_id": actor.id,
            "created_by_label": actor.label,
        }
        if len(batch) >= IMPORT_BATCH:
            flush()
    flush()
    audit.record(
        session,
        tenant_id=keys.tenant_id,
        actor=actor,
        action="suppression.import",
        object_type="suppression",
        details={
            "imported": report.imported,
            "already_listed": report.already_listed,
            "rejected": report.rejected,
        },
    )
    return report
