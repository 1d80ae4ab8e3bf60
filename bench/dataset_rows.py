"""The rows of the benchmark data set, one chunk of people at a time.

Pure apart from the tenant's keys: each chunk's rows are built from the people of
:mod:`bench.people` and a generator seeded by (seed, chunk), sealed and tokenized
exactly as the services do (column types, :mod:`carepost.contacts.sync`), then
written by :func:`write_chunk`.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from bench.bulk_load import RowWriter, table_of
from bench.people import AS_OF, Person, block_rng, seeded_id
from carepost.consent.models import ConsentCurrent, ConsentRecord
from carepost.contacts import sync
from carepost.contacts.activity_models import ContactEvent, ListMembership
from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.models import Contact, ContactIdentifier, ContactStageHistory
from carepost.contacts.values import FieldSpec, normalize_custom
from carepost.crypto.keyring import TenantKeys

# Bump when the generated data changes shape: an older data set is then rebuilt.
VERSION = 2
LISTS = ("diabetes-program", "newsletter", "flu-shot-2025", "care-management")
# Event kinds and their share of all events.
EVENT_KINDS = (
    ("email_opened", 44),
    ("portal_login", 24),
    ("email_clicked", 12),
    ("appointment_kept", 11),
    ("form_submitted", 9),
)
EVENT_SOURCES = {
    "email_opened": "email",
    "email_clicked": "email",
    "portal_login": "portal",
    "appointment_kept": "ehr",
    "form_submitted": "web_form",
}
# Events happen more by day than by night (UTC hours shifted for US time zones).
HOUR_WEIGHTS = (2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 8, 8, 8, 8, 7, 6, 4, 3)
EVENT_DAYS = 730
CONSENT_SOURCES = (("web_form", 50), ("import", 30), ("paper", 15), ("preference_center", 5))


@dataclass
class Dataset:
    """What the generator created: the tenant and what a benchmark needs to query it."""

    tenant_id: uuid.UUID
    contacts: int
    events: int
    seed: int
    list_ids: dict[str, uuid.UUID]
    kind_ids: dict[str, int]
    as_of: datetime = AS_OF

    def info(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "contacts": self.contacts,
            "events": self.events,
            "seed": self.seed,
            "as_of": self.as_of.isoformat(),
            "lists": {name: str(list_id) for name, list_id in self.list_ids.items()},
            "event_kinds": dict(self.kind_ids),
        }


class ChunkRows:
    """Every row of one chunk of people, built in memory and then written table by table."""

    def __init__(self) -> None:
        self.contacts: list[tuple[Any, ...]] = []
        self.identifiers: list[tuple[Any, ...]] = []
        self.tokens: list[tuple[Any, ...]] = []
        self.stages: list[tuple[Any, ...]] = []
        self.members: list[tuple[Any, ...]] = []
        self.records: list[tuple[Any, ...]] = []
        self.current: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []


CONTACT_COLUMNS = (
    "id",
    "tenant_id",
    "created_at",
    "email",
    "email_index",
    "phone",
    "phone_index",
    "first_name",
    "last_name",
    "birth_date",
    "custom",
    "journey_stage",
    "language",
    "timezone",
)
IDENTIFIER_COLUMNS = ("id", "tenant_id", "contact_id", "kind", "value", "value_index")
TOKEN_COLUMNS = ("tenant_id", "contact_id", "field_key", "token")
STAGE_COLUMNS = ("id", "tenant_id", "contact_id", "stage", "previous_stage", "changed_at")
MEMBER_COLUMNS = ("tenant_id", "list_id", "contact_id", "joined_at", "left_at")
RECORD_COLUMNS = (
    "id",
    "tenant_id",
    "created_at",
    "contact_id",
    "channel",
    "purpose",
    "status",
    "source",
    "captured_at",
    "recorded_by_type",
    "recorded_by_id",
)
CURRENT_COLUMNS = (
    "contact_id",
    "channel",
    "purpose",
    "tenant_id",
    "status",
    "record_id",
    "captured_at",
)
EVENT_COLUMNS = ("tenant_id", "contact_id", "kind_id", "occurred_at", "source")


class Sealer:
    """Encrypts values exactly as the column types do (same labels, same serialization)."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        table = table_of(Contact)
        self.types = {
            name: table.c[name].type
            for name in ("email", "phone", "first_name", "last_name", "birth_date", "custom")
        }
        self.identifier_type = table_of(ContactIdentifier).c.value.type

    def contact(self, name: str, value: Any) -> bytes | None:
        sealed: bytes | None = self.types[name].process_bind_param(value, self.dialect)
        return sealed

    def identifier(self, value: str) -> bytes:
        sealed: bytes = self.identifier_type.process_bind_param(value, self.dialect)
        return sealed


