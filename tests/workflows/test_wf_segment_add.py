"""The Add to Segment step: contacts join the segment's included list (made once),
every use of the segment sees them, design-time errors point at the step, and a
segment deleted under an active workflow lets the run go on."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from carepost.audit.service import SYSTEM
from carepost.contacts import lists
from carepost.contacts.activity_models import ContactList
from carepost.core.errors import ValidationFailed
from carepost.messages.sending import SendLimits
from carepost.segments import service as segments
from carepost.workflows import batch, service
from carepost.workflows.models import WorkflowRunStep
from carepost.workflows.simulate import simulate
from tests.workflows.conftest import T0

RULE = {"field": "language", "op": "equals", "value": "fr"}


def _segment(journey, name: str = "VIP") -> uuid.UUID:
    with journey.session() as session:
        return segments.create_segment(
            session, journey.tenant_id, name=name, description="", rule=RULE, actor=SYSTEM
        ).id


def _steps(segment_id: uuid.UUID) -> list[dict[str, Any]]:
    return [
        {"id": "join", "type": "segment_add", "segment_id": str(segment_id), "next": "ask"},
        {
            "id": "ask",
            "type": "branch",
            "conditions": [{"rule": RULE, "next": "french"}],
            "fallback": "done",
        },
        {"id": "french", "type": "exit"},
        {"id": "done", "type": "exit"},
    ]


def _count(journey, segment_id: uuid.UUID) -> int:
    with journey.session() as session:
        return segments.count_segment(session, journey.keys, segment_id)


def test_added_contacts_are_members_beside_the_rule(journey):
    segment_id = _segment(journey)
    french = journey.contact(language="fr")
    others = [journey.contact(language="en") for _ in range(3)]
    assert _count(journey, segment_id) == 1
    workflow = journey.workflow(_steps(segment_id))
    journey.enroll(workflow, others[:2])
    journey.advance(T0)
    assert journey.history(workflow, others[0])[:2] == [("join", "added"), ("ask", "fallback")]
    assert _count(journey, segment_id) == 3  # the rule's one and the two added
    with journey.session() as session:
        row = segments.get_segment(session, journey.tenant_id, segment_id)
        assert row.rule == RULE  # the marketer's rule is untouched
        included = lists.get_list(session, journey.tenant_id, row.include_list_id)
        assert included.name == "Added to segment: VIP"
        members = segments.segment_members(
            session, journey.keys, segment_id, after=None, limit=10, with_phi=False
        )
        assert {m.id for m in members} == {french, *others[:2]}
        snapshot = segments.snapshot_segment(session, journey.keys, segment_id, reason="test")
        assert (
            segments.get_snapshot(session, journey.tenant_id, segment_id, snapshot).member_count
            == 3
        )
    # A second workflow adding to the same segment reuses its list.
    second = journey.workflow(_steps(segment_id))
    journey.enroll(second, others)
    journey.advance(T0)
    assert _count(journey, segment_id) == 4
    with journey.session() as session:
        made = session.scalar(
            select(func.count())
            .select_from(ContactList)
            .where(ContactList.tenant_id == journey.tenant_id)
        )
    assert made == 1


def test_the_batch_and_per_run_paths_agree(make_journey, monkeypatch):
    results = []
    for single in (False, True):
        if single:
            monkeypatch.delitem(batch.BATCH_HANDLERS, "segment_add")
        journey = make_journey()
        segment_id = _segment(journey)
        people = [journey.contact(language="en") for _ in range(3)]
        workflow = journey.workflow(_steps(segment_id))
        journey.enroll(workflow, people)
        journey.advance(T0)
        results.append(
            ([journey.history(workflow, p) for p in people], _count(journey, segment_id))
        )
    assert results[0] == results[1]
    assert results[0][1] == 3


def test_an_unknown_segment_is_refused_at_the_step(journey):
    workflow = journey.workflow(_steps(uuid.uuid4()), activate=False)
    with journey.session() as session, pytest.raises(ValidationFailed) as failed:
        service.change_status(session, journey.tenant_id, workflow, "activate", actor=SYSTEM)
    errors = {e.field: e.message for e in failed.value.errors}
    assert errors == {"#/body/draft/steps/0/segment_id": "step join: no such segment"}


def test_another_organizations_segment_is_no_such_segment(make_journey):
    mine, theirs = make_journey(), make_journey()
    foreign = _segment(theirs)
    workflow = mine.workflow(_steps(foreign), activate=False)
    with mine.session() as session, pytest.raises(ValidationFailed) as failed:
        service.change_status(session, mine.tenant_id, workflow, "activate", actor=SYSTEM)
    assert failed.value.errors[0].field.endswith("/steps/0/segment_id")


def test_a_segment_deleted_under_an_active_workflow_lets_runs_go_on(journey):
    segment_id = _segment(journey)
    person = journey.contact(language="en")
    workflow = journey.workflow(_steps(segment_id))
    with journey.session() as session:
        segments.delete_segment(session, journey.tenant_id, segment_id, actor=SYSTEM)
    journey.enroll(workflow, [person])
    journey.advance(T0)
    assert journey.history(workflow, person) == [
        ("join", "segment_deleted"),
        ("ask", "fallback"),
        ("done", "end"),
    ]
    assert journey.run(workflow, person).status == "completed"
    with journey.session() as session:
        detail = session.scalar(
            select(WorkflowRunStep.detail).where(WorkflowRunStep.outcome == "segment_deleted")
        )
    assert detail == {"segment_id": str(segment_id)}


def test_a_deleted_included_list_is_made_again_and_old_additions_are_gone(journey):
    segment_id = _segment(journey)
    first, second = journey.contact(language="en"), journey.contact(language="en")
    workflow = journey.workflow(_steps(segment_id))
    journey.enroll(workflow, [first])
    journey.advance(T0)
    with journey.session() as session:
        row = segments.get_segment(session, journey.tenant_id, segment_id)
        lists.delete_list(session, journey.tenant_id, row.include_list_id, actor=SYSTEM)
    assert _count(journey, segment_id) == 0
    journey.enroll(workflow, [second])
    journey.advance(T0)
    assert _count(journey, segment_id) == 1


def test_a_dry_run_adds_nobody(journey):
    segment_id = _segment(journey)
    person = journey.contact(language="en")
    workflow = journey.workflow(_steps(segment_id))
    with journey.session() as session:
        result = simulate(
            session,
            journey.keys,
            workflow,
            person,
            now=T0,
            limits=SendLimits(1_000_000, "http://localhost"),
        )
    assert result.path[0].outcome == "would_add"
    assert _count(journey, segment_id) == 0


def test_concurrent_first_additions_make_one_list(journey):
    if journey.runtime.database.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer")
    segment_id = _segment(journey)
    people = [journey.contact(language="en") for _ in range(4)]
    errors: list[BaseException] = []

    def add(contact_id: uuid.UUID) -> None:
        try:
            with journey.session() as session:
                segments.add_to_segment(
                    session, journey.tenant_id, segment_id, [contact_id], actor=SYSTEM
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(p,)) for p in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert _count(journey, segment_id) == 4


def test_a_taken_list_name_gets_the_segment_id(journey):
    long_name = "V" * 200
    segment_id = _segment(journey, long_name)
    person = journey.contact()
    with journey.session() as session:
        lists.create_list(
            session,
            journey.tenant_id,
            name=f"Added to segment: {long_name}"[:185],
            description="",
            actor=SYSTEM,
        )
        segments.add_to_segment(session, journey.tenant_id, segment_id, [person], actor=SYSTEM)
        row = segments.get_segment(session, journey.tenant_id, segment_id)
        made = lists.get_list(session, journey.tenant_id, row.include_list_id)
    assert made.name.endswith(f"({segment_id.hex[:8]})") and len(made.name) <= 200
    assert _count(journey, segment_id) == 1
