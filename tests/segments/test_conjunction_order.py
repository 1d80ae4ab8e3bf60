"""The order a top-level conjunction compiles in: most selective condition first,
and on SQLite the shape that lets it drive (one ``IN``, the rest correlated probes).
Results are checked against the Python evaluation by the property tests; this file
pins the shape, which is what the segment benchmark's speed rests on."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.dialects import postgresql, sqlite

from carepost.segments.compiler import compile_count, drives, selectivity
from carepost.segments.evaluate import evaluate, load_population
from carepost.segments.rules import parse_rule
from carepost.segments.vocabulary import load_vocabulary


def _rule(list_id: str) -> dict:
    return {
        "all": [
            {"consent": {"channel": "email", "purpose": "marketing", "status": "granted"}},
            {"field": "birth_date", "op": "age_between", "value": [50, 75]},
            {"event": {"kind": "email.opened", "within_last_days": 90}},
            {"list": list_id},
            {"field": "conditions", "op": "contains_any", "value": ["e11"]},
        ]
    }


def test_the_most_selective_condition_drives_and_the_others_probe(runtime, world):
    now = datetime.now(UTC)
    with runtime.bound_session(world.keys) as session:
        vocabulary = load_vocabulary(session, world.tenant.id)
        node = parse_rule(_rule(str(world.list_ids[0])), vocabulary, now=now)
        population = load_population(session, world.keys)
        expected = evaluate(node, population)
        dialect = session.get_bind().dialect.name
        assert session.scalar(compile_count(node, world.keys, dialect)) == len(expected)
    ordered = sorted(node.children, key=selectivity)
    # One of five choices (0.2), a list (0.25),
    # then events, ranges, consent.
    assert [type(child).__name__ for child in ordered][:2] == ["FieldCondition", "ListCondition"]
    assert ordered[0].spec.key == "conditions"
    assert drives(ordered[0])

    lite = str(compile_count(node, world.keys, "sqlite").compile(dialect=sqlite.dialect()))
    assert lite.count("EXISTS") == 4
    assert lite.index("contacts.id IN") < lite.index("EXISTS")
    # The age probe reads the contact's birth-date tokens, not the primary key per token.
    assert lite.count("contact_tokens.token || ") == 1
    pg = str(compile_count(node, world.keys, "postgresql").compile(dialect=postgresql.dialect()))
    assert "EXISTS" not in pg and pg.count("contacts.id IN") == 5


def test_no_probes_without_a_driving_condition(runtime, world):
    now = datetime.now(UTC)
    rule = {
        "all": [
            {"not": {"list": str(world.list_ids[0])}},
            {"field": "birth_date", "op": "age_between", "value": [50, 75]},
        ]
    }
    with runtime.bound_session(world.keys) as session:
        node = parse_rule(rule, load_vocabulary(session, world.tenant.id), now=now)
    lite = str(compile_count(node, world.keys, "sqlite").compile(dialect=sqlite.dialect()))
    assert "EXISTS" not in lite


def test_a_range_after_a_broad_driver_stays_one_list(runtime, world):
    """On the list (a guessed 25% left) and aged 50-75: probing each candidate's
    birth-date tokens costs more than one list of the range's contacts."""
    now = datetime.now(UTC)
    rule = {
        "all": [
            {"list": str(world.list_ids[0])},
            {"field": "birth_date", "op": "age_between", "value": [50, 75]},
        ]
    }
    with runtime.bound_session(world.keys) as session:
        node = parse_rule(rule, load_vocabulary(session, world.tenant.id), now=now)
        population = load_population(session, world.keys)
        dialect = session.get_bind().dialect.name
        assert session.scalar(compile_count(node, world.keys, dialect)) == len(
            evaluate(node, population)
        )
    lite = str(compile_count(node, world.keys, "sqlite").compile(dialect=sqlite.dialect()))
    # The list drives; the age stays an IN list.
    assert "EXISTS" not in lite
    assert lite.count("contacts.id IN") == 2 and "||" not in lite
