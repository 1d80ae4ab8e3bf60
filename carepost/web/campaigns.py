"""Campaigns in the console: the list, the new/edit form (with the audience's live
count and the template's A/B variants), and each campaign's page with its counts
per message state, progress, A/B outcome and the Schedule / Send now / Pause /
Resume / Cancel buttons.

Thin views over :mod:`carepost.messages.campaigns`, with the API's permissions:
reading needs ``reports:read``, changing ``messages:send``. Raw content is shown
only in the edit form (to people who may send), never in lists.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from carepost.contacts import lists as contact_lists
from carepost.core.errors import CarepostError, FieldError, ValidationFailed
from carepost.messages import campaigns as service
from carepost.messages.models import Campaign, CampaignState, MessageState
from carepost.messages.schemas import CampaignIn, CampaignUpdate
from carepost.segments import service as segments
from carepost.templates import service as templates
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)
READ = "reports:read"
SEND = "messages:send"
CHOICES_LIMIT = 500

NOTICES = {
    "created": "The campaign is saved as a draft. Schedule it or send it now below.",
    "saved": "The campaign is saved.",
    "scheduled": "The campaign is scheduled; workers start it at its time.",
    "paused": "The campaign is paused; its queued messages are held.",
    "resumed": "The campaign is resumed.",
    "cancelled": "The campaign is cancelled; messages not yet sent will not go.",
}
# Message states in the order a campaign's messages move through them.
STATE_ORDER = (
    MessageState.HELD,
    MessageState.QUEUED,
    MessageState.SENDING,
    MessageState.DEFERRED,
    MessageState.DELIVERED,
    MessageState.BOUNCED,
    MessageState.FAILED,
    MessageState.SUPPRESSED,
    MessageState.CANCELLED,
)
FINAL_STATES = frozenset(
    {
        MessageState.DELIVERED,
        MessageState.BOUNCED,
        MessageState.FAILED,
        MessageState.SUPPRESSED,
        MessageState.CANCELLED,
    }
)

FORM = FormSpec(
    id="campaign",
    submit="Save draft",
    fields=(
        Field("name", "Campaign name", required=True, attrs={"maxlength": "200"}),
        Field(
            "audience",
            "Audience",
            "select",
            hint="A list or a saved segment; its members are frozen when the campaign starts.",
            required=True,
        ),
        Field(
            "template_id",
            "Template",
            "select",
            hint="A stored email template, or write the content below.",
        ),
        Field("subject", "Subject", hint="Only without a template.", attrs={"maxlength": "998"}),
        Field("html", "HTML content", "textarea", hint="Only without a template."),
        Field("text", "Text content", "textarea", hint="Only without a template."),
        Field("from", "Sender address", "email", required=True, attrs={"maxlength": "320"}),
        Field("from_name", "Sender name", attrs={"maxlength": "200"}),
        Field("reply_to", "Reply-to address", "email", attrs={"maxlength": "320"}),
        Field(
            "purpose",
            "Purpose",
            "select",
            hint="Marketing goes only to contacts who consented, with an unsubscribe link.",
            choices=(Choice("marketing", "Marketing"), Choice("transactional", "Transactional")),
        ),
        Field(
            "throttle_per_hour",
            "Throttle (messages per hour)",
            "number",
            hint="Leave empty to send as fast as the workers go.",
            attrs={"min": "1", "max": "10000000"},
        ),
        Field(
            "ab_test",
            "A/B test",
            "checkboxes",
            hint="When the template has variants: test them on their split, then send the "
            "winner to everyone else.",
            choices=(Choice("yes", "Test the template's variants"),),
        ),
        Field(
            "ab_metric",
            "Winner by",
            "select",
            choices=(
                Choice("", "The template's setting"),
                Choice("opens", "Opens"),
                Choice("clicks", "Clicks"),
            ),
        ),
        Field(
            "ab_window_hours",
            "Test window (hours)",
            "number",
            hint="How long opens and clicks are counted before the winner is chosen.",
            attrs={"min": "1", "max": "720"},
        ),
        Field(
            "send_at",
            "Send at (UTC)",
            "datetime-local",
            hint="For “Schedule”; “Send now” starts at once.",
        ),
    ),
)

CAMPAIGN_TABLE = Table(
    caption="Campaigns, newest first",
    id="campaign",
    row_id=lambda row: str(row["campaign"].id),
    empty="No campaigns yet.",
    columns=(
        Column(
            "Name", lambda r: r["campaign"].name, link=lambda r: f"/campaigns/{r['campaign'].id}"
        ),
        Column("Status", lambda r: r["campaign"].state, kind="badge"),
        Column("Audience", lambda r: r["audience"]),
        Column("Messages", lambda r: r["counts"]),
        Column("Scheduled", lambda r: r["campaign"].scheduled_at, kind="time"),
    ),
)


def _counts_text(counts: dict[str, int]) -> str:
    parts = [f"{counts[s]:,} {s}" for s in STATE_ORDER if counts.get(s)]
    return " · ".join(parts) or "—"


def _audience_names(
    session: Session, tenant_id: uuid.UUID
) -> tuple[dict[uuid.UUID, str], dict[uuid.UUID, str]]:
    found_lists = contact_lists.list_lists(session, tenant_id, after=None, limit=CHOICES_LIMIT)
    found_segments = segments.list_segments(session, tenant_id, after=None, limit=CHOICES_LIMIT)
    return ({r.id: r.name for r in found_lists}, {r.id: r.name for r in found_segments})


def _audience_label(
    campaign: Campaign, names: tuple[dict[uuid.UUID, str], dict[uuid.UUID, str]]
) -> str:
    if campaign.list_id is not None:
        return f"List: {names[0].get(campaign.list_id, 'another list')}"
    if campaign.segment_id is not None:
        return f"Segment: {names[1].get(campaign.segment_id, 'another segment')}"
    return "(deleted)"


@router.get("/campaigns")
def campaigns_page(console: Annotated[Console, Depends(page(READ))]) -> Response:
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        names = _audience_names(session, tenant_id)
        rows = [
            {
                "campaign": c,
                "audience": _audience_label(c, names),
                "counts": _counts_text(service.state_counts(session, c.id)),
            }
            for c in service.list_campaigns(session, tenant_id, after=None, limit=100)
        ]
    return console.render(
        "campaigns/list.html",
        title="Campaigns",
        table=CAMPAIGN_TABLE,
        rows=rows,
        notice=notice_for(console.request, NOTICES),
    )


# --- the form ----------------------------------------------------------------------------


def _form_spec(session: Session, tenant_id: uuid.UUID) -> FormSpec:
    lists_by_id, segments_by_id = _audience_names(session, tenant_id)
    audience = [Choice("", "Choose a list or segment")]
    audience += [Choice(f"list:{i}", f"List: {n}") for i, n in lists_by_id.items()]
    audience += [Choice(f"segment:{i}", f"Segment: {n}") for i, n in segments_by_id.items()]
    stored = templates.list_templates(session, tenant_id, after=None, limit=CHOICES_LIMIT)
    choices = [Choice("", "No template: write the content below")]
    choices += [Choice(str(t.id), f"{t.name} ({t.kind})") for t in stored]
    return FORM.with_choices("audience", audience).with_choices("template_id", choices)


def _audience_ids(value: str) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    kind, _, raw = value.partition(":")
    try:
        found = uuid.UUID(raw)
    except ValueError:
        raise ValidationFailed("choose a list or a segment", field="audience") from None
    return (found, None) if kind == "list" else (None, found) if kind == "segment" else (None, None)


def _optional(form: BoundForm, name: str) -> str | None:
    return form.value(name).strip() or None


def _number(form: BoundForm, name: str) -> int | None:
    value = form.value(name).strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValidationFailed("enter a whole number", field=name)
    return int(value)


def _values(form: BoundForm) -> dict[str, Any]:
    """The form as the API's campaign body (raw content only without a template)."""
    list_id, segment_id = _audience_ids(form.value("audience"))
    template_id = _optional(form, "template_id")
    raw = template_id is None
    return {
        "name": form.value("name").strip(),
        "list_id": list_id,
        "segment_id": segment_id,
        "template_id": uuid.UUID(template_id) if template_id else None,
        "subject": _optional(form, "subject") if raw else None,
        "html": _optional(form, "html") if raw else None,
        "text": _optional(form, "text") if raw else None,
        "from": form.value("from").strip(),
        "from_name": _optional(form, "from_name"),
        "reply_to": _optional(form, "reply_to"),
        "purpose": form.value("purpose") or "marketing",
        "throttle_per_hour": _number(form, "throttle_per_hour"),
        "ab_test": "yes" in form.selected("ab_test"),
        "ab_metric": _optional(form, "ab_metric"),
        "ab_window_hours": _number(form, "ab_window_hours"),
    }


