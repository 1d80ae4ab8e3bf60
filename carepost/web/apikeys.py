"""API keys: list (prefix, scopes, last use — never secrets), create with scopes (the
secret is shown once, in the answer to the create request), revoke via HTMX.

A person can only grant scopes their own role holds; the scope checkboxes offer
exactly those, and the service refuses anything else.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.accounts import apikeys
from carepost.accounts.models import ApiKey
from carepost.accounts.permissions import PERMISSIONS
from carepost.core.database import utcnow
from carepost.core.errors import CarepostError
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for, row_response

router = APIRouter(include_in_schema=False)

NOTICES = {"revoked": "The API key was revoked. Requests using it are now refused."}

CREATE_FORM = FormSpec(
    id="apikey",
    submit="Create API key",
    fields=(
        Field(
            "name",
            "Name",
            hint="What uses this key, for example “EHR sync (production)”.",
            required=True,
            attrs={"maxlength": "200"},
        ),
        Field(
            "scopes",
            "Scopes",
            "checkboxes",
            hint="Grant only what the integration needs. You can grant scopes your role has.",
            required=True,
        ),
    ),
)


def key_status(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= utcnow():
        return "expired"
    return "active"


KEY_TABLE = Table(
    caption="API keys of your organization",
    id="apikey",
    row_id=lambda key: str(key.id),
    empty="No API keys yet.",
    columns=(
        Column("Name", lambda k: k.name),
        Column("Prefix", lambda k: f"cp_{k.prefix}_…", kind="code"),
        Column("Scopes", lambda k: k.scopes, kind="tags"),
        Column("Created", lambda k: k.created_at, kind="time"),
        Column("Last used", lambda k: k.last_used_at, kind="time"),
        Column("Status", key_status, kind="badge"),
        Column(
            "Actions",
            template="cells/apikey_actions.html",
            permission="apikeys:write",
            hidden_label=True,
        ),
    ),
)


def create_form(console: Console, data: FormData | None = None) -> BoundForm:
    choices = [
        Choice(name, name, description)
        for name, description in PERMISSIONS.items()
        if console.can(name)
    ]
    return CREATE_FORM.with_choices("scopes", choices).bind(data)


def _section(
    console: Console, *, form: BoundForm | None = None, created: tuple[ApiKey, str] | None = None
) -> dict[str, Any]:
    with console.session() as session:
        keys = apikeys.list_api_keys(session, console.principal.tenant_id)
    return {
        "title": "API keys",
        "table": KEY_TABLE,
        "rows": keys,
        "form": form or create_form(console),
        "created": created,
        "key_status": key_status,
    }


@router.get("/api-keys")
def keys_page(
    console: Annotated[Console, Depends(page("apikeys:read"))],
) -> Response:
    return console.render(
        "apikeys/list.html", notice=notice_for(console.request, NOTICES), **_section(console)
    )


@router.post("/api-keys")
def create_key(
    console: Annotated[Console, Depends(page("apikeys:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = create_form(console, data)
    template = "htmx/apikeys_section.html" if console.htmx else "apikeys/list.html"
    try:
        form.validate()
        with console.session() as session:
            key, secret = apikeys.create_api_key(
                session,
                tenant_id=console.principal.tenant_id,
                name=form.value("name"),
                scopes=form.selected("scopes"),
                creator_permissions=console.principal.permissions,
                actor=console.principal.actor,
                created_by=console.account.user_id,
            )
    except CarepostError as exc:
        form.failed(exc)
        return console.render(template, status=exc.status, **_section(console, form=form))
    return console.render(template, status=201, **_section(console, created=(key, secret)))


@router.post("/api-keys/{key_id}/revoke")
def revoke_key(
    key_id: str, console: Annotated[Console, Depends(page("apikeys:write"))]
) -> Response:
    with console.session() as session:
        key = apikeys.revoke_api_key(
            session,
            tenant_id=console.principal.tenant_id,
            key_id=parse_id(key_id),
            actor=console.principal.actor,
        )
    if console.htmx:
        return row_response(
            console, KEY_TABLE, key, f"Revoked the API key “{key.name}” (cp_{key.prefix}_…)."
        )
    return redirect(console.request, "/api-keys?done=revoked")
