"""One contact's page: identity, custom fields, identifiers, journey stage and its history,
list memberships, consent per channel and purpose, suppression state and the timeline.

The page opens with every PHI value masked, for everybody. A person holding
``phi:read`` presses "Reveal": that is a POST (CSRF-checked, never a link a crawler
or a prefetch could follow) which answers the same page with identity, custom field
values, external ids, consent evidence and event properties shown, and records one
``contact.view_phi`` event (``via=console``) in the same transaction as the read, so
a view that cannot be audited is not shown. With HTMX the reveal swaps the page body
in place (``hx-select``); without it the browser shows the answer as a page.

The timeline is paged newest first by an opaque cursor; "Load more" fetches the next
entries with HTMX (or follows a link without it). For a person who may read workflows
it merges the contact's events with the workflow steps the contact took (each step
entered, from ``workflow_run_steps``), ordered by time (at one instant, events first);
the cursor names the last entry's instant, id and source (``e.`` or ``w.``).
Encrypted event properties are shown only on a revealed page, and each page that
shows any is audited
(``via=events``), as the API does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session

from carepost.consent import service as consent
from carepost.consent import suppression
from carepost.consent.decision import Channel
from carepost.consent.models import ConsentCurrent, ConsentRecord
from carepost.contacts import custom_fields, events, lists, service, stages, sync
from carepost.contacts.lists import Membership
from carepost.contacts.models import Contact, ContactStageHistory, CustomField
from carepost.core.database import utcnow
from carepost.core.errors import ValidationFailed
from carepost.web.console import Console, page, parse_id, templates
from carepost.web.contacts_forms import (
    consent_form_for,
    list_form_for,
    purpose_label,
    stage_form_for,
)
from carepost.web.forms import BoundForm, Choice
from carepost.web.tables import MASK
from carepost.web.workflows_builder import label_of
from carepost.workflows import console_queries as workflow_queries
from carepost.workflows.console_queries import StepTaken

router = APIRouter(include_in_schema=False)
templates.env.globals["MASK"] = MASK
templates.env.filters["purpose"] = purpose_label
templates.env.globals["step_label"] = label_of

TIMELINE_PAGE = 25
PHI_PERMISSION = "phi:read"
NOTICES = {
    "consent": "Consent recorded.",
    "list-added": "Added to the list.",
    "list-removed": "Removed from the list.",
    "stage": "Journey stage changed.",
}


@dataclass
class Timeline:
    entries: list[events.TimelineEntry | StepTaken]
    more_url: str | None
    show: str = "all"


# What the timeline shows (``?show=``): both sources, or one of them.
TIMELINE_SHOWS = {"all": "Everything", "events": "Events", "steps": "Workflow steps"}
templates.env.globals["timeline_shows"] = TIMELINE_SHOWS


def timeline_show(console: Console) -> str:
    """The ``show`` of the page's query; a value it does not know is refused."""
    show = console.request.query_params.get("show") or "all"
    if show not in TIMELINE_SHOWS:
        raise ValidationFailed(
            f"the timeline shows {', '.join(TIMELINE_SHOWS)}, not {show[:40]!r}", field="show"
        )
    return show


def _when(entry: events.TimelineEntry | StepTaken) -> datetime:
    return entry.entered_at if isinstance(entry, StepTaken) else entry.occurred_at


def _order(entry: events.TimelineEntry | StepTaken) -> tuple[datetime, int, int]:
    """Newest first; at one instant events before steps, then by id."""
    return (_when(entry), 0 if isinstance(entry, StepTaken) else 1, entry.id)


def encode_cursor(entry: events.TimelineEntry | StepTaken) -> str:
    tag = "w" if isinstance(entry, StepTaken) else "e"
    return f"{tag}.{events.encode_event_cursor(_when(entry), entry.id)}"


def decode_cursor(text: str | None) -> tuple[datetime, int, bool] | None:
    """(instant, id, whether the entry was a workflow step); a bare event cursor too."""
    if not text:
        return None
    tag, dot, rest = text.partition(".")
    if not dot:
        tag, rest = "e", text
    if tag not in ("e", "w"):
        raise ValidationFailed("the cursor is not valid", field="#/query/cursor")
    decoded = events.decode_event_cursor(rest)
    assert decoded is not None
    return decoded[0], decoded[1], tag == "w"