class MemoKeys(TenantKeys):
    """The tenant's keys with blind indexes memoized: segmentation tokens repeat a lot
    (a few choices, 730 visit days, ~36,000 birth dates), and each is still computed
    once by :meth:`TenantKeys.blind_index` itself, so the tokens are the service's."""

    _memo: dict[tuple[str, str], str]

    @classmethod
    def of(cls, keys: TenantKeys) -> MemoKeys:
        memo = cls(keys.tenant_id, keys.data_keys, keys.active_version, keys.index_key)
        memo._memo = {}
        return memo

    def blind_index(self, label: str, value: str) -> str:
        token = self._memo.get((label, value))
        if token is None:
            if len(self._memo) > 1_000_000:  # stays small for categorical fields anyway
                self._memo.clear()
            token = self._memo[(label, value)] = super().blind_index(label, value)
        return token


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    span = max(int((end - start).total_seconds()), 1)
    return start + timedelta(seconds=rng.randint(0, span))


def build_chunk(
    keys: TenantKeys,
    token_keys: MemoKeys,
    schema: dict[str, FieldSpec],
    sealer: Sealer,
    dataset: Dataset,
    chunk: list[Person],
    event_quota: int,
    block_number: int,
) -> ChunkRows:
    """The rows of ``chunk`` and of ``event_quota`` events spread over its people."""
    tenant_id = keys.tenant_id
    rows = ChunkRows()
    rng = block_rng(dataset.seed, block_number, "rows")
    email_label = STANDARD_FIELDS["email"].index_label
    phone_label = STANDARD_FIELDS["phone"].index_label
    for person in chunk:
        custom = normalize_custom(schema, person.custom, now=AS_OF)
        rows.contacts.append(
            (
                person.id,
                tenant_id,
                person.created_at,
                sealer.contact("email", person.email),
                keys.blind_index(email_label, person.email) if person.email else None,
                sealer.contact("phone", person.phone),
                keys.blind_index(phone_label, person.phone) if person.phone else None,
                sealer.contact("first_name", person.first_name),
                sealer.contact("last_name", person.last_name),
                sealer.contact("birth_date", person.birth_date),
                sealer.contact("custom", custom),
                person.journey_stage,
                person.language,
                person.timezone,
            )
        )
        if person.mrn:
            rows.identifiers.append(
                (
                    seeded_id(rng, person.created_at),
                    tenant_id,
                    person.id,
                    "mrn",
                    sealer.identifier(person.mrn),
                    sync.identifier_token(keys, "mrn", person.mrn),
                )
            )
        rows.tokens += [
            (tenant_id, person.id, key, token)
            for key, token in dict.fromkeys(
                sync.contact_tokens(token_keys, schema, custom, person.birth_date)
            )
        ]
        _stage_rows(rows, rng, tenant_id, person)
        _member_rows(rows, rng, tenant_id, person, dataset.list_ids)
        if person.email and rng.random() < 0.65:  # ~60% of all contacts
            _consent_rows(rows, rng, tenant_id, person)
    _event_rows(rows, rng, tenant_id, chunk, event_quota, dataset.kind_ids)
    return rows


def _stage_rows(rows: ChunkRows, rng: random.Random, tenant_id: uuid.UUID, person: Person) -> None:
    # Created as "new" (as the upsert path records it), moved on later.
    rows.stages.append(
        (seeded_id(rng, person.created_at), tenant_id, person.id, "new", None, person.created_at)
    )
    if person.journey_stage != "new":
        moved = _between(rng, person.created_at, AS_OF)
        rows.stages.append(
            (seeded_id(rng, moved), tenant_id, person.id, person.journey_stage, "new", moved)
        )