def _send_at(form: BoundForm) -> datetime:
    value = form.value("send_at").strip()
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed("enter the date and time to send at", field="send_at") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _pydantic_failure(exc: ValidationError) -> ValidationFailed:
    errors = [
        FieldError(str(e["loc"][-1]) if e["loc"] else "name", e["msg"].lower())
        for e in exc.errors()
    ]
    return ValidationFailed("check the highlighted fields", errors=errors)


def _summary(session: Session, console: Console, form: BoundForm) -> dict[str, Any]:
    """The audience's count now and the chosen template's variants (for the A/B part)."""
    keys = console.principal.keys
    count: int | None = None
    faults: list[str] = []
    try:
        list_id, segment_id = _audience_ids(form.value("audience"))
        if list_id is not None:
            contact_lists.get_list(session, keys.tenant_id, list_id)
            count = contact_lists.member_counts(session, keys.tenant_id, [list_id]).get(list_id, 0)
        elif segment_id is not None:
            count = segments.count_segment(session, keys, segment_id)
    except ValidationFailed:
        count = None
    except CarepostError as exc:
        faults.append(exc.detail)
    variants: list[Any] = []
    template = None
    template_id = form.value("template_id")
    if template_id:
        try:
            template = templates.get_template(session, keys.tenant_id, uuid.UUID(template_id))
            variants = templates.variants_of(session, keys.tenant_id, template.id)
        except (CarepostError, ValueError):
            template = None
    return {"count": count, "faults": faults, "stored": template, "variants": variants}


