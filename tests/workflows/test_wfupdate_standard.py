"""Update Contact Field on standard fields: names and phone (PHI, encrypted; the phone
in E.164 with its blind index), language and time zone; design-time type checks at
the step; no value in the history or the audit trail; branches see the new value."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from carepost.audit.models import AuditEvent
from carepost.contacts.service import find_contacts, get_contact
from carepost.core.errors import ValidationFailed
from carepost.workflows import batch
from carepost.workflows.models import WorkflowRunStep
from tests.workflows.conftest import T0

STEPS = [
    {"id": "first", "type": "update_field", "field": "first_name", "value": " Josephine ",
     "next": "last"},
    {"id": "last", "type": "update_field", "field": "last_name", "action": "clear",
     "next": "phone"},
    {"id": "phone", "type": "update_field", "field": "phone", "value": "+1 415-555-2671",
     "next": "lang"},
    {"id": "lang", "type": "update_field", "field": "language", "value": "es-MX", "next": "tz"},
    {"id": "tz", "type": "update_field", "field": "timezone", "value": "America/Chicago",
     "next": "ask"},
    {
        "id": "ask",
        "type": "branch",
        "conditions": [
            {"rule": {"field": "language", "op": "equals", "value": "es-MX"}, "next": "yes"}
        ],
        "fallback": "no",
    },
    {"id": "yes", "type": "exit"},
    {"id": "no", "type": "exit"},
]  # fmt: skip


def _run(journey, people: int = 2):
    workflow = journey.workflow(STEPS)
    ids = [journey.contact(first_name="Ann", last_name="Lee", language="en") for _ in range(people)]
    journey.enroll(workflow, ids)
    journey.advance(T0)
    return workflow, ids


def test_standard_fields_are_set_encrypted_and_never_shown(journey):
    workflow, ids = _run(journey)
    assert journey.history(workflow, ids[0]) == [
        ("first", "updated"),
        ("last", "updated"),
        ("phone", "updated"),
        ("lang", "updated"),
        ("tz", "updated"),
        ("ask", "condition:0"),
        ("yes", "end"),
    ]
    with journey.session() as session:
        contact = get_contact(session, journey.tenant_id, ids[0])
        assert (contact.first_name, contact.last_name) == ("Josephine", None)
        assert contact.phone == "+14155552671"
        assert (contact.language, contact.timezone) == ("es-MX", "America/Chicago")
        # The phone's blind index was rewritten: a look-up by phone finds both.
        found = find_contacts(session, journey.keys, field="phone", value="+14155552671")
        assert {c.id for c in found} == set(ids)
        raw = session.execute(
            text("SELECT first_name, phone FROM contacts WHERE id = :id"),
            {"id": ids[0] if session.bind.dialect.name == "postgresql" else ids[0].hex},
        ).one()
        assert "Josephine" not in str(raw) and "4155552671" not in str(raw)
        audits = session.scalars(
            select(AuditEvent.details).where(
                AuditEvent.tenant_id == journey.tenant_id,
                AuditEvent.action == "contact.workflow_update",
            )
        ).all()
        details = session.scalars(select(WorkflowRunStep.detail)).all()
    assert {a["fields"][0] for a in audits} == {
        "first_name",
        "last_name",
        "phone",
        "language",
        "timezone",
    }
    shown = str(audits) + str(details)
    for secret in ("Josephine", "4155552671", "es-MX", "Chicago", "Lee"):
        assert secret not in shown


def test_an_unchanged_value_is_unchanged(journey):
    workflow = journey.workflow(
        [{"id": "lang", "type": "update_field", "field": "language", "value": "en"}]
    )
    person = journey.contact(language="en")
    journey.enroll(workflow, [person])
    journey.advance(T0)
    assert journey.history(workflow, person) == [("lang", "unchanged")]


def test_the_batch_and_per_run_paths_agree(make_journey, monkeypatch):
    grouped = make_journey()
    first_workflow, first_ids = _run(grouped)
    monkeypatch.delitem(batch.BATCH_HANDLERS, "update_field")
    single = make_journey()
    second_workflow, second_ids = _run(single)
    assert [grouped.history(first_workflow, p) for p in first_ids] == [
        single.history(second_workflow, p) for p in second_ids
    ]
    with single.session() as session:
        contact = get_contact(session, single.tenant_id, second_ids[1])
        assert (contact.first_name, contact.phone) == ("Josephine", "+14155552671")


@pytest.mark.parametrize(
    ("step", "pointer", "words"),
    [
        ({"field": "phone", "value": "555-2671"}, "value", "international format"),
        ({"field": "phone", "value": "+1 000"}, "value", "not a valid phone number"),
        ({"field": "language", "value": "not a tag"}, "value", "BCP 47"),
        ({"field": "timezone", "value": "Mars/Olympus"}, "value", "IANA"),
        ({"field": "first_name", "value": 5}, "value", "takes text"),
        ({"field": "first_name", "value": "  "}, "value", "set needs a value"),
        ({"field": "first_name", "action": "increment"}, "action", "set or cleared"),
        ({"field": "timezone", "action": "now"}, "action", "set or cleared"),
        ({"field": "email", "value": "a@b.example"}, "field", "identifier"),
        ({"field": "journey_stage", "value": "active"}, "field", "Set journey stage"),
    ],
)
def test_design_time_errors_point_at_the_step(journey, step, pointer, words):
    with pytest.raises(ValidationFailed) as failed:
        journey.workflow([{"id": "u", "type": "update_field", **step}])
    [error] = failed.value.errors
    assert error.field == f"#/body/draft/steps/0/{pointer}"
    assert words in error.message and "step u" in error.message
    value = step.get("value")
    if isinstance(value, str) and value.strip():
        assert value not in error.message  # a value may be PHI: never quoted
