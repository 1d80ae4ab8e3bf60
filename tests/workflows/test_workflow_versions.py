"""Publishing a new version of an active workflow: runs in flight continue; runs on a
removed step go to its nearest following step, or exit; the count comes first."""

from __future__ import annotations

from datetime import timedelta

import pytest

from carepost.audit.service import SYSTEM
from carepost.core.errors import ValidationFailed
from carepost.workflows import service
from carepost.workflows.models import RunStatus
from tests.workflows.conftest import T0


def _wait(step_id, next_step=None, days=1):
    step = {"id": step_id, "type": "wait_duration", "duration": {"days": days}}
    return step | ({"next": next_step} if next_step else {})


def test_publishing_moves_runs_off_removed_steps_by_the_migration_rule(journey):
    workflow = journey.workflow(
        [
            {
                "id": "start",
                "type": "branch",
                "conditions": [
                    {"rule": {"field": "language", "op": "equals", "value": "es"}, "next": "b"}
                ],
                "fallback": "a",
            },
            _wait("a", "b", days=1),
            _wait("b", "c", days=2),
            _wait("c", "z", days=3),
            {"id": "z", "type": "exit"},
        ]
    )
    at_a = journey.contact(language="en")
    at_b = journey.contact(language="es")
    journey.enroll(workflow, [at_a, at_b])
    journey.advance(T0)
    assert journey.run(workflow, at_a).current_step == "a"
    assert journey.run(workflow, at_b).current_step == "b"
    # Version 2 drops a and b: their contacts go to c (the nearest following step kept).
    new_draft = {
        "steps": [
            {"id": "start", "type": "goto", "target": "c"},
            _wait("c", "z", days=3),
            {"id": "z", "type": "exit"},
        ]
    }
    with journey.session() as session:
        plan = service.preview_publish(session, journey.tenant_id, workflow, new_draft)
    assert plan.affected == 2 and plan.moved == {"a": "c", "b": "c"} and plan.exiting == []
    with journey.session() as session:
        service.update_workflow(
            session,
            journey.tenant_id,
            workflow,
            changes={"draft": new_draft},
            actor=SYSTEM,
            now=T0 + timedelta(hours=1),
        )
        assert service.get_workflow(session, journey.tenant_id, workflow).current_version == 2
    for person in (at_a, at_b):
        run = journey.run(workflow, person)
        assert (run.version, run.current_step, run.status) == (2, "c", RunStatus.ACTIVE)
    journey.advance(T0 + timedelta(hours=1))
    assert journey.run(workflow, at_a).wake_at == T0 + timedelta(hours=1, days=3)
    assert ("a", "migrated") in journey.history(workflow, at_a)


def test_runs_on_a_removed_last_step_exit_and_kept_steps_keep_their_wait(journey):
    workflow = journey.workflow([_wait("first", "last", days=5), _wait("last", days=1)])
    person, later = journey.contact(), journey.contact()
    journey.enroll(workflow, [person])
    journey.advance(T0)
    journey.advance(T0 + timedelta(days=5))
    journey.enroll(workflow, [later], now=T0 + timedelta(days=5))
    journey.advance(T0 + timedelta(days=5))
    assert journey.run(workflow, person).current_step == "last"
    assert journey.run(workflow, later).current_step == "first"
    draft = {"steps": [_wait("first", days=5)]}
    with journey.session() as session:
        plan = service.preview_publish(session, journey.tenant_id, workflow, draft)
        assert (plan.staying, plan.exiting, plan.affected) == (1, ["last"], 1)
        service.update_workflow(
            session, journey.tenant_id, workflow, changes={"draft": draft}, actor=SYSTEM
        )
    assert journey.run(workflow, person).status == RunStatus.EXITED
    kept = journey.run(workflow, later)
    assert (kept.version, kept.status, kept.wake_at) == (
        2,
        RunStatus.WAITING,
        T0 + timedelta(days=10),
    )


def test_an_invalid_new_version_of_an_active_workflow_is_refused_and_nothing_changes(journey):
    workflow = journey.workflow([_wait("only", days=1)])
    with pytest.raises(ValidationFailed) as refused, journey.session() as session:
        service.update_workflow(
            session,
            journey.tenant_id,
            workflow,
            changes={"draft": {"steps": [{"id": "x", "type": "goto", "target": "gone"}]}},
            actor=SYSTEM,
        )
    assert refused.value.errors[0].field == "#/body/draft/steps/0/target"
    with journey.session() as session:
        row = service.get_workflow(session, journey.tenant_id, workflow)
        assert row.current_version == 1 and row.draft["steps"][0]["id"] == "only"
