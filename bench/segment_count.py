"""Benchmark: count a 5-condition segment with the compiler, and by hand-written SQL.

The segment is issue 4's: "diabetics (conditions contains E11) aged 50 to 75, on a
list, who consented to marketing email and opened an email in the last 90 days"
— two tokenized fields (one an age range: ~66 tokens of whole birth years and
months plus the edge days, where a day list would be ~9,500), a list, consent and a
behavioural condition. Prints, on the engine of ``CAREPOST_DATABASE_URL``
(SQLite in a temporary directory when unset)::

    segment_count compiled_s=<t> target_s=<1 or 3> ratio_to_target=<t/target>
    segment_count handwritten_s=<t>
    segment_count compiled_over_handwritten=<r> target=1.5 ratio_to_target=<r/1.5>

Each time is the median of several runs after one warm-up. The data set is built
through the real services at ``--scale`` contacts (default 20,000; ten events
each) unless ``bench.datagen`` is available: then its shared data set is used
(built once at ``--scale`` contacts and ten times as many events, as of its
reference date; ``--own-data`` forces a fresh one of our own).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Uuid, bindparam, event, func, insert, select, text
from sqlalchemy.orm import Session

from bench.scratch import scratch_tenant
from carepost.audit.service import SYSTEM
from carepost.consent.models import ConsentCurrent, ConsentRecord
from carepost.contacts import custom_fields, events, lists, sync, upserts
from carepost.contacts.activity_models import (
    ContactEvent,
    EventKind,
    ListMembership,
)
from carepost.contacts.id_sets import dialect_of
from carepost.contacts.models import Contact, ContactToken
from carepost.contacts.tokens import date_range_cover, range_tokens
from carepost.core.bulk import write_rows
from carepost.core.database import UTCDateTime, new_id, utcnow
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.segments.compiler import compile_count
from carepost.segments.nodes import age_range
from carepost.segments.rules import parse_rule
from carepost.segments.vocabulary import load_vocabulary

try:  # the 1M-contact generator, when it is there
    from bench import datagen  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the branch
    datagen = None

CONDITIONS = ["e11", "i10", "j45", "e78", "f32"]
GENDERS = ["female", "male", "other", "unknown"]
INSURANCE = ["medicare", "medicaid", "commercial", "self-pay", "other"]
KINDS = ["email_opened", "email_clicked", "portal_login", "appointment_kept"]
BATCH = 10_000
RUNS = 5
TARGET_SECONDS = {"postgresql": 1.0, "sqlite": 3.0}
TARGET_RATIO = 1.5
LIST_NAME = "Outreach 2026"


def segment_rule(list_id: uuid.UUID) -> dict[str, Any]:
    return {
        "all": [
            {"field": "conditions", "op": "contains_any", "value": ["e11"]},
            {"field": "birth_date", "op": "age_between", "value": [50, 75]},
            {"list": str(list_id)},
            {"consent": {"channel": "email", "purpose": "marketing", "status": "granted"}},
            {"event": {"kind": "email_opened", "within_last_days": 90}},
        ]
    }


# --- the data set -----------------------------------------------------------------------


def _define_fields(session: Session, tenant_id: uuid.UUID) -> None:
    for key, kind, extra in (
        ("zip", "string", {}),
        ("gender", "choice", {"choices": GENDERS}),
        ("insurance", "choice", {"choices": INSURANCE}),
        ("conditions", "multi_choice", {"choices": CONDITIONS}),
        ("a1c", "number", {"granularity": "0.1"}),
        ("last_visit", "date", {"granularity": "day", "past_only": True}),
    ):
        custom_fields.create_field(
            session, tenant_id, key=key, label=key, type=kind, actor=SYSTEM, **extra
        )


def _contact(rng: random.Random, n: int, today: datetime) -> dict[str, Any]:
    born = today.date() - timedelta(days=rng.randint(18 * 365, 95 * 365))
    visit = today.date() - timedelta(days=rng.randint(0, 1500))
    return {
        "email": f"patient{n}@example.org",
        "birth_date": born.isoformat(),
        "custom": {
            "zip": f"{rng.randint(10000, 99999)}",
            "gender": rng.choice(GENDERS),
            "insurance": rng.choice(INSURANCE),
            "conditions": rng.sample(CONDITIONS, rng.choice([0, 0, 1, 1, 2, 3])),
            "a1c": round(rng.uniform(4.5, 12.0), 1),
            "last_visit": visit.isoformat(),
        },
    }


def build_dataset(runtime: Runtime, keys: TenantKeys, scale: int) -> uuid.UUID:
    """Contacts (upserts), a list (the service), events (the service), consent
    (bulk rows: there is no batch consent service); returns the list id."""
    rng = random.Random(4)
    now = utcnow()
    tenant_id = keys.tenant_id
    with runtime.bound_session(keys) as session:
        _define_fields(session, tenant_id)
        contact_list = lists.create_list(
            session, tenant_id, name=LIST_NAME, description="", actor=SYSTEM
        )
        list_id = contact_list.id
    ids: list[uuid.UUID] = []
    for start in range(0, scale, BATCH):
        items = [_contact(rng, n, now) for n in range(start, min(scale, start + BATCH))]
        with runtime.bound_session(keys) as session:
            results = upserts.upsert_contacts(session, keys, items, match="email", actor=SYSTEM)
            ids += [r.id for r in results if r.id is not None]
    for start in range(0, len(ids), BATCH):
        part = ids[start : start + BATCH]
        with runtime.bound_session(keys) as session:
            members = [c for c in part if rng.random() < 0.4]
            lists.change_members(session, tenant_id, list_id, add=members, remove=[], actor=SYSTEM)
            items = [
                {
                    "contact_id": str(contact_id),
                    "kind": rng.choice(KINDS),
                    "occurred_at": (
                        now - timedelta(minutes=rng.randint(1, 730 * 1440))
                    ).isoformat(),
                }
                for contact_id in part
                for _ in range(10)
            ]
            for chunk in range(0, len(items), BATCH):
                events.record_events(session, keys, items[chunk : chunk + BATCH], actor=SYSTEM)
            records, current = [], []
            for contact_id in part:
                if rng.random() < 0.2:
                    continue
                status = "granted" if rng.random() < 0.75 else "revoked"
                record_id = new_id()
                captured = now - timedelta(days=rng.randint(1, 700))
                row = {
                    "tenant_id": tenant_id,
                    "contact_id": contact_id,
                    "channel": "email",
                    "purpose": "marketing",
                    "status": status,
                    "captured_at": captured,
                }
                records.append(
                    row
                    | {
                        "id": record_id,
                        "source": "import",
                        "recorded_by_type": "system",
                        "recorded_by_id": "",
                        "created_at": now,
                    }
                )
                current.append(row | {"record_id": record_id})
            session.execute(insert(ConsentRecord), records)
            session.execute(insert(ConsentCurrent), current)
    return list_id


def build_bulk(runtime: Runtime, keys: TenantKeys, scale: int) -> uuid.UUID:
    """The same kind of data written straight into the tables (no PHI columns, no
    audit): fast enough to time the query at hundreds of thousands of contacts
    without the full generator. Tokens are the real ones (sync.contact_tokens)."""
    rng = random.Random(4)
    now = utcnow()
    tenant_id = keys.tenant_id
    with runtime.bound_session(keys) as session:
        _define_fields(session, tenant_id)
        list_id = lists.create_list(
            session, tenant_id, name=LIST_NAME, description="", actor=SYSTEM
        ).id
        kinds = events.ensure_kinds(session, tenant_id, set(KINDS))
        kind_ids = [kinds[k].id for k in KINDS]
        schema = custom_fields.load_schema(session, tenant_id)
    for start in range(0, scale, BATCH):
        contacts, tokens, members, events_rows, records, current = [], [], [], [], [], []
        for n in range(start, min(scale, start + BATCH)):
            item = _contact(rng, n, now)
            contact_id = new_id()
            contacts.append({"id": contact_id, "tenant_id": tenant_id, "created_at": now})
            for key, token in sync.contact_tokens(keys, schema, item["custom"], item["birth_date"]):
                tokens.append(
                    {
                        "tenant_id": tenant_id,
                        "contact_id": contact_id,
                        "field_key": key,
                        "token": token,
                    }
                )
            if rng.random() < 0.4:
                members.append(
                    {
                        "tenant_id": tenant_id,
                        "list_id": list_id,
                        "contact_id": contact_id,
                        "joined_at": now,
                    }
                )
            for _ in range(10):
                events_rows.append(
                    {
                        "tenant_id": tenant_id,
                        "contact_id": contact_id,
                        "kind_id": rng.choice(kind_ids),
                        "source": "bench",
                        "occurred_at": now - timedelta(minutes=rng.randint(1, 730 * 1440)),
                    }
                )
            if rng.random() < 0.8:
                status = "granted" if rng.random() < 0.75 else "revoked"
                record_id = new_id()
                row = {
                    "tenant_id": tenant_id,
                    "contact_id": contact_id,
                    "channel": "email",
                    "purpose": "marketing",
                    "status": status,
                    "captured_at": now - timedelta(days=rng.randint(1, 700)),
                }
                records.append(
                    row
                    | {
                        "id": record_id,
                        "source": "import",
                        "recorded_by_type": "system",
                        "recorded_by_id": "",
                        "created_at": now,
                    }
                )
                current.append(row | {"record_id": record_id})
        with runtime.bound_session(keys) as session:
            for model, rows in (
                (Contact, contacts),
                (ContactToken, tokens),
                (ListMembership, members),
                (ContactEvent, events_rows),
                (ConsentRecord, records),
                (ConsentCurrent, current),
            ):
                if rows:
                    columns = tuple(rows[0])
                    write_rows(
                        session,
                        model.__table__,  # type: ignore[arg-type]
                        columns,
                        [tuple(row[name] for name in columns) for row in rows],
                    )
    return list_id


def _analyze(runtime: Runtime) -> None:
    with runtime.database.engine.begin() as connection:
        connection.execute(text("ANALYZE"))


# --- the two queries ------------------------------------------------------------------


def handwritten_count(session: Session, keys: TenantKeys, list_id: uuid.UUID, now: datetime) -> int:
    """The same segment as someone would write it by hand (tokens still computed in
    Python: PHI is only queryable through them)."""
    dialect = dialect_of(session)
    e11 = range_tokens(keys.blind_index, "conditions", ["c:e11"])[0]
    ages = age_range(now.date(), 50, 75)
    # Whole years and months where they fit, days at the edges: the fewest tokens a
    # person writing this by hand would send too (dates are stored at all three).
    cover = date_range_cover(ages.low, ages.high, "day")
    age_tokens = range_tokens(keys.blind_index, "birth_date", [f"d:{b}" for b in cover])
    kind_id = session.scalar(
        select(EventKind.id).where(
            EventKind.tenant_id == keys.tenant_id, EventKind.key == "email_opened"
        )
    )
    if dialect == "postgresql":
        in_ages = "t.token = ANY(CAST(:ages AS varchar[]))"
        ages_param: Any = age_tokens
    else:
        in_ages = "t.token IN (SELECT value FROM json_each(:ages))"
        ages_param = json.dumps(age_tokens)
    sql = f"""
        SELECT count(*) FROM contacts c
        WHERE c.tenant_id = :tenant
          AND c.id IN (SELECT t.contact_id FROM contact_tokens t
                       WHERE t.tenant_id = :tenant AND t.field_key = 'conditions'
                         AND t.token = :e11)
          AND c.id IN (SELECT t.contact_id FROM contact_tokens t
                       WHERE t.tenant_id = :tenant AND t.field_key = 'birth_date' AND {in_ages})
          AND c.id IN (SELECT m.contact_id FROM list_memberships m
                       WHERE m.list_id = :list AND m.left_at IS NULL)
          AND c.id IN (SELECT cc.contact_id FROM consent_current cc
                       WHERE cc.tenant_id = :tenant AND cc.channel = 'email'
                         AND cc.purpose = 'marketing' AND cc.status = 'granted'
                         AND (cc.expires_at IS NULL OR cc.expires_at > :now))
          AND c.id IN (SELECT e.contact_id FROM contact_events e
                       WHERE e.tenant_id = :tenant AND e.kind_id = :kind
                         AND e.occurred_at >= :since)
    """
    statement = text(sql).bindparams(
        bindparam("tenant", keys.tenant_id, type_=Uuid()),
        bindparam("list", list_id, type_=Uuid()),
        bindparam("since", now - timedelta(days=90), type_=UTCDateTime()),
        bindparam("now", now, type_=UTCDateTime()),
        bindparam("e11", e11),
        bindparam("kind", kind_id),
        bindparam("ages", ages_param),
    )
    return int(session.execute(statement).scalar_one())


def compiled_count(session: Session, keys: TenantKeys, list_id: uuid.UUID, now: datetime) -> int:
    """Parse, compile and run: the whole path a live count takes."""
    vocabulary = load_vocabulary(session, keys.tenant_id)
    node = parse_rule(segment_rule(list_id), vocabulary, now=now)
    return int(session.scalar(compile_count(node, keys, dialect_of(session))) or 0)


def _time(run: Callable[[], int]) -> tuple[float, int]:
    run()  # warm-up: caches, plans
    times, answer = [], 0
    for _ in range(RUNS):
        started = time.perf_counter()
        answer = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), answer


def explain(session: Session, keys: TenantKeys, list_id: uuid.UUID, now: datetime) -> str:
    """The compiled statement's plan (EXPLAIN / EXPLAIN QUERY PLAN)."""
    vocabulary = load_vocabulary(session, keys.tenant_id)
    node = parse_rule(segment_rule(list_id), vocabulary, now=now)
    statement = compile_count(node, keys, dialect_of(session))
    postgres = dialect_of(session) == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
    engine = session.get_bind()

    rows: list[Any] = []

    def explained(
        _connection: Any, cursor: Any, sql: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        # The statement with its parameters processed as usual, explained first.
        cursor.execute(prefix + sql, parameters)
        rows.extend(cursor.fetchall())

    event.listen(engine, "before_cursor_execute", explained)
    try:
        session.execute(statement).all()
    finally:
        event.remove(engine, "before_cursor_execute", explained)
    # Token arrays make lines of hundreds of kilobytes: keep the shape readable.
    return "\n".join(" | ".join(str(v) for v in row)[:240] for row in rows)


# --- running ----------------------------------------------------------------------------


def measure(
    runtime: Runtime, keys: TenantKeys, list_id: uuid.UUID, now: datetime, *, explain_plan: bool
) -> float:
    """Time both counts on a built data set and print the figures; returns the compiled time."""
    dialect = runtime.database.engine.dialect.name
    with runtime.bound_session(keys) as session:
        if explain_plan:
            print(explain(session, keys, list_id, now))
        compiled_s, compiled = _time(lambda: compiled_count(session, keys, list_id, now))
        hand_s, hand = _time(lambda: handwritten_count(session, keys, list_id, now))
    assert compiled == hand, f"the compiled count {compiled} differs from {hand}"
    target = TARGET_SECONDS[dialect]
    ratio = compiled_s / hand_s
    # The load average beside the figures: on a shared machine it explains them.
    load = os.getloadavg()[0]
    print(
        f"segment_count engine={dialect} compiled_s={compiled_s:.3f} target_s={target:.0f} "
        f"ratio_to_target={compiled_s / target:.2f} members={compiled} load={load:.2f}"
    )
    print(f"segment_count engine={dialect} handwritten_s={hand_s:.3f}")
    print(
        f"segment_count engine={dialect} compiled_over_handwritten={ratio:.2f} "
        f"target={TARGET_RATIO} ratio_to_target={ratio / TARGET_RATIO:.2f}"
    )
    return compiled_s


def _run_on_datagen(scale: int, *, explain_plan: bool) -> float:
    """On the shared benchmark data set (bench.datagen: reused when already built),
    as of its reference date; the list is ``newsletter`` (~35%, some left again)."""
    assert datagen is not None
    url = os.environ.get("CAREPOST_DATABASE_URL", "sqlite:///var/bench/datagen.db")
    runtime = datagen.open_runtime(url)
    try:
        started = time.perf_counter()
        tenant_id, info = datagen.ensure_dataset(runtime, contacts=scale, events=10 * scale, seed=1)
        print(
            f"segment_count dataset=datagen contacts={info['contacts']} "
            f"events={info['events']} ready_s={time.perf_counter() - started:.1f}"
        )
        with runtime.database.session() as session:
            keys = runtime.keyring.load(session, tenant_id)
        list_id = uuid.UUID(info["lists"]["newsletter"])
        now = datetime.fromisoformat(info["as_of"])
        return measure(runtime, keys, list_id, now, explain_plan=explain_plan)
    finally:
        runtime.close()


def run(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(prog="python -m bench segment_count")
    parser.add_argument("--scale", type=int, default=20_000, help="contacts (events: 10 each)")
    parser.add_argument("--explain", action="store_true", help="print the compiled query's plan")
    parser.add_argument(
        "--own-data",
        action="store_true",
        help="build a data set of its own through the services even when bench.datagen exists",
    )
    parser.add_argument(
        "--bulk", action="store_true", help="with --own-data: write rows straight to the tables"
    )
    options = parser.parse_args(argv or [])
    if datagen is not None and not options.own_data:
        return _run_on_datagen(options.scale, explain_plan=options.explain)
    with scratch_tenant() as scratch:
        runtime, keys = scratch.runtime, scratch.keys
        started = time.perf_counter()
        if options.bulk:
            list_id = build_bulk(runtime, keys, options.scale)
        else:
            list_id = build_dataset(runtime, keys, options.scale)
        _analyze(runtime)
        with runtime.database.session() as session:
            contacts = session.scalar(
                select(func.count()).where(Contact.tenant_id == keys.tenant_id)
            )
            members = session.scalar(select(func.count()).select_from(ListMembership))
        print(
            f"segment_count dataset contacts={contacts} list_members={members} "
            f"built_s={time.perf_counter() - started:.1f}"
        )
        return measure(runtime, keys, list_id, utcnow(), explain_plan=options.explain)


if __name__ == "__main__":
    import sys

    run(sys.argv[1:])
