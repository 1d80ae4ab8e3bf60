"""Journey stages in the console: the built-in stages and the organization's own, each
with how many contacts are in it now, and a form to define a stage (HTMX: the section is
swapped in place; without script, a post and a redirect).

The same service as ``/api/v1/journey-stages`` (:mod:`carepost.contacts.stages`) decides
what is allowed: a key is a lower-case slug, unique in the organization, and never
changes; built-in stages never change. A contact's stage is changed on its own page.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.contacts import stages
from carepost.core.errors import CarepostError
from carepost.web.console import Console, form_data, page, redirect
from carepost.web.forms import BoundForm, Field, FormData, FormSpec
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for, notice_header

router = APIRouter(include_in_schema=False)

NOTICES = {"created": "Stage created."}

STAGE_FORM = FormSpec(
    id="stage",
    submit="Add stage",
    fields=(
        Field(
            "label",
            "Label",
            required=True,
            hint="What people see, e.g. “After surgery”.",
            attrs={"maxlength": str(stages.MAX_LABEL_LENGTH)},
        ),
        Field(
            "key",
            "Key",
            required=True,
            hint="How contacts, the API, imports, segments and workflows name it: lower-case "
            "letters and digits, words joined by - or _, e.g. post-op. It cannot change later.",
            attrs={
                "maxlength": str(stages.MAX_KEY_LENGTH),
                "spellcheck": "false",
                "autocapitalize": "none",
                "pattern": "[a-z][a-z0-9]*([\\-_][a-z0-9]+)*",
            },
        ),
    ),
)


def _contacts_in(stage: stages.Stage) -> str:
    return "/contacts?" + urlencode({"stage": stage.key})


STAGE_TABLE = Table(
    caption="Journey stages",
    id="stage",
    row_id=lambda s: s.key,
    empty="No stages.",
    extra={"cards": True},
    columns=(
        Column("Label", lambda s: s.label),
        Column("Key", lambda s: s.key, kind="code"),
        Column("Kind", lambda s: "built in" if s.built_in else "your own"),
        Column("Contacts", lambda s: s.contact_count, kind="number", link=_contacts_in),
        Column("Defined", lambda s: s.created_at if not s.built_in else "—"),
    ),
)


def _render(
    console: Console,
    template: str,
    *,
    form: BoundForm | None = None,
    status: int = 200,
    message: str = "",
    adding: bool = False,
) -> Response:
    with console.session() as session:
        rows = stages.list_stages(session, console.principal.tenant_id)
    return console.render(
        template,
        status=status,
        headers=notice_header(message) if message else None,
        title="Journey stages",
        table=STAGE_TABLE,
        rows=rows,
        form=form or STAGE_FORM.bind(),
        adding=adding,
        notice=notice_for(console.request, NOTICES),
    )


@router.get("/journey-stages")
def stages_page(console: Annotated[Console, Depends(page("contacts:read"))]) -> Response:
    return _render(console, "contacts/stages.html")


@router.post("/journey-stages")
def create_stage(
    console: Annotated[Console, Depends(page("contacts:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = STAGE_FORM.bind(data)
    # HTMX swaps the section; a plain post gets the whole page (errors) or a redirect.
    template = "contacts/_stages.html" if console.htmx else "contacts/stages.html"
    try:
        form.validate()
        with console.session() as session:
            row = stages.define_stage(
                session,
                console.principal.tenant_id,
                key=form.value("key").strip(),
                label=form.value("label"),
                actor=console.principal.actor,
            )
            label = row.label
    except CarepostError as exc:
        form.failed(exc)
        return _render(console, template, form=form, status=exc.status)
    if console.htmx:
        return _render(console, template, message=f"Stage “{label}” created.", adding=True)
    return redirect(console.request, "/journey-stages?done=created")
