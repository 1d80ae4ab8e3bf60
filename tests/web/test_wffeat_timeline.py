"""The contact's timeline merges the workflow steps the contact took with its events,
ordered by time across pages (each entry once), and links each step's workflow."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from carepost.audit.service import SYSTEM
from carepost.contacts import events
from carepost.workflows import engine, service, triggers
from tests.web.test_console_contacts import _post_events, add_contacts, person_item


@pytest.fixture
def marketer(tenant, make_person):
    return make_person(tenant, "marketer")


TIME = re.compile(r'<time datetime="([^"]+)"')
STEP = re.compile(r'data-workflow-step="([^"]+)"')


def journey_for(runtime, tenant, contact_id: uuid.UUID, start: datetime) -> uuid.UUID:
    """Enrolled at ``start``: a 15-minute wait, then the end."""
    steps = [
        {"id": "pause", "type": "wait_duration", "duration": {"minutes": 15}, "next": "done"},
        {"id": "done", "type": "exit"},
    ]
    with runtime.bound_session(tenant[1]) as session:
        row = service.create_workflow(
            session,
            tenant[0].id,
            name="Check-in journey",
            sender_address="care@clinic.example",
            sender_name="The Clinic",
            draft={"steps": steps},
            actor=SYSTEM,
        )
        service.change_status(session, tenant[0].id, row.id, "activate", actor=SYSTEM)
        triggers.enroll_contacts(session, row, [contact_id], source="api", now=start)
        workflow_id = row.id
    engine.advance_due_runs(runtime, now=start, tenant_id=tenant[0].id)
    later = start + timedelta(minutes=15, seconds=1)
    engine.advance_due_runs(runtime, now=later, tenant_id=tenant[0].id)
    return workflow_id


def test_workflow_steps_are_merged_into_the_timeline(tenant, marketer, sign_in, runtime):
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    now = datetime.now(UTC)
    _post_events(runtime, tenant, contact_id, 30)  # now, now-1 min, … now-29 min
    workflow_id = journey_for(runtime, tenant, contact_id, now - timedelta(minutes=20, seconds=30))
    b = sign_in(marketer)
    first = b.get(f"/contacts/{contact_id}")
    assert first.status_code == 200
    assert first.text.count('class="timeline__item') == 25
    assert f'href="/workflows/{workflow_id}">Check-in journey</a>' in first.text
    more = html.unescape(re.search(r'hx-get="([^"]+/timeline[^"]*)"', first.text).group(1))
    rest = b.get(more, headers={"HX-Request": "true"})
    assert "Load more" not in rest.text
    timeline = first.text.split('id="timeline"', 1)[1] + rest.text
    times = [datetime.fromisoformat(t) for t in TIME.findall(timeline)]
    assert len(times) == 32  # 30 events and 2 steps, each once
    assert times == sorted(times, reverse=True)
    assert STEP.findall(timeline) == ["done", "pause"]  # newest first
    assert "Wait" in timeline and "— waited" in timeline and "— end" in timeline


def test_a_step_and_an_event_at_one_instant_are_each_shown_once(tenant, marketer, sign_in, runtime):
    """Page boundaries on a shared instant: the cursor says which source it came from."""
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    now = datetime.now(UTC).replace(microsecond=0)
    journey_for(runtime, tenant, contact_id, now - timedelta(minutes=40))
    _post_events(runtime, tenant, contact_id, 23)  # with the later step: 24 newer entries
    with runtime.bound_session(tenant[1]) as session:
        events.record_events(
            session,
            tenant[1],
            [
                {
                    "contact_id": str(contact_id),
                    "kind": "portal_login",
                    "occurred_at": (now - timedelta(minutes=40)).isoformat(),
                }
            ],
            actor=SYSTEM,
        )
    b = sign_in(marketer)
    first = b.get(f"/contacts/{contact_id}")
    more = html.unescape(re.search(r'hx-get="([^"]+/timeline[^"]*)"', first.text).group(1))
    rest = b.get(more, headers={"HX-Request": "true"})
    timeline = first.text.split('id="timeline"', 1)[1] + rest.text
    # Page 1 ends with the event at the step's instant; page 2 starts with the step.
    assert (
        rest.text.count('class="timeline__item') == 1 and 'data-workflow-step="pause"' in rest.text
    )
    assert len(TIME.findall(timeline)) == 26
    assert STEP.findall(timeline) == ["done", "pause"]


def test_the_timeline_shows_events_only_or_workflow_steps_only(tenant, marketer, sign_in, runtime):
    """?show=events or ?show=steps: one source, paged with the choice kept; an unknown
    choice is refused with the parameter named."""
    [contact_id] = add_contacts(runtime, tenant, [person_item()])
    now = datetime.now(UTC)
    _post_events(runtime, tenant, contact_id, 30)
    journey_for(runtime, tenant, contact_id, now - timedelta(minutes=20, seconds=30))
    b = sign_in(marketer)

    page = b.get(f"/contacts/{contact_id}")
    assert 'id="timeline-show-all"' in page.text and 'aria-current="page">Everything' in page.text

    steps = b.get(f"/contacts/{contact_id}?show=steps")
    assert steps.status_code == 200
    listed = steps.text.split('id="timeline"', 1)[1]
    assert STEP.findall(listed) == ["done", "pause"]
    assert listed.count('class="timeline__item') == 2 and "Load more" not in listed
    assert 'aria-current="page">Workflow steps' in steps.text

    only_events = b.get(f"/contacts/{contact_id}?show=events")
    listed = only_events.text.split('id="timeline"', 1)[1]
    assert not STEP.findall(listed) and listed.count('class="timeline__item') == 25
    more = html.unescape(re.search(r'hx-get="([^"]+/timeline[^"]*)"', listed).group(1))
    assert "show=events" in more  # the next page keeps the choice
    rest = b.get(more, headers={"HX-Request": "true"})
    assert not STEP.findall(rest.text) and rest.text.count('class="timeline__item') == 5
    older = b.get(f"/contacts/{contact_id}/timeline?show=steps")
    assert STEP.findall(older.text) == ["done", "pause"]
    assert 'href="/contacts/' in older.text and "/timeline?show=events" in older.text

    for url in (f"/contacts/{contact_id}?show=nope", f"/contacts/{contact_id}/timeline?show=x"):
        refused = b.get(url)
        assert refused.status_code == 422, url
        assert "show" in refused.text