@dataclass
class ContactProfile:
    """Everything the contact page shows, read in one unit of work."""

    contact: Contact
    revealed: bool
    fields: list[CustomField]
    custom: dict[str, Any]
    identifiers: dict[str, str]
    stage_history: list[ContactStageHistory]
    memberships: list[Membership]
    list_options: list[Choice]
    consent_current: list[ConsentCurrent] = field(default_factory=list)
    consent_history: list[ConsentRecord] = field(default_factory=list)
    purposes: tuple[str, ...] = ()
    suppressions: list[suppression.ContactSuppression] = field(default_factory=list)
    timeline: Timeline | None = None
    stage_options: list[Choice] = field(default_factory=list)

    @property
    def name(self) -> str:
        if not self.revealed:
            return MASK
        parts = (self.contact.first_name, self.contact.last_name)
        return " ".join(p for p in parts if p) or "—"

    def consent_grid(self) -> list[tuple[str, list[tuple[str, ConsentCurrent | None]]]]:
        """(purpose, [(channel, current row or None)]) for every purpose and channel."""
        current = {(row.purpose, row.channel): row for row in self.consent_current}
        return [
            (purpose, [(str(channel), current.get((purpose, channel))) for channel in Channel])
            for purpose in self.purposes
        ]

    def consent_status(self, row: ConsentCurrent | None) -> str:
        if row is None:
            return "not recorded"
        if row.expires_at is not None and row.expires_at <= utcnow():
            return "expired"
        return row.status


def timeline_url(contact_id: uuid.UUID, cursor: str, *, revealed: bool, show: str = "all") -> str:
    query = {
        "before": cursor,
        **({"phi": "1"} if revealed else {}),
        **({"show": show} if show != "all" else {}),
    }
    return f"/contacts/{contact_id}/timeline?" + urlencode(query)


def read_timeline(
    session: Session,
    console: Console,
    contact: Contact,
    *,
    cursor: str | None,
    revealed: bool,
    audit: bool = True,
    show: str = "all",
) -> Timeline:
    """One page of the timeline; encrypted properties only on a revealed page (audited).
    ``show``: "all", "events" (engagement and custom events) or "steps" (the workflow
    steps taken)."""
    with_properties = revealed and console.can(PHI_PERMISSION)
    before = decode_cursor(cursor)
    # After a step's cursor, the events of its instant were shown already (events first).
    event_before = None if before is None else (before[0], -1 if before[2] else before[1])
    entries: list[events.TimelineEntry | StepTaken] = []
    if show != "steps":
        entries += events.contact_timeline(
            session,
            console.principal.tenant_id,
            contact.id,
            kind=None,
            before=event_before,
            limit=TIMELINE_PAGE + 1,
            with_properties=with_properties,
        )
    if show != "events" and console.can("workflows:read"):
        entries += workflow_queries.contact_steps(
            session, console.principal.tenant_id, contact.id, before=before, limit=TIMELINE_PAGE + 1
        )
        entries.sort(key=_order, reverse=True)
    more = len(entries) > TIMELINE_PAGE
    entries = entries[:TIMELINE_PAGE]
    if (
        audit
        and with_properties
        and any(isinstance(entry, events.TimelineEntry) and entry.sealed for entry in entries)
    ):
        service.record_phi_view(
            session,
            tenant_id=console.principal.tenant_id,
            actor=console.principal.actor,
            contacts=[contact],
            via="events",
        )
    more_url = None
    if more:
        more_url = timeline_url(
            contact.id, encode_cursor(entries[-1]), revealed=with_properties, show=show
        )
    return Timeline(entries, more_url, show)


