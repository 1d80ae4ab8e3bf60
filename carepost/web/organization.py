"""Organization settings: name, session policy (idle minutes, absolute hours) and the
postal address marketing email must carry. Everyone with ``tenant:read`` sees them;
only ``tenant:write`` may change them (every change is audited by the service).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.core.errors import CarepostError, FieldError, ValidationFailed
from carepost.tenancy import service as tenancy
from carepost.tenancy.models import Tenant
from carepost.web.console import Console, form_data, page, redirect
from carepost.web.forms import BoundForm, Field, FormData, FormSpec
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)

NOTICES = {"saved": "Settings saved."}

SETTINGS_FORM = FormSpec(
    id="settings",
    submit="Save settings",
    fields=(
        Field("name", "Organization name", required=True, attrs={"maxlength": "200"}),
        Field(
            "session_idle_minutes",
            "Sign out after inactivity (minutes)",
            "number",
            hint="Between 1 and 1440. HIPAA expects automatic logoff; 15 to 30 minutes is usual.",
            required=True,
            attrs={"min": "1", "max": "1440", "inputmode": "numeric"},
        ),
        Field(
            "session_max_hours",
            "Maximum session length (hours)",
            "number",
            hint="Between 1 and 720. People sign in again after this, active or not.",
            required=True,
            attrs={"min": "1", "max": "720", "inputmode": "numeric"},
        ),
        Field(
            "physical_address",
            "Postal address",
            "textarea",
            hint="Shown in the footer of marketing email (CAN-SPAM).",
            autocomplete="street-address",
            attrs={"rows": "3", "maxlength": "500"},
        ),
    ),
)


def _bound(tenant: Tenant) -> BoundForm:
    return SETTINGS_FORM.bind(
        name=tenant.name,
        session_idle_minutes=str(tenant.session_idle_minutes),
        session_max_hours=str(tenant.session_max_hours),
        physical_address=tenant.physical_address,
    )


def _whole_number(form: BoundForm, name: str) -> int:
    value = form.value(name).strip()
    if not value:
        return 0  # reported as missing by form.validate()
    if not value.isdigit() or len(value) > 6:
        raise ValidationFailed("enter a whole number", field=name)
    return int(value)


def _page(console: Console, tenant: Tenant, form: BoundForm, *, status: int = 200) -> Response:
    return console.render(
        "settings.html",
        status=status,
        tenant=tenant,
        form=form,
        editable=console.can("tenant:write"),
        notice=notice_for(console.request, NOTICES),
        title="Organization settings",
    )


@router.get("/settings")
def settings_page(console: Annotated[Console, Depends(page("tenant:read"))]) -> Response:
    with console.session() as session:
        tenant = tenancy.get_tenant(session, console.principal.tenant_id)
    return _page(console, tenant, _bound(tenant))


@router.post("/settings")
def save_settings(
    console: Annotated[Console, Depends(page("tenant:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = SETTINGS_FORM.bind(data)
    try:
        errors: list[FieldError] = []
        numbers: dict[str, int] = {}
        for name in ("session_idle_minutes", "session_max_hours"):
            try:
                numbers[name] = _whole_number(form, name)
            except ValidationFailed as exc:
                errors.extend(exc.errors)
        form.validate(*errors)
        with console.session() as session:
            tenancy.update_tenant_settings(
                session,
                tenant_id=console.principal.tenant_id,
                actor=console.principal.actor,
                name=form.value("name"),
                physical_address=form.value("physical_address"),
                **numbers,
            )
    except CarepostError as exc:
        form.failed(exc)
        with console.session() as session:
            tenant = tenancy.get_tenant(session, console.principal.tenant_id)
        return _page(console, tenant, form, status=exc.status)
    return redirect(console.request, "/settings?done=saved")
