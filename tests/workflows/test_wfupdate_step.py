"""The Update Contact Field step: each action, PHI tokens rewritten so rules see the
new value, the batch and per-run paths agreeing, design-time errors, dry runs."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields
from carepost.contacts.models import ContactToken
from carepost.contacts.service import get_contact
from carepost.core.errors import ValidationFailed
from carepost.messages.sending import SendLimits
from carepost.workflows import batch, service
from carepost.workflows.simulate import simulate
from tests.workflows.conftest import T0

FIELDS = [
    ("diagnosis", "string", {}),
    ("visits", "number", {}),
    ("last_seen", "datetime", {}),
    ("seen_on", "date", {}),
    ("note", "string", {"sealed": True}),
]


def _fields(journey) -> None:
    with journey.session() as session:
        for key, kind, extra in FIELDS:
            custom_fields.create_field(
                session, journey.tenant_id, key=key, label=key, type=kind, actor=SYSTEM, **extra
            )


def _steps() -> list[dict[str, Any]]:
    return [
        {"id": "dx", "type": "update_field", "field": "diagnosis", "value": " E11 ", "next": "inc"},
        {
            "id": "inc",
            "type": "update_field",
            "field": "visits",
            "action": "increment",
            "by": 2,
            "next": "now",
        },
        {
            "id": "now",
            "type": "update_field",
            "field": "last_seen",
            "action": "now",
            "next": "today",
        },
        {
            "id": "today",
            "type": "update_field",
            "field": "seen_on",
            "action": "today",
            "next": "clear",
        },
        {"id": "clear", "type": "update_field", "field": "note", "action": "clear", "next": "ask"},
        {
            "id": "ask",
            "type": "branch",
            "conditions": [
                {"rule": {"field": "diagnosis", "op": "equals", "value": "E11"}, "next": "yes"}
            ],
            "fallback": "no",
        },
        {"id": "yes", "type": "exit"},
        {"id": "no", "type": "exit"},
    ]


def _tokens(journey, contact_id) -> set[tuple[str, str]]:
    with journey.session() as session:
        return set(
            session.execute(
                select(ContactToken.field_key, ContactToken.token).where(
                    ContactToken.tenant_id == journey.tenant_id,
                    ContactToken.contact_id == contact_id,
                )
            ).all()
        )


def _custom(journey, contact_id) -> dict[str, Any]:
    with journey.session() as session:
        return dict(get_contact(session, journey.tenant_id, contact_id).custom or {})


def _run_all(journey, count: int) -> tuple[list[Any], list[list[tuple[str, str]]]]:
    workflow = journey.workflow(_steps())
    people = [
        journey.contact(custom={"visits": 3, "note": "private", "diagnosis": "I10"})
        for _ in range(count - 1)
    ] + [journey.contact()]
    journey.enroll(workflow, people)
    journey.advance(T0)
    return people, [journey.history(workflow, p) for p in people]


EXPECTED = {
    "diagnosis": "E11",
    "last_seen": "2026-03-02T15:00:00Z",
    "seen_on": "2026-03-02",
}


def test_each_action_and_a_rule_on_the_new_phi_value(journey):
    _fields(journey)
    people, histories = _run_all(journey, 3)
    for person, history in zip(people[:-1], histories[:-1], strict=True):
        assert _custom(journey, person) == {**EXPECTED, "visits": 5}
        assert history[-2:] == [("ask", "condition:0"), ("yes", "end")]
        assert [o for _, o in history[:5]] == ["updated"] * 5
        assert {key for key, _ in _tokens(journey, person)} >= {"diagnosis", "visits"}
        assert "note" not in {key for key, _ in _tokens(journey, person)}
    fresh = people[-1]
    assert _custom(journey, fresh) == {**EXPECTED, "visits": 2}
    assert [o for _, o in histories[-1]][4] == "unchanged"  # nothing to clear
    with journey.session() as session:
        audits = session.scalars(
            select(AuditEvent).where(
                AuditEvent.tenant_id == journey.tenant_id,
                AuditEvent.action == "contact.workflow_update",
            )
        ).all()
    assert audits and all("E11" not in str(a.details) for a in audits)


def test_the_batch_and_per_run_paths_give_the_same_result(make_journey, monkeypatch):
    grouped = make_journey()
    _fields(grouped)
    people, histories = _run_all(grouped, 3)
    monkeypatch.delitem(batch.BATCH_HANDLERS, "update_field")
    single = make_journey()
    _fields(single)
    others, other_histories = _run_all(single, 3)
    assert histories == other_histories
    for a, b in zip(people, others, strict=True):
        assert _custom(grouped, a) == _custom(single, b)
        assert {k for k, _ in _tokens(grouped, a)} == {k for k, _ in _tokens(single, b)}
        assert len(_tokens(grouped, a)) == len(_tokens(single, b))


@pytest.mark.parametrize(
    ("step", "pointer", "words"),
    [
        ({"field": "nope", "value": "x"}, "field", "no such contact field"),
        ({"field": "visits", "value": "many"}, "value", "must be a number"),
        ({"field": "diagnosis", "action": "increment"}, "action", "number field"),
        ({"field": "visits", "action": "today"}, "action", "date"),
        ({"field": "seen_on", "value": "tomorrow"}, "value", "ISO date"),
    ],
)
def test_design_time_errors_point_at_the_step(journey, step, pointer, words):
    _fields(journey)
    with pytest.raises(ValidationFailed) as failed:
        journey.workflow([{"id": "u", "type": "update_field", **step}])
    [error] = failed.value.errors
    assert error.field == f"#/body/draft/steps/0/{pointer}"
    assert words in error.message and "step u" in error.message


def test_a_simulation_writes_nothing(journey):
    _fields(journey)
    workflow = journey.workflow(_steps())
    person = journey.contact(custom={"visits": 3, "note": "private", "diagnosis": "I10"})
    before, tokens = _custom(journey, person), _tokens(journey, person)
    settings = journey.runtime.settings
    with journey.session() as session:
        audits = session.scalar(select(func.count()).select_from(AuditEvent))
        result = simulate(
            session,
            journey.keys,
            workflow,
            person,
            now=T0,
            limits=SendLimits(settings.outbox_max_attachment_bytes, settings.base_url),
        )
        session.flush()
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == audits
    assert [s.outcome for s in result.path][:5] == ["updated"] * 5
    assert _custom(journey, person) == before and _tokens(journey, person) == tokens
    with journey.session() as session:
        row = service.get_workflow(session, journey.tenant_id, workflow)
        assert row is not None
