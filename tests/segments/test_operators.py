"""Every operator of the rule language, on three hand-made contacts with known answers
(run on SQLite and on PostgreSQL like the rest of the suite); each case also checks
the Python reference evaluation."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from carepost.audit.service import SYSTEM
from carepost.consent import service as consent
from carepost.consent import suppression as suppressions
from carepost.contacts import custom_fields, events, lists, upserts
from carepost.contacts.activity_models import ContactEvent
from carepost.contacts.id_sets import dialect_of
from carepost.core.errors import ValidationFailed
from carepost.segments.compiler import compile_segment
from carepost.segments.evaluate import evaluate, load_population
from carepost.segments.nodes import years_before
from carepost.segments.rules import parse_rule
from carepost.segments.vocabulary import load_vocabulary
from tests.segments.conftest import FIELDS

NOW = datetime.now(UTC)
TODAY = NOW.date()
CAMPAIGN = uuid.uuid4()


def _day(days_ago: int) -> str:
    return (TODAY - timedelta(days=days_ago)).isoformat()


def _age(years: int) -> str:
    return (years_before(TODAY, years) - timedelta(days=100)).isoformat()


@pytest.fixture(scope="module")
def trio(runtime) -> dict[str, Any]:
    from carepost.tenancy import service as tenancy

    with runtime.database.session() as session:
        tenant, keys = tenancy.create_tenant(
            session, runtime.keyring, slug=f"ops-{uuid.uuid4().hex[:8]}", name="Ops"
        )
    with runtime.bound_session(keys) as session:
        for spec in FIELDS:
            custom_fields.create_field(session, tenant.id, label=spec["key"], actor=SYSTEM, **spec)
        items = [
            {
                "email": "ann@example.org",
                "phone": "+14155550101",
                "birth_date": _age(60),
                "journey_stage": "active",
                "language": "es",
                "custom": {
                    "zip": "Austin",
                    "gender": "female",
                    "conditions": ["e11", "i10"],
                    "a1c": 7.0,
                    "last_visit": _day(10),
                    "enrolled": "2024-02-15",
                    "seen_at": f"{_day(1)}T12:00:00Z",
                    "smoker": True,
                    "notes": "anything",
                },
            },
            {
                "email": "bob@example.org",
                "birth_date": _age(80),
                "journey_stage": "overdue",
                "language": "en",
                "custom": {
                    "zip": "78701",
                    "gender": "male",
                    "conditions": ["i10"],
                    "a1c": 9.05,
                    "last_visit": _day(100),
                    "smoker": False,
                },
            },
            {"email": "cy@example.org"},
        ]
        results = upserts.upsert_contacts(session, keys, items, match="email", actor=SYSTEM)
        ann, bob, cy = (r.id for r in results)
        l1 = lists.create_list(session, tenant.id, name="L1", description="", actor=SYSTEM)
        l2 = lists.create_list(session, tenant.id, name="L2", description="", actor=SYSTEM)
        lists.change_members(session, tenant.id, l1.id, add=[ann, bob], remove=[], actor=SYSTEM)
        lists.change_members(session, tenant.id, l2.id, add=[bob], remove=[], actor=SYSTEM)
        lists.change_members(session, tenant.id, l2.id, add=[], remove=[bob], actor=SYSTEM)
        captured = NOW - timedelta(days=10)
        for contact_id, channel, purpose, status, expires in (
            (ann, "email", "marketing", "granted", None),
            (bob, "email", "marketing", "revoked", None),
            (ann, "sms", "research", "pending", None),
            (bob, "email", "research", "granted", NOW - timedelta(days=1)),
        ):
            change = consent.ConsentChange(channel, purpose, status, "api", None, captured, expires)
            consent.record_consent(
                session, tenant.id, contact_id=contact_id, change=change, actor=SYSTEM
            )
        suppressions.add_suppression(
            session, keys, address="bob@example.org", reason="manual", source="api", actor=SYSTEM
        )

        def event(contact_id: uuid.UUID, kind: str, days_ago: int) -> dict[str, str]:
            at = NOW - timedelta(days=days_ago, minutes=5)
            return {"contact_id": str(contact_id), "kind": kind, "occurred_at": at.isoformat()}

        events.record_events(
            session,
            keys,
            [
                event(ann, "portal_login", 1),
                event(ann, "portal_login", 5),
                event(ann, "portal_login", 10),
                event(ann, "appointment_kept", 400),
                event(bob, "portal_login", 200),
                event(bob, "appointment_kept", 10),
            ],
            actor=SYSTEM,
        )
        clicked = events.ensure_kinds(session, tenant.id, {"email.clicked"})["email.clicked"]
        session.execute(
            insert(ContactEvent),
            [
                {
                    "tenant_id": tenant.id,
                    "contact_id": ann,
                    "kind_id": clicked.id,
                    "occurred_at": NOW - timedelta(days=2),
                    "campaign_id": CAMPAIGN,
                    "source": "campaign",
                }
            ],
        )
    names = {ann: "ann", bob: "bob", cy: "cy"}
    return {"keys": keys, "names": names, "l1": str(l1.id), "l2": str(l2.id)}


def _f(key: str, op: str, value: Any = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"field": key, "op": op}
    return rule if value is None else rule | {"value": value}


def _consent(channel: str, purpose: str, status: str) -> dict[str, Any]:
    return {"consent": {"channel": channel, "purpose": purpose, "status": status}}


CASES: list[tuple[str, Any, set[str]]] = [
    ("string equals ignores case", _f("zip", "equals", "austin"), {"ann"}),
    ("string in", _f("zip", "in", ["78701", "10001"]), {"bob"}),
    ("is set", _f("zip", "is_set"), {"ann", "bob"}),
    ("is not set", _f("zip", "is_not_set"), {"cy"}),
    ("choice equals", _f("gender", "equals", "female"), {"ann"}),
    ("choice in", _f("gender", "in", ["female", "male"]), {"ann", "bob"}),
    ("contains any", _f("conditions", "contains_any", ["e11"]), {"ann"}),
    ("contains any of two", _f("conditions", "contains_any", ["e11", "i10"]), {"ann", "bob"}),
    ("contains all", _f("conditions", "contains_all", ["e11", "i10"]), {"ann"}),
    ("number equals", _f("a1c", "equals", 7), {"ann"}),
    ("number between, rounded out to 0.1", _f("a1c", "between", [7.0, 9.0]), {"ann", "bob"}),
    ("number between", _f("a1c", "between", [7.0, 8.9]), {"ann"}),
    ("boolean true", _f("smoker", "equals", True), {"ann"}),
    ("boolean false", _f("smoker", "equals", False), {"bob"}),
    ("date within last days", _f("last_visit", "within_last_days", 30), {"ann"}),
    ("date before", _f("last_visit", "before", _day(50)), {"bob"}),
    ("date after", _f("last_visit", "after", _day(50)), {"ann"}),
    ("date between", _f("last_visit", "between", [_day(200), _day(50)]), {"bob"}),
    ("date on", _f("last_visit", "on", _day(10)), {"ann"}),
    ("month field on, by month", _f("enrolled", "on", "2024-02-01"), {"ann"}),
    ("month field before, rounded out", _f("enrolled", "before", "2024-02-20"), {"ann"}),
    ("month field after, rounded out", _f("enrolled", "after", "2024-02-20"), {"ann"}),
    ("month field after the month", _f("enrolled", "after", "2024-03-01"), set()),
    ("datetime within last days", _f("seen_at", "within_last_days", 1), {"ann"}),
    ("sealed field is set", _f("notes", "is_set"), {"ann"}),
    ("age between", _f("birth_date", "age_between", [50, 75]), {"ann"}),
    ("age between, older", _f("birth_date", "age_between", [76, 90]), {"bob"}),
    ("birth date not set", _f("birth_date", "is_not_set"), {"cy"}),
    ("journey stage in", _f("journey_stage", "in", ["active", "overdue"]), {"ann", "bob"}),
    ("journey stage equals", _f("journey_stage", "equals", "new"), {"cy"}),
    ("language equals", _f("language", "equals", "es"), {"ann"}),
    ("language not set", _f("language", "is_not_set"), {"cy"}),
    ("not language", {"not": _f("language", "equals", "es")}, {"bob", "cy"}),
    ("email set", _f("email", "is_set"), {"ann", "bob", "cy"}),
    ("phone set", _f("phone", "is_set"), {"ann"}),
    ("list member", {"list": "l1"}, {"ann", "bob"}),
    ("list left", {"list": "l2"}, set()),
    ("not list member", {"not": {"list": "l1"}}, {"cy"}),
    ("consent granted", _consent("email", "marketing", "granted"), {"ann"}),
    ("consent revoked", _consent("email", "marketing", "revoked"), {"bob"}),
    ("consent none", _consent("email", "marketing", "none"), {"cy"}),
    ("consent pending", _consent("sms", "research", "pending"), {"ann"}),
    ("consent expired", _consent("email", "research", "expired"), {"bob"}),
    ("an expired grant is not granted", _consent("email", "research", "granted"), set()),
    ("suppressed email", {"suppressed": "email"}, {"bob"}),
    ("suppressed any", {"suppressed": "any"}, {"bob"}),
    ("suppressed sms", {"suppressed": "sms"}, set()),
    ("not suppressed", {"not": {"suppressed": "any"}}, {"ann", "cy"}),
    (
        "event at least twice in 30 days",
        {"event": {"kind": "portal_login", "at_least": 2, "within_last_days": 30}},
        {"ann"},
    ),
    ("event ever", {"event": {"kind": "portal_login"}}, {"ann", "bob"}),
    ("event never", {"event": {"kind": "portal_login", "at_most": 0}}, {"cy"}),
    (
        "no appointment kept in 12 months",
        {"event": {"kind": "appointment_kept", "at_most": 0, "within_last_days": 365}},
        {"ann", "cy"},
    ),
    ("clicked campaign", {"event": {"kind": "email.clicked", "campaign_id": "campaign"}}, {"ann"}),
    ("any event of a campaign", {"event": {"campaign_id": "campaign"}}, {"ann"}),
    ("built-in kind never recorded", {"event": {"kind": "email.complained"}}, set()),
    (
        "built-in kind never recorded, at most 0",
        {"event": {"kind": "email.complained", "at_most": 0}},
        {"ann", "bob", "cy"},
    ),
    (
        "not a built-in kind never recorded",
        {"not": {"event": {"kind": "email.complained", "within_last_days": 365}}},
        {"ann", "bob", "cy"},
    ),
    (
        "a recorded and a never recorded kind",
        {"event": {"kind": ["email.bounced", "appointment_kept"]}},
        {"ann", "bob"},
    ),
    ("event between counts", {"event": {"kind": "portal_login", "at_most": 2}}, {"bob", "cy"}),
    (
        "event at least and at most",
        {"event": {"kind": "portal_login", "at_least": 1, "at_most": 2}},
        {"bob"},
    ),
    ("event since a date", {"event": {"kind": "portal_login", "since": _day(30)}}, {"ann"}),
    (
        "events of several kinds",
        {"event": {"kind": ["portal_login", "appointment_kept"], "at_least": 4}},
        {"ann"},
    ),
    (
        "all",
        {"all": [_f("gender", "equals", "female"), {"list": "l1"}]},
        {"ann"},
    ),
    ("any", {"any": [_f("zip", "equals", "78701"), _f("phone", "is_set")]}, {"ann", "bob"}),
    (
        "not all",
        {"not": {"all": [{"list": "l1"}, {"suppressed": "email"}]}},
        {"ann", "cy"},
    ),
]


def _resolve(rule: Any, trio: dict[str, Any]) -> Any:
    if isinstance(rule, dict):
        return {
            key: (
                trio[value]
                if key == "list"
                else str(CAMPAIGN)
                if key == "campaign_id"
                else _resolve(value, trio)
            )
            for key, value in rule.items()
        }
    if isinstance(rule, list):
        return [_resolve(item, trio) for item in rule]
    return rule


@pytest.mark.parametrize(("rule", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_operator(runtime, trio, rule, expected):
    keys = trio["keys"]
    with runtime.bound_session(keys) as session:
        vocabulary = load_vocabulary(session, keys.tenant_id)
        node = parse_rule(_resolve(rule, trio), vocabulary, now=NOW)
        found = set(session.scalars(compile_segment(node, keys, dialect_of(session))))
        population = load_population(session, keys)
    assert {trio["names"][i] for i in found} == expected
    assert evaluate(node, population) == found


@pytest.mark.parametrize(
    ("rule", "pointer", "words"),
    [
        (_f("notes", "equals", "x"), "rule/op", "sealed"),
        (_f("a1c", "between", [9, 7]), "rule/value", "must not exceed"),
        (_f("a1c", "between", [0, 10_000]), "rule/value", "buckets"),
        (_f("gender", "equals", "unknown"), "rule/value", "choices"),
        (_f("conditions", "contains_any", ["e11", "zz"]), "rule/value/1", "choices"),
        (_f("last_visit", "on", "2024-13-01"), "rule/value", "YYYY-MM-DD"),
        (_f("birth_date", "age_between", [0, 200]), "rule/value/1", "0 to 130"),
        (_f("journey_stage", "equals", "gone"), "rule/value", "journey stage"),
        (_f("zip", "is_set", "x"), "rule/value", "takes no value"),
        (_f("zip", "equals"), "rule/value", "needs a value"),
        ({"all": []}, "rule/all", "non-empty"),
        ({"all": [], "any": []}, "rule", "exactly one"),
        ({"field": "zip", "op": "equals", "value": "x", "extra": 1}, "rule/extra", "unknown key"),
        ({"event": {"kind": "portal_login", "at_least": -1}}, "rule/event/at_least", "whole"),
        (
            {"event": {"kind": "portal_login", "at_least": 3, "at_most": 1}},
            "rule/event/at_most",
            "less",
        ),
        ({"event": {"at_least": 1}}, "rule/event/kind", "kind"),
        ({"event": {"kind": "email_opened"}}, "rule/event/kind", "no such event kind"),
        (
            {"event": {"kind": ["email.opened", "email.read"]}},
            "rule/event/kind/1",
            "no such event kind",
        ),
        ({"event": {"kind": "portal_login", "since": "yesterday"}}, "rule/event/since", "ISO"),
        (_consent("email", "nothing", "granted"), "rule/consent/purpose", "purpose"),
        (_consent("email", "marketing", "maybe"), "rule/consent/status", "granted"),
        ({"suppressed": True}, "rule/suppressed", "email, sms or any"),
        ({"list": "not-a-uuid"}, "rule/list", "no such list"),
        ([1, 2], "rule", "exactly one"),
    ],
)
def test_validation_points_at_the_bad_node(runtime, trio, rule, pointer, words):
    keys = trio["keys"]
    with runtime.bound_session(keys) as session:
        vocabulary = load_vocabulary(session, keys.tenant_id)
    with pytest.raises(ValidationFailed) as failed:
        parse_rule(rule, vocabulary, now=NOW)
    [error] = failed.value.errors
    assert error.field == pointer
    assert words in error.message


def test_age_ranges_are_exact_on_birthdays():
    from carepost.segments.nodes import age_on, age_range

    for today in (date(2024, 2, 29), date(2025, 3, 1), date(2025, 12, 31), date(2025, 1, 1)):
        wanted = age_range(today, 50, 75)
        day = wanted.low - timedelta(days=3)
        while day <= wanted.high + timedelta(days=3):
            assert (wanted.low <= day <= wanted.high) == (50 <= age_on(day, today) <= 75), (
                today,
                day,
            )
            day += timedelta(days=1)
