"""A small, deliberately awkward world of contacts for segment tests: values on the
edges of buckets and ages, lists with past members, consents in every state,
suppressed addresses and events in and out of time windows; all written through
the real services, so tokens and indexes are the production ones."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent import suppression as suppressions
from carepost.contacts import custom_fields, events, lists, upserts
from carepost.contacts.activity_models import ContactEvent
from carepost.contacts.models import Contact
from carepost.contacts.stages import define_stage
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.segments.nodes import years_before
from carepost.tenancy.models import Tenant

CONDITIONS = ["e11", "i10", "j45", "e78", "f32"]
GENDERS = ["female", "male", "other"]
INSURANCE = ["medicare", "medicaid", "commercial"]
KINDS = ["email.opened", "email.clicked", "portal_login", "appointment_kept"]
PURPOSES = ["marketing", "research"]
FIELDS: list[dict[str, Any]] = [
    {"key": "zip", "type": "string"},
    {"key": "gender", "type": "choice", "choices": GENDERS},
    {"key": "insurance", "type": "choice", "choices": INSURANCE},
    {"key": "conditions", "type": "multi_choice", "choices": CONDITIONS},
    {"key": "a1c", "type": "number", "granularity": "0.1"},
    {"key": "weight", "type": "number", "granularity": "10"},
    {"key": "last_visit", "type": "date", "granularity": "day", "past_only": True},
    {"key": "enrolled", "type": "date", "granularity": "month"},
    {"key": "seen_at", "type": "datetime", "granularity": "day"},
    {"key": "smoker", "type": "boolean"},
    {"key": "notes", "type": "string", "sealed": True},
]


@dataclass
class World:
    tenant: Tenant
    keys: TenantKeys
    today: date
    list_ids: list[uuid.UUID] = field(default_factory=list)
    campaign_ids: list[uuid.UUID] = field(default_factory=list)
    contact_ids: list[uuid.UUID] = field(default_factory=list)
    zips: list[str] = field(default_factory=list)


def _edge_days(today: date) -> list[date]:
    return [today - timedelta(days=n) for n in (0, 1, 29, 30, 31, 89, 90, 91, 364, 365, 366)]


def _birth_dates(today: date) -> list[date]:
    found = []
    for years in (17, 18, 49, 50, 64, 65, 75, 76):
        exact = years_before(today, years)
        found += [exact - timedelta(days=1), exact, exact + timedelta(days=1)]
    return found


def _contact(rng: random.Random, n: int, today: date, zips: list[str]) -> dict[str, Any]:
    custom: dict[str, Any] = {}

    def maybe(key: str, value: Any) -> None:
        if rng.random() < 0.8:
            custom[key] = value

    maybe("zip", rng.choice(zips))
    maybe("gender", rng.choice(GENDERS))
    maybe("insurance", rng.choice(INSURANCE))
    maybe("conditions", rng.sample(CONDITIONS, rng.randint(0, 3)))
    maybe("a1c", rng.choice([4.9, 5.0, 6.95, 7.0, 7.04, 7.1, 8.99, 9.0, 9.09, 9.1, 12.3]))
    maybe("weight", rng.choice([49.9, 50, 59.99, 60, 120, 250.5]))
    maybe("last_visit", rng.choice(_edge_days(today)).isoformat())
    maybe(
        "enrolled", rng.choice([date(2024, 1, 31), date(2024, 2, 1), date(2025, 6, 15)]).isoformat()
    )
    moment = datetime.combine(rng.choice(_edge_days(today)), datetime.min.time(), UTC)
    maybe(
        "seen_at",
        (moment + timedelta(hours=rng.choice([0, 12, 23]))).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    maybe("smoker", rng.random() < 0.5)
    maybe("notes", "free text")
    item: dict[str, Any] = {"email": f"p{n}-{uuid.uuid4().hex[:6]}@example.org", "custom": custom}
    if rng.random() < 0.85:
        item["birth_date"] = rng.choice(_birth_dates(today)).isoformat()
    if rng.random() < 0.5:
        item["phone"] = f"+1415555{rng.randint(1000, 9999)}"
    item["journey_stage"] = rng.choice(["new", "active", "overdue", "at-risk", "post-op"])
    if rng.random() < 0.7:
        item["language"] = rng.choice(["en", "es", "fr"])
    return item


def build_world(
    runtime: Runtime, tenant: tuple[Tenant, TenantKeys], seed: int, size: int = 60
) -> World:
    tenant_row, keys = tenant
    rng = random.Random(seed)
    now = datetime.now(UTC)
    world = World(tenant_row, keys, now.date())
    world.zips = ["78701", "Austin", "AUSTIN", "10001"]
    with runtime.bound_session(keys) as session:
        define_stage(session, tenant_row.id, key="post-op", label="Post-op")
        for spec in FIELDS:
            custom_fields.create_field(
                session, tenant_row.id, label=spec["key"], actor=SYSTEM, **spec
            )
        items = [_contact(rng, n, world.today, world.zips) for n in range(size)]
        results = upserts.upsert_contacts(session, keys, items, match="email", actor=SYSTEM)
        assert all(not r.errors for r in results), [r.errors for r in results if r.errors]
        world.contact_ids = [r.id for r in results if r.id is not None]
        for name in ("a", "b"):
            row = lists.create_list(
                session, tenant_row.id, name=f"list-{name}", description="", actor=SYSTEM
            )
            world.list_ids.append(row.id)
            members = rng.sample(world.contact_ids, size // 3)
            lists.change_members(
                session, tenant_row.id, row.id, add=members, remove=[], actor=SYSTEM
            )
            leaving = members[: size // 10]
            lists.change_members(
                session, tenant_row.id, row.id, add=[], remove=leaving, actor=SYSTEM
            )
        items = []
        for contact_id in world.contact_ids:
            for _ in range(rng.randint(0, 5)):
                at = now - timedelta(days=rng.choice([0, 1, 6, 7, 8, 29, 31, 200, 400]), hours=1)
                items.append(
                    {
                        "contact_id": str(contact_id),
                        "kind": rng.choice(KINDS),
                        "occurred_at": at.isoformat(),
                    }
                )
        assert all(not r.errors for r in events.record_events(session, keys, items, actor=SYSTEM))
        kinds = events.ensure_kinds(session, tenant_row.id, set(KINDS))
        world.campaign_ids = [uuid.uuid4(), uuid.uuid4()]
        rows = [
            {
                "tenant_id": tenant_row.id,
                "contact_id": contact_id,
                "kind_id": kinds[rng.choice(["email.opened", "email.clicked"])].id,
                "occurred_at": now - timedelta(days=rng.choice([1, 20, 100])),
                "campaign_id": rng.choice(world.campaign_ids),
                "source": "campaign",
            }
            for contact_id in rng.sample(world.contact_ids, size // 2)
        ]
        session.execute(insert(ContactEvent), rows)
        for contact_id in world.contact_ids:
            for channel in ("email", "sms"):
                for purpose in PURPOSES:
                    roll = rng.random()
                    if roll < 0.3:
                        continue
                    status = rng.choice(["granted", "granted", "revoked", "pending"])
                    captured = now - timedelta(days=10)
                    expires = None
                    if status == "granted" and rng.random() < 0.3:
                        expires = now + timedelta(days=rng.choice([-1, 5]))
                    consent.record_consent(
                        session,
                        tenant_row.id,
                        contact_id=contact_id,
                        change=consent.ConsentChange(
                            channel, purpose, status, "api", None, captured, expires
                        ),
                        actor=SYSTEM,
                    )
        addresses = _addresses(session, world.contact_ids)
        for address in rng.sample(addresses, size // 5):
            suppressions.add_suppression(
                session, keys, address=address, reason="manual", source="api", actor=SYSTEM
            )
    return world


def _addresses(session: Any, ids: list[uuid.UUID]) -> list[str]:
    """Every email and phone number of these contacts (some shared: phones repeat)."""
    rows = session.execute(select(Contact.email, Contact.phone).where(Contact.id.in_(ids)))
    return sorted({value for row in rows for value in row if value})


@pytest.fixture
def world(runtime: Runtime, tenant: tuple[Tenant, TenantKeys]) -> World:
    return build_world(runtime, tenant, seed=7)