def _form_page(
    console: Console,
    form: BoundForm,
    *,
    campaign: Campaign | None = None,
    status: int = 200,
) -> Response:
    with console.session() as session:
        spec = _form_spec(session, console.principal.tenant_id)
        bound = BoundForm(spec, form.values, form.errors, form.summary)
        summary = _summary(session, console, bound)
    return console.render(
        "campaigns/form.html",
        status=status,
        title="Edit campaign" if campaign else "New campaign",
        form=bound,
        campaign=campaign,
        **summary,
    )


@router.get("/campaigns/new")
def new_campaign(console: Annotated[Console, Depends(page(SEND))]) -> Response:
    form = FORM.bind(None, purpose="marketing", ab_test=["yes"])
    return _form_page(console, form)


@router.post("/campaigns/summary")
def campaign_summary(
    console: Annotated[Console, Depends(page(SEND))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    """The live part of the form (HTMX): the audience's count and the A/B variants."""
    with console.session() as session:
        summary = _summary(session, console, FORM.bind(data))
    return console.render("campaigns/_summary.html", **summary)


def _after_save(console: Console, campaign_id: uuid.UUID, form: BoundForm, action: str) -> str:
    """Schedule or start the saved campaign when the person asked to; the notice to show."""
    if action not in ("schedule", "now"):
        return ""
    send_at = _send_at(form) if action == "schedule" else None
    with console.session() as session:
        service.schedule_campaign(
            session, console.principal.keys, campaign_id, send_at, actor=console.principal.actor
        )
    return "scheduled"


@router.post("/campaigns")
def create_campaign(
    console: Annotated[Console, Depends(page(SEND))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = FORM.bind(data)
    action = str(data.get("action") or "draft")
    try:
        form.validate()
        if action == "schedule":
            _send_at(form)  # before anything is saved
        try:
            body = CampaignIn.model_validate(_values(form))
        except ValidationError as exc:
            raise _pydantic_failure(exc) from None
        with console.session() as session:
            campaign = service.create_campaign(
                session, console.principal.keys, body, actor=console.principal.actor
            )
            campaign_id = campaign.id
        done = _after_save(console, campaign_id, form, action) or "created"
    except CarepostError as exc:
        form.failed(exc)
        return _form_page(console, form, status=exc.status)
    return redirect(console.request, f"/campaigns/{campaign_id}?done={done}")


def _bind_campaign(campaign: Campaign) -> BoundForm:
    audience = (
        f"list:{campaign.list_id}"
        if campaign.list_id
        else f"segment:{campaign.segment_id}"
        if campaign.segment_id
        else ""
    )
    return FORM.bind(
        None,
        name=campaign.name,
        audience=audience,
        template_id=str(campaign.template_id or ""),
        subject=campaign.subject or "",
        html=campaign.html or "",
        text=campaign.text_body or "",
        **{"from": campaign.from_address},
        from_name=campaign.from_name or "",
        reply_to=campaign.reply_to or "",
        purpose=campaign.purpose,
        throttle_per_hour=str(campaign.throttle_per_hour or ""),
        ab_test=["yes"] if campaign.ab_metric else [],
        ab_metric=campaign.ab_metric or "",
        ab_window_hours=str(campaign.ab_window_hours or ""),
        send_at=campaign.scheduled_at.strftime("%Y-%m-%dT%H:%M") if campaign.scheduled_at else "",
    )


@router.get("/campaigns/{campaign_id}/edit")
def edit_campaign(campaign_id: str, console: Annotated[Console, Depends(page(SEND))]) -> Response:
    with console.session() as session:
        campaign = service.get_campaign(session, console.principal.tenant_id, parse_id(campaign_id))
        form = _bind_campaign(campaign)
    return _form_page(console, form, campaign=campaign)


@router.post("/campaigns/{campaign_id}")
def update_campaign(
    campaign_id: str,
    console: Annotated[Console, Depends(page(SEND))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    the_id = parse_id(campaign_id)
    with console.session() as session:
        campaign = service.get_campaign(session, console.principal.tenant_id, the_id)
    form = FORM.bind(data)
    action = str(data.get("action") or "draft")
    try:
        form.validate()
        if action == "schedule":
            _send_at(form)
        try:
            changes = CampaignUpdate.model_validate(_values(form))
        except ValidationError as exc:
            raise _pydantic_failure(exc) from None
        with console.session() as session:
            service.update_campaign(
                session, console.principal.keys, the_id, changes, actor=console.principal.actor
            )
        done = _after_save(console, the_id, form, action) or "saved"
    except CarepostError as exc:
        form.failed(exc)
        return _form_page(console, form, campaign=campaign, status=exc.status)
    return redirect(console.request, f"/campaigns/{the_id}?done={done}")


# --- the campaign's page -----------------------------------------------------------------


def _progress(campaign: Campaign, counts: dict[str, int]) -> tuple[int, int]:
    """(messages that reached a final state, the audience)."""
    finished = sum(n for state, n in counts.items() if state in FINAL_STATES)
    return finished + campaign.skipped, max(campaign.audience, finished + campaign.skipped)


# While a campaign is scheduled or sending, its progress panel reloads itself this often.
PROGRESS_POLL_SECONDS = 5
LIVE_STATES = (CampaignState.SCHEDULED, CampaignState.SENDING)


def _detail(console: Console, campaign_id: str, **extra: Any) -> dict[str, Any]:
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        campaign = service.get_campaign(session, tenant_id, parse_id(campaign_id))
        counts = service.state_counts(session, campaign.id)
        names = _audience_names(session, tenant_id)
        template = None
        if campaign.template_id is not None:
            try:
                template = templates.get_template(session, tenant_id, campaign.template_id)
            except CarepostError:
                template = None
        done, total = _progress(campaign, counts)
    return {
        "title": campaign.name,
        "campaign": campaign,
        "counts": [(s, counts.get(s, 0)) for s in STATE_ORDER if counts.get(s)],
        "audience_label": _audience_label(campaign, names),
        "stored": template,
        "done": done,
        "total": total,
        "can_schedule": campaign.state in (CampaignState.DRAFT, CampaignState.SCHEDULED),
        "can_pause": campaign.state in (CampaignState.SCHEDULED, CampaignState.SENDING),
        "can_resume": campaign.state == CampaignState.PAUSED,
        "can_cancel": campaign.state not in (CampaignState.CANCELLED, CampaignState.DONE),
        "poll": f"every {PROGRESS_POLL_SECONDS}s" if campaign.state in LIVE_STATES else "",
        "poll_seconds": PROGRESS_POLL_SECONDS,
        **extra,
    }


@router.get("/campaigns/{campaign_id}")
def campaign_page(campaign_id: str, console: Annotated[Console, Depends(page(READ))]) -> Response:
    return console.render(
        "campaigns/detail.html",
        notice=notice_for(console.request, NOTICES),
        **_detail(console, campaign_id),
    )


@router.get("/campaigns/{campaign_id}/progress")
def campaign_progress(
    campaign_id: str,
    console: Annotated[Console, Depends(page(READ))],
    shown: str | None = None,
) -> Response:
    """The progress panel alone, polled by the campaign's page while the campaign runs.
    ``shown`` is the state the page was drawn in: once the campaign has moved on (done,
    paused, cancelled), the page is reloaded whole (``HX-Refresh``) so its status and
    buttons follow, and the reloaded page no longer polls."""
    detail = _detail(console, campaign_id)
    response = console.render("campaigns/_progress.html", **detail)
    if shown is not None and shown != detail["campaign"].state:
        response.headers["HX-Refresh"] = "true"
    return response


@router.post("/campaigns/{campaign_id}/schedule")
def schedule_campaign(
    campaign_id: str,
    console: Annotated[Console, Depends(page(SEND))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    """Schedule at ``send_at`` (UTC), or now when it is left out (the Send now button)."""
    the_id = parse_id(campaign_id)
    form = FORM.bind(data)
    try:
        send_at = _send_at(form) if form.value("send_at").strip() else None
        with console.session() as session:
            service.schedule_campaign(
                session, console.principal.keys, the_id, send_at, actor=console.principal.actor
            )
    except CarepostError as exc:
        form.failed(exc)
        message = exc.detail if not form.errors else next(iter(form.errors.values()))
        return console.render(
            "campaigns/detail.html",
            status=exc.status,
            error=message,
            **_detail(console, campaign_id),
        )
    return redirect(console.request, f"/campaigns/{the_id}?done=scheduled")


def _add_transition(action: str, done: str) -> None:
    """``POST /campaigns/{id}/<action>``: pause, resume or cancel, as the API does."""
    change = getattr(service, f"{action}_campaign")

    def route(campaign_id: str, console: Annotated[Console, Depends(page(SEND))]) -> Response:
        the_id = parse_id(campaign_id)
        try:
            with console.session() as session:
                change(session, console.principal.keys, the_id, actor=console.principal.actor)
        except CarepostError as exc:
            if exc.status >= 500 or exc.status in (403, 404):
                raise
            return console.render(
                "campaigns/detail.html",
                status=exc.status,
                error=exc.detail,
                **_detail(console, campaign_id),
            )
        return redirect(console.request, f"/campaigns/{the_id}?done={done}")

    route.__name__ = f"{action}_campaign_page"
    router.add_api_route(f"/campaigns/{{campaign_id}}/{action}", route, methods=["POST"])


_add_transition("pause", "paused")
_add_transition("resume", "resumed")
_add_transition("cancel", "cancelled")