def load_profile(
    console: Console, contact_id: uuid.UUID, *, revealed: bool = False, show: str = "all"
) -> ContactProfile:
    """The contact page's data; a reveal is audited in the same transaction as the read.
    ``show``: what the timeline shows (:data:`TIMELINE_SHOWS`)."""
    tenant_id = console.principal.tenant_id
    revealed = revealed and console.can(PHI_PERMISSION)
    with console.session() as session:
        contact = service.get_contact(session, tenant_id, contact_id, with_phi=revealed)
        schema = custom_fields.list_fields(session, tenant_id)
        known = {row.key for row in schema}
        custom: dict[str, Any] = {}
        identifiers: dict[str, str] = {}
        if revealed:
            custom = {k: v for k, v in (contact.custom or {}).items() if k in known}
            identifiers = sync.identifiers_of(session, tenant_id, [contact.id]).get(contact.id, {})
            service.record_phi_view(
                session,
                tenant_id=tenant_id,
                actor=console.principal.actor,
                contacts=[contact],
                via="console",
            )
        memberships = lists.memberships_of(session, tenant_id, contact.id)
        current = {m.list_id for m in memberships if m.current}
        profile = ContactProfile(
            contact=contact,
            revealed=revealed,
            fields=schema,
            custom=custom,
            identifiers=identifiers,
            stage_history=list(reversed(stages.stage_history(session, tenant_id, contact.id))),
            memberships=memberships,
            list_options=[
                Choice(str(row.id), row.name)
                for row in sorted(
                    lists.list_lists(session, tenant_id, after=None, limit=500),
                    key=lambda r: r.name.lower(),
                )
                if row.id not in current
            ],
        )
        profile.stage_options = [
            Choice(key, label) for key, label in stages.stage_choices(session, tenant_id)
        ]
        if console.can("consent:read"):
            profile.consent_current = consent.current_rows(session, tenant_id, contact.id)
            profile.consent_history = consent.consent_history(
                session, tenant_id, contact.id, limit=200
            )
            profile.purposes = consent.purposes(session, tenant_id)
        if console.can("suppressions:read"):
            profile.suppressions = suppression.suppressions_of_contact(
                session, tenant_id, contact.id
            )
        # A revealed page is one disclosure, recorded once above: the timeline's own
        # audit (via=events) would repeat it.
        profile.timeline = read_timeline(
            session,
            console,
            contact,
            cursor=None,
            revealed=revealed,
            audit=not revealed,
            show=show,
        )
    return profile


def render_profile(
    console: Console,
    profile: ContactProfile,
    *,
    status: int = 200,
    consent_form: BoundForm | None = None,
    list_form: BoundForm | None = None,
    stage_form: BoundForm | None = None,
    notice: str = "",
) -> Response:
    return console.render(
        "contacts/detail.html",
        status=status,
        title=f"Contact {str(profile.contact.id)[:8]}",
        p=profile,
        consent_form=consent_form or consent_form_for(profile),
        list_form=list_form or list_form_for(profile),
        stage_form=stage_form or stage_form_for(profile),
        notice=notice or NOTICES.get(console.request.query_params.get("done", ""), ""),
    )


@router.get("/contacts/{contact_id}")
def contact_page(
    contact_id: str, console: Annotated[Console, Depends(page("contacts:read"))]
) -> Response:
    the_id = parse_id(contact_id)
    return render_profile(console, load_profile(console, the_id, show=timeline_show(console)))


@router.post("/contacts/{contact_id}/reveal")
def reveal_contact(
    contact_id: str, console: Annotated[Console, Depends(page(PHI_PERMISSION))]
) -> Response:
    console.principal.require("contacts:read")
    # The page itself says that PHI is shown and that the view is audited.
    return render_profile(console, load_profile(console, parse_id(contact_id), revealed=True))


@router.get("/contacts/{contact_id}/timeline")
def contact_timeline(
    contact_id: str, console: Annotated[Console, Depends(page("contacts:read"))]
) -> Response:
    params = console.request.query_params
    revealed = params.get("phi") == "1" and console.can(PHI_PERMISSION)
    show = timeline_show(console)
    with console.session() as session:
        contact = service.get_contact(
            session, console.principal.tenant_id, parse_id(contact_id), with_phi=False
        )
        try:
            timeline = read_timeline(
                session,
                console,
                contact,
                cursor=params.get("before"),
                revealed=revealed,
                show=show,
            )
        except ValidationFailed:
            raise ValidationFailed("the page link is not valid: reload the contact") from None
    context: dict[str, Any] = {"contact": contact, "timeline": timeline, "revealed": revealed}
    if console.htmx:
        return console.render("contacts/_timeline_items.html", **context)
    return console.render(
        "contacts/timeline.html", title=f"Timeline of contact {str(contact.id)[:8]}", **context
    )


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
