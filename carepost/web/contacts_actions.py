"""Changes made from a contact's page: record a consent, add to or remove from a list,
change the journey stage.

Each is a form post (CSRF-checked) calling the same services as the API. With HTMX the
answer is the page section that changed, re-read from the database, with a notice;
without it, the browser is sent back to the contact page. Form errors come back next
to their field, in the section (HTMX swaps 4xx answers) or in the whole page.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.consent import service as consent
from carepost.contacts import lists, service, stages
from carepost.core.errors import CarepostError, NotFound, ValidationFailed
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.contacts_detail import ContactProfile, load_profile, render_profile
from carepost.web.contacts_forms import consent_form_for, list_form_for, stage_form_for
from carepost.web.forms import BoundForm, FormData
from carepost.web.views import notice_header

router = APIRouter(include_in_schema=False)


def _captured_at(form: BoundForm) -> datetime | None:
    raw = form.value("captured_at").strip()
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed("enter a date and time", field="captured_at") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _section(
    console: Console,
    template: str,
    profile: ContactProfile,
    *,
    status: int = 200,
    message: str = "",
    consent_form: BoundForm | None = None,
    list_form: BoundForm | None = None,
    stage_form: BoundForm | None = None,
) -> Response:
    return console.render(
        template,
        status=status,
        headers=notice_header(message) if message else None,
        p=profile,
        consent_form=consent_form or consent_form_for(profile),
        list_form=list_form or list_form_for(profile),
        stage_form=stage_form or stage_form_for(profile),
    )


def _form_error(
    console: Console,
    template: str,
    profile: ContactProfile,
    status: int,
    *,
    consent_form: BoundForm | None = None,
    list_form: BoundForm | None = None,
    stage_form: BoundForm | None = None,
) -> Response:
    """A form that failed, shown with its errors: in its section for HTMX, else the page."""
    if console.htmx:
        return _section(
            console,
            template,
            profile,
            status=status,
            consent_form=consent_form,
            list_form=list_form,
            stage_form=stage_form,
        )
    return render_profile(
        console,
        profile,
        status=status,
        consent_form=consent_form,
        list_form=list_form,
        stage_form=stage_form,
    )


@router.post("/contacts/{contact_id}/consents")
def record_consent(
    contact_id: str,
    console: Annotated[Console, Depends(page("consent:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    console.principal.require("contacts:read")
    profile = load_profile(console, parse_id(contact_id))
    form = consent_form_for(profile, data)
    try:
        form.validate()
        change = consent.ConsentChange(
            channel=form.value("channel"),
            purpose=form.value("purpose"),
            status=form.value("status"),
            source=form.value("source"),
            evidence=form.value("evidence").strip() or None,
            captured_at=_captured_at(form),
        )
        with console.session() as session:
            record = consent.record_consent(
                session,
                console.principal.tenant_id,
                contact_id=profile.contact.id,
                change=change,
                actor=console.principal.actor,
            )
    except CarepostError as exc:
        form.failed(exc)
        return _form_error(
            console, "contacts/_consent.html", profile, exc.status, consent_form=form
        )
    if not console.htmx:
        return redirect(console.request, f"/contacts/{profile.contact.id}?done=consent#consent")
    message = f"Recorded: {record.channel} {record.purpose} {record.status}."
    return _section(
        console,
        "contacts/_consent.html",
        load_profile(console, profile.contact.id),
        message=message,
    )


def _membership_answer(
    console: Console, contact_id: uuid.UUID, message: str, done: str
) -> Response:
    if not console.htmx:
        return redirect(console.request, f"/contacts/{contact_id}?done={done}#lists")
    return _section(
        console, "contacts/_lists.html", load_profile(console, contact_id), message=message
    )


@router.post("/contacts/{contact_id}/lists")
def add_to_list(
    contact_id: str,
    console: Annotated[Console, Depends(page("contacts:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    profile = load_profile(console, parse_id(contact_id))
    form = list_form_for(profile, data)
    try:
        form.validate()
        list_id = parse_id(form.value("list_id"))
        with console.session() as session:
            contact_list = lists.get_list(session, console.principal.tenant_id, list_id)
            lists.change_members(
                session,
                console.principal.tenant_id,
                contact_list.id,
                add=[profile.contact.id],
                remove=[],
                actor=console.principal.actor,
            )
            name = contact_list.name
    except NotFound:
        form.add_error("list_id", "choose one of your lists")
        return _membership_error(console, profile, form, 422)
    except CarepostError as exc:
        form.failed(exc)
        return _membership_error(console, profile, form, exc.status)
    return _membership_answer(console, profile.contact.id, f"Added to “{name}”.", "list-added")


def _membership_error(
    console: Console, profile: ContactProfile, form: BoundForm, status: int
) -> Response:
    return _form_error(console, "contacts/_lists.html", profile, status, list_form=form)


@router.post("/contacts/{contact_id}/lists/{list_id}/remove")
def remove_from_list(
    contact_id: str,
    list_id: str,
    console: Annotated[Console, Depends(page("contacts:write"))],
) -> Response:
    tenant_id = console.principal.tenant_id
    with console.session() as session:
        contact = service.get_contact(session, tenant_id, parse_id(contact_id), with_phi=False)
        contact_list = lists.get_list(session, tenant_id, parse_id(list_id))
        lists.change_members(
            session,
            tenant_id,
            contact_list.id,
            add=[],
            remove=[contact.id],
            actor=console.principal.actor,
        )
        name = contact_list.name
    return _membership_answer(console, contact.id, f"Removed from “{name}”.", "list-removed")


@router.post("/contacts/{contact_id}/stage")
def change_stage(
    contact_id: str,
    console: Annotated[Console, Depends(page("contacts:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    profile = load_profile(console, parse_id(contact_id))
    form = stage_form_for(profile, data)
    try:
        form.validate()
        with console.session() as session:
            _contact, previous = stages.change_stage(
                session,
                console.principal.tenant_id,
                profile.contact.id,
                form.value("stage"),
                actor=console.principal.actor,
            )
    except CarepostError as exc:
        form.failed(exc)
        return _form_error(console, "contacts/_stage.html", profile, exc.status, stage_form=form)
    if not console.htmx:
        return redirect(console.request, f"/contacts/{profile.contact.id}?done=stage#stage")
    stage = form.value("stage")
    message = f"Stage changed to {stage}." if previous else f"The stage is already {stage}."
    return _section(
        console, "contacts/_stage.html", load_profile(console, profile.contact.id), message=message
    )