def _member_rows(
    rows: ChunkRows,
    rng: random.Random,
    tenant_id: uuid.UUID,
    person: Person,
    list_ids: dict[str, uuid.UUID],
) -> None:
    diabetic = "e11" in person.custom.get("conditions", ())
    chances = {
        "diabetes-program": 0.85 if diabetic else 0.12,
        "newsletter": 0.35,
        "flu-shot-2025": 0.15,
        "care-management": 0.15 if person.journey_stage == "at-risk" else 0.035,
    }
    for name, chance in chances.items():
        if rng.random() >= chance:
            continue
        joined = _between(rng, person.created_at, AS_OF)
        left = None
        if name == "newsletter" and rng.random() < 0.1:
            left = _between(rng, joined, AS_OF)
            if rng.random() < 0.3:  # came back: a closed stint, then a current one
                rows.members.append((tenant_id, list_ids[name], person.id, joined, left))
                joined, left = _between(rng, left, AS_OF), None
        rows.members.append((tenant_id, list_ids[name], person.id, joined, left))


def _consent_rows(
    rows: ChunkRows, rng: random.Random, tenant_id: uuid.UUID, person: Person
) -> None:
    sources, weights = zip(*CONSENT_SOURCES, strict=True)
    captured = _between(rng, person.created_at, AS_OF)
    grant_id = seeded_id(rng, captured)
    source = rng.choices(sources, weights=weights)[0]
    rows.records.append(
        (
            grant_id,
            tenant_id,
            captured,
            person.id,
            "email",
            "marketing",
            "granted",
            source,
            captured,
            "system",
            "",
        )
    )
    latest = ("granted", grant_id, captured)
    if rng.random() < 0.08:
        revoked = _between(rng, captured, AS_OF)
        revoke_id = seeded_id(rng, revoked)
        rows.records.append(
            (
                revoke_id,
                tenant_id,
                revoked,
                person.id,
                "email",
                "marketing",
                "revoked",
                "one_click",
                revoked,
                "recipient",
                "",
            )
        )
        latest = ("revoked", revoke_id, revoked)
    status, record_id, at = latest
    rows.current.append((person.id, "email", "marketing", tenant_id, status, record_id, at))


def _event_rows(
    rows: ChunkRows,
    rng: random.Random,
    tenant_id: uuid.UUID,
    chunk: list[Person],
    quota: int,
    kind_ids: dict[str, int],
) -> None:
    if quota <= 0 or not chunk:
        return
    weights = [person.activity for person in chunk]
    if not any(weights):
        weights = [1.0] * len(chunk)
    who = rng.choices(chunk, weights=weights, k=quota)
    kinds = rng.choices(
        [kind for kind, _ in EVENT_KINDS], weights=[w for _, w in EVENT_KINDS], k=quota
    )
    hours = rng.choices(range(24), weights=HOUR_WEIGHTS, k=quota)
    start = AS_OF - timedelta(days=EVENT_DAYS)
    base = start.timestamp()
    random_value = rng.random
    for person, kind, hour in zip(who, kinds, hours, strict=True):
        # Engagement grows over time: more recent days are likelier.
        day = int(EVENT_DAYS * random_value() ** 0.8)
        moment = base + day * 86400 + hour * 3600 + int(random_value() * 3600)
        rows.events.append(
            (
                tenant_id,
                person.id,
                kind_ids[kind],
                datetime.fromtimestamp(moment, UTC),
                EVENT_SOURCES[kind],
            )
        )


def write_chunk(session: Session, rows: ChunkRows, *, skip_key_checks: bool = False) -> None:
    """Write one chunk in the session's transaction. ``skip_key_checks`` (PostgreSQL
    superusers): no foreign key triggers for this transaction (see
    :func:`bench.bulk_load.bulk_mode`)."""
    writer = RowWriter(session)
    if skip_key_checks:
        session.execute(text("SET LOCAL session_replication_role = replica"))
    writer.write(table_of(Contact), CONTACT_COLUMNS, rows.contacts)
    writer.write(sync.IDENTIFIER_TABLE, IDENTIFIER_COLUMNS, rows.identifiers)
    writer.write(sync.TOKEN_TABLE, TOKEN_COLUMNS, rows.tokens)
    writer.write(table_of(ContactStageHistory), STAGE_COLUMNS, rows.stages)
    writer.write(table_of(ListMembership), MEMBER_COLUMNS, rows.members)
    writer.write(table_of(ConsentRecord), RECORD_COLUMNS, rows.records)
    writer.write(table_of(ConsentCurrent), CURRENT_COLUMNS, rows.current)
    writer.write(table_of(ContactEvent), EVENT_COLUMNS, rows.events)
