"""The Campaigns console pages: the list, the form with its live audience count and the
template's variants, errors at their fields, schedule / send now / pause / resume /
cancel from the campaign's page, the A/B outcome, and read-only for analysts."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from carepost.audit.service import SYSTEM
from carepost.contacts import lists
from carepost.contacts import service as contacts
from carepost.messages.campaigns import advance_campaigns
from carepost.messages.models import Campaign
from carepost.templates import service as templates
from carepost.tenancy import service as tenancy

FOOTER = (
    '<p>{{ organization.physical_address }}</p><p><a href="{{ unsubscribe_url }}">'
    "Unsubscribe</a></p>"
)


def _setup(runtime, tenant, *, members: int = 3, variants=()) -> tuple[uuid.UUID, uuid.UUID]:
    with runtime.bound_session(tenant[1]) as session:
        tenancy.update_tenant_settings(
            session, tenant_id=tenant[0].id, actor=SYSTEM, physical_address="1 Main St"
        )
        ids = [
            contacts.create_contact(
                session,
                tenant[1],
                values={"email": f"p{n}-{uuid.uuid4().hex[:6]}@example.org"},
                actor=SYSTEM,
            ).id
            for n in range(members)
        ]
        row = lists.create_list(
            session, tenant[0].id, name="Newsletter", description="", actor=SYSTEM
        )
        lists.change_members(session, tenant[0].id, row.id, add=ids, remove=[], actor=SYSTEM)
        template = templates.create_template(
            session,
            tenant[0].id,
            name="Flu shots",
            kind="marketing",
            subject="Flu shots are here",
            html=f"<p>Book now.</p>{FOOTER}",
            text=None,
            actor=SYSTEM,
        )
        for values in variants:
            templates.create_variant(
                session, tenant[0].id, template.id, values=values, actor=SYSTEM
            )
        return row.id, template.id


def _form(list_id, template_id, **extra) -> dict[str, str]:
    return {
        "name": "Flu shots 2026",
        "audience": f"list:{list_id}",
        "template_id": str(template_id),
        "from": "news@clinic.example",
        "from_name": "The Clinic",
        "purpose": "marketing",
        "action": "draft",
    } | extra


def _campaign(runtime, tenant) -> Campaign:
    with runtime.database.session() as session:
        found = session.scalars(
            select(Campaign)
            .where(Campaign.tenant_id == tenant[0].id)
            .order_by(Campaign.created_at.desc())
        ).first()
        assert found is not None
        return found


def test_the_form_counts_the_audience_and_shows_the_variants(owner, sign_in, runtime, tenant):
    list_id, template_id = _setup(
        runtime, tenant, members=4, variants=[{"key": "a", "subject": "A", "percent": 30}]
    )
    b = sign_in(owner)
    page = b.get("/campaigns/new")
    assert page.status_code == 200
    assert f'value="list:{list_id}"' in page.text and "Flu shots (marketing)" in page.text
    assert 'hx-post="/campaigns/summary"' in page.text
    live = b.post(
        "/campaigns/summary", {"audience": f"list:{list_id}", "template_id": str(template_id)}
    )
    assert live.status_code == 200 and "<html" not in live.text
    assert '<span class="live-count__value">4</span>' in live.text
    assert "<code>a</code> 30 %" in live.text and "other 70 %" in live.text


def test_create_schedule_pause_resume_cancel(owner, sign_in, runtime, tenant, audit_trail):
    list_id, template_id = _setup(runtime, tenant)
    b = sign_in(owner)
    created = b.post("/campaigns", _form(list_id, template_id))
    assert created.status_code == 303, created.text
    location = created.headers["location"]
    assert location.endswith("?done=created")
    campaign = _campaign(runtime, tenant)
    assert campaign.state == "draft" and campaign.template_id == template_id
    page = b.get(location)
    assert "Flu shots 2026" in page.text and "List: Newsletter" in page.text
    assert 'id="send-now"' in page.text
    scheduled = b.post(f"/campaigns/{campaign.id}/schedule", {"send_at": "2099-01-02T03:04"})
    assert scheduled.status_code == 303
    campaign = _campaign(runtime, tenant)
    assert campaign.state == "scheduled"
    assert campaign.scheduled_at is not None and campaign.scheduled_at.year == 2099
    assert b.post(f"/campaigns/{campaign.id}/pause").status_code == 303
    assert _campaign(runtime, tenant).state == "paused"
    assert b.post(f"/campaigns/{campaign.id}/resume").status_code == 303
    assert _campaign(runtime, tenant).state == "scheduled"
    assert b.post(f"/campaigns/{campaign.id}/cancel").status_code == 303
    assert _campaign(runtime, tenant).state == "cancelled"
    again = b.post(f"/campaigns/{campaign.id}/cancel")
    assert again.status_code == 409 and "ended already" in again.text
    actions = [e.action for e in audit_trail(tenant) if e.action.startswith("campaign.")]
    assert actions == [
        "campaign.create",
        "campaign.schedule",
        "campaign.pause",
        "campaign.resume",
        "campaign.cancel",
    ]
    listed = b.get("/campaigns")
    assert "Flu shots 2026" in listed.text and "cancelled" in listed.text


def test_send_now_starts_and_the_page_shows_the_counts(owner, sign_in, runtime, tenant):
    list_id, template_id = _setup(runtime, tenant, members=2)
    b = sign_in(owner)
    created = b.post("/campaigns", _form(list_id, template_id, action="now"))
    assert created.status_code == 303 and created.headers["location"].endswith("done=scheduled")
    campaign = _campaign(runtime, tenant)
    advance_campaigns(runtime)
    page = b.get(f"/campaigns/{campaign.id}")
    # No consent recorded: marketing is suppressed for both, and the page says so.
    assert 'id="count-suppressed"' in page.text
    assert "2 of 2 contacts done" in page.text


def test_the_progress_panel_polls_while_the_campaign_runs_and_stops_after(
    owner, sign_in, runtime, tenant
):
    list_id, template_id = _setup(runtime, tenant, members=2)
    b = sign_in(owner)
    draft = b.post("/campaigns", _form(list_id, template_id))
    assert draft.status_code == 303
    campaign = _campaign(runtime, tenant)
    # A draft does not poll.
    assert 'hx-trigger="every' not in b.get(f"/campaigns/{campaign.id}").text

    assert b.post(f"/campaigns/{campaign.id}/schedule", {}).status_code == 303
    scheduled = b.get(f"/campaigns/{campaign.id}").text
    assert (
        f'hx-get="/campaigns/{campaign.id}/progress?shown=scheduled" hx-trigger="every 5s"'
        in scheduled
    )
    same = b.get(f"/campaigns/{campaign.id}/progress?shown=scheduled")
    assert same.status_code == 200 and "HX-Refresh" not in same.headers
    assert 'id="campaign-live"' in scheduled

    advance_campaigns(runtime)
    fragment = b.get(f"/campaigns/{campaign.id}/progress?shown=scheduled")
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    # Everyone was suppressed (no consent): the campaign is done, the panel stops polling
    # and the page is told to reload whole, so its status and buttons follow.
    assert "2 of 2 contacts done" in fragment.text
    assert 'hx-trigger="every' not in fragment.text
    assert fragment.headers["HX-Refresh"] == "true"


def test_progress_of_another_organizations_campaign_is_not_found(
    owner, sign_in, runtime, tenant, other_tenant, make_person
):
    list_id, template_id = _setup(runtime, tenant, members=1)
    assert sign_in(owner).post("/campaigns", _form(list_id, template_id)).status_code == 303
    campaign = _campaign(runtime, tenant)
    stranger = sign_in(make_person(other_tenant, "owner"))
    assert stranger.get(f"/campaigns/{campaign.id}/progress").status_code == 404
    assert stranger.get(f"/campaigns/{uuid.uuid4()}/progress").status_code == 404


def test_errors_are_shown_at_their_fields(owner, sign_in, runtime, tenant):
    list_id, template_id = _setup(runtime, tenant)
    b = sign_in(owner)
    no_audience = b.post("/campaigns", _form(list_id, template_id, audience=""))
    assert no_audience.status_code == 422
    assert (
        'id="campaign-audience"' in no_audience.text and 'aria-invalid="true"' in no_audience.text
    )
    no_content = b.post("/campaigns", _form(list_id, "", subject=""))
    assert no_content.status_code == 422 and "subject is required" in no_content.text
    transactional = b.post("/campaigns", _form(list_id, template_id, purpose="transactional"))
    assert transactional.status_code == 422
    assert "marketing template is sent for the marketing purpose" in transactional.text
    bad_time = b.post("/campaigns", _form(list_id, template_id, action="schedule", send_at="x"))
    assert bad_time.status_code == 422 and "date and time" in bad_time.text
    with runtime.database.session() as session:
        assert (
            session.scalars(select(Campaign).where(Campaign.tenant_id == tenant[0].id)).all() == []
        )


def test_edit_changes_the_draft(owner, sign_in, runtime, tenant):
    list_id, template_id = _setup(runtime, tenant)
    b = sign_in(owner)
    b.post("/campaigns", _form(list_id, template_id))
    campaign = _campaign(runtime, tenant)
    form = b.get(f"/campaigns/{campaign.id}/edit")
    assert form.status_code == 200 and 'value="Flu shots 2026"' in form.text
    saved = b.post(
        f"/campaigns/{campaign.id}",
        _form(list_id, template_id, name="Renamed", throttle_per_hour="600"),
    )
    assert saved.status_code == 303, saved.text
    changed = _campaign(runtime, tenant)
    assert (changed.name, changed.throttle_per_hour) == ("Renamed", 600)


def test_an_analyst_reads_but_cannot_send(make_person, owner, sign_in, runtime, tenant):
    list_id, template_id = _setup(runtime, tenant)
    sign_in(owner).post("/campaigns", _form(list_id, template_id))
    campaign = _campaign(runtime, tenant)
    analyst = sign_in(make_person(tenant, "analyst"))
    page = analyst.get(f"/campaigns/{campaign.id}")
    assert page.status_code == 200 and 'id="send-now"' not in page.text
    assert analyst.get("/campaigns/new").status_code == 403
    assert analyst.post(f"/campaigns/{campaign.id}/schedule").status_code == 403
    assert _campaign(runtime, tenant).state == "draft"
    auditor = sign_in(make_person(tenant, "auditor"))
    assert auditor.get("/campaigns").status_code == 200


def test_the_ab_outcome_is_shown(owner, sign_in, runtime, tenant):
    list_id, template_id = _setup(
        runtime,
        tenant,
        variants=[
            {"key": "a", "subject": "A", "percent": 20},
            {"key": "b", "subject": "B", "percent": 20},
        ],
    )
    b = sign_in(owner)
    b.post("/campaigns", _form(list_id, template_id, ab_test="yes", ab_metric="clicks"))
    campaign = _campaign(runtime, tenant)
    assert (campaign.ab_metric, campaign.ab_window_hours) == ("clicks", 24)
    page = b.get(f"/campaigns/{campaign.id}")
    assert 'id="ab-test"' in page.text and "Starts with the campaign" in page.text
    from carepost.core.database import utcnow

    with runtime.bound_session(tenant[1]) as session:
        row = session.get(Campaign, campaign.id)
        assert row is not None
        row.ab_phase, row.ab_winner, row.ab_decided_at = "decided", "b", utcnow()
        row.ab_results = [
            {"key": "a", "percent": 20, "delivered": 10, "opens": 4, "clicks": 1},
            {"key": "b", "percent": 20, "delivered": 10, "opens": 3, "clicks": 3},
        ]
    page = b.get(f"/campaigns/{campaign.id}")
    assert 'id="ab-winner">b<' in page.text and 'id="ab-results"' in page.text
