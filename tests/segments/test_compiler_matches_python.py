"""Property: the compiled SQL selects exactly the contacts that a straightforward
Python evaluation of the same rule selects, for random rules over a world of
contacts with values on bucket edges (on whichever engine the suite runs)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carepost.contacts.id_sets import dialect_of
from carepost.core.database import utcnow
from carepost.core.errors import ValidationFailed
from carepost.segments.compiler import compile_count, compile_segment
from carepost.segments.evaluate import evaluate, load_population
from carepost.segments.rules import parse_rule
from carepost.segments.vocabulary import load_vocabulary
from tests.segments.conftest import CONDITIONS, GENDERS, INSURANCE, KINDS, World, build_world


def _leaves(world: World) -> st.SearchStrategy[dict[str, Any]]:
    today = world.today
    days = [today - timedelta(days=n) for n in (0, 1, 30, 31, 90, 365, 366, 3000)]
    iso = st.sampled_from([d.isoformat() for d in days])
    month_days = st.sampled_from(["2024-01-31", "2024-02-01", "2024-02-29", "2025-06-15"])
    numbers = st.sampled_from([5.0, 6.95, 7.0, 7.04, 7.05, 9.0, 9.09, 9.1, 12.3])
    weights = st.sampled_from([49.9, 50, 59.99, 60, 250.5])

    def field(key: str, op: str, value: Any = None) -> dict[str, Any]:
        rule = {"field": key, "op": op}
        return rule if value is None else rule | {"value": value}

    def pair(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
        return st.lists(values, min_size=2, max_size=2).map(sorted)

    presence = st.sampled_from(
        [
            "zip",
            "gender",
            "conditions",
            "a1c",
            "last_visit",
            "seen_at",
            "smoker",
            "notes",
            "birth_date",
            "language",
            "email",
            "phone",
        ]
    ).flatmap(lambda key: st.sampled_from(["is_set", "is_not_set"]).map(lambda op: field(key, op)))
    date_rule = st.one_of(
        st.builds(field, st.just("last_visit"), st.sampled_from(["on", "before", "after"]), iso),
        st.builds(field, st.just("last_visit"), st.just("between"), pair(iso)),
        st.builds(
            field,
            st.sampled_from(["last_visit", "seen_at"]),
            st.just("within_last_days"),
            st.sampled_from([0, 1, 30, 90, 365]),
        ),
        st.builds(field, st.just("seen_at"), st.sampled_from(["before", "after", "on"]), iso),
        st.builds(
            field, st.just("enrolled"), st.sampled_from(["on", "before", "after"]), month_days
        ),
        st.builds(field, st.just("enrolled"), st.just("between"), pair(month_days)),
        st.builds(
            field,
            st.just("birth_date"),
            st.just("age_between"),
            pair(st.sampled_from([17, 18, 49, 50, 64, 65, 75])),
        ),
    )
    value_rule = st.one_of(
        st.builds(field, st.just("zip"), st.just("equals"), st.sampled_from([*world.zips, "none"])),
        st.builds(
            field,
            st.just("zip"),
            st.just("in"),
            st.lists(st.sampled_from(world.zips), min_size=1, max_size=3),
        ),
        st.builds(field, st.just("gender"), st.just("equals"), st.sampled_from(GENDERS)),
        st.builds(
            field,
            st.just("insurance"),
            st.just("in"),
            st.lists(st.sampled_from(INSURANCE), min_size=1, max_size=2),
        ),
        st.builds(
            field,
            st.just("conditions"),
            st.sampled_from(["contains_any", "contains_all"]),
            st.lists(st.sampled_from(CONDITIONS), min_size=1, max_size=3),
        ),
        st.builds(field, st.just("a1c"), st.just("equals"), numbers),
        st.builds(field, st.just("a1c"), st.just("between"), pair(numbers)),
        st.builds(field, st.just("weight"), st.just("between"), pair(weights)),
        st.builds(field, st.just("smoker"), st.just("equals"), st.booleans()),
        st.builds(
            field,
            st.just("journey_stage"),
            st.just("in"),
            st.lists(st.sampled_from(["new", "active", "post-op"]), min_size=1, max_size=2),
        ),
        st.builds(
            field, st.just("language"), st.just("equals"), st.sampled_from(["en", "es", "de"])
        ),
    )
    other = st.one_of(
        st.sampled_from([str(i) for i in world.list_ids]).map(lambda i: {"list": i}),
        st.builds(
            lambda channel, purpose, status: {
                "consent": {"channel": channel, "purpose": purpose, "status": status}
            },
            st.sampled_from(["email", "sms"]),
            st.sampled_from(["marketing", "research", "transactional"]),
            st.sampled_from(["granted", "revoked", "pending", "expired", "none"]),
        ),
        st.sampled_from(["email", "sms", "any"]).map(lambda c: {"suppressed": c}),
        _events(world),
    )
    return st.one_of(presence, date_rule, value_rule, other)


def _events(world: World) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def event(draw: st.DrawFn) -> dict[str, Any]:
        body: dict[str, Any] = {}
        # email.complained: a built-in kind this world never recorded (counts 0).
        named = st.sampled_from([*KINDS, "email.complained"])
        kinds = draw(st.lists(named, max_size=2, unique=True))
        campaign = draw(st.sampled_from([None, *map(str, world.campaign_ids)]))
        if not kinds and campaign is None:
            kinds = ["portal_login"]
        if kinds:
            body["kind"] = kinds[0] if len(kinds) == 1 else kinds
        if campaign is not None:
            body["campaign_id"] = campaign
        low = draw(st.sampled_from([None, 0, 1, 2, 3]))
        high = draw(st.sampled_from([None, 0, 1, 2, 4]))
        if low is not None:
            body["at_least"] = low
        if high is not None and (low is None or high >= low):
            body["at_most"] = high
        window = draw(st.sampled_from([None, "days", "since"]))
        if window == "days":
            body["within_last_days"] = draw(st.sampled_from([7, 30, 365]))
        elif window == "since":
            body["since"] = (
                world.today - timedelta(days=draw(st.sampled_from([7, 8, 200])))
            ).isoformat()
        return {"event": body}

    return event()


def _rules(world: World) -> st.SearchStrategy[Any]:
    return st.recursive(
        _leaves(world),
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(lambda rules: {"all": rules}),
            st.lists(inner, min_size=1, max_size=3).map(lambda rules: {"any": rules}),
            inner.map(lambda rule: {"not": rule}),
        ),
        max_leaves=6,
    )


@pytest.fixture
def checked_world(runtime, tenant):
    world = build_world(runtime, tenant, seed=11, size=60)
    with runtime.bound_session(world.keys) as session:
        population = load_population(session, world.keys)
        vocabulary = load_vocabulary(session, world.tenant.id)
    return world, population, vocabulary


def _check_agreement(
    runtime, checked_world, rules: st.SearchStrategy[Any], max_examples: int
) -> list[int]:
    """Draw rules, and check that the compiled SQL (members and count) agrees with the
    Python evaluation on each; returns the sizes found."""
    world, population, vocabulary = checked_world
    now = utcnow()
    seen: list[int] = []

    @given(rule=rules)
    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(rule: Any) -> None:
        try:
            node = parse_rule(rule, vocabulary, now=now)
        except ValidationFailed:
            return
        expected = evaluate(node, population)
        with runtime.bound_session(world.keys) as session:
            dialect = dialect_of(session)
            found = set(session.scalars(compile_segment(node, world.keys, dialect)))
            count = session.scalar(compile_count(node, world.keys, dialect))
        assert found == expected, rule
        assert count == len(expected)
        seen.append(len(expected))

    check()
    return seen


def test_compiled_sql_agrees_with_python_evaluation(runtime, checked_world):
    seen = _check_agreement(runtime, checked_world, _rules(checked_world[0]), 150)
    # The rules were not all trivially empty or full.
    assert len(set(seen)) > 10


def test_top_level_conjunctions_agree_with_python_evaluation(runtime, checked_world):
    """Every rule a top-level ``all``: on SQLite its most selective membership drives
    and the other conditions become correlated probes (compiler ``top``), so this
    draws that form on every example, nested groups and negations included."""
    members = st.recursive(
        _leaves(checked_world[0]),
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=2).map(lambda rules: {"any": rules}),
            inner.map(lambda rule: {"not": rule}),
        ),
        max_leaves=3,
    )
    conjunctions = st.lists(members, min_size=2, max_size=5).map(lambda rules: {"all": rules})
    seen = _check_agreement(runtime, checked_world, conjunctions, 120)
    assert len(set(seen)) > 5
