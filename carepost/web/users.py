"""Users and roles: list, invite (one-time password shown once), change role and status,
reset a lost second factor, sign a user out everywhere.

Row actions answer HTMX with the updated table row and a notice; without JavaScript
the same forms post normally and come back to the page. Nobody changes their own
role or status, and nobody manages a role above their own (``may_grant``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.accounts import service as accounts
from carepost.accounts.models import User
from carepost.accounts.permissions import ROLE_PERMISSIONS, Role, may_grant
from carepost.accounts.sessions import revoke_user_sessions
from carepost.audit import service as audit
from carepost.core.errors import CarepostError, PermissionDenied
from carepost.web.console import Console, form_data, page, parse_id, redirect, sentence
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec
from carepost.web.tables import Column, Table
from carepost.web.views import alert_response, notice_for, row_response

router = APIRouter(include_in_schema=False)

ROLE_DESCRIPTIONS = {
    Role.OWNER: "Everything, including encryption key rotation.",
    Role.ADMIN: "Manages users, API keys, settings; reads the audit trail.",
    Role.MARKETER: "Contacts, PHI, campaigns and sends.",
    Role.ANALYST: "Aggregate reports; contacts without PHI.",
    Role.AUDITOR: "Reads the audit trail, users and keys; sends nothing.",
}
STATUS_CHOICES = (Choice("active", "Active"), Choice("disabled", "Disabled"))
NOTICES = {
    "updated": "Changes saved.",
    "mfa-reset": "Two-factor sign-in was reset. The user sets it up again at next sign-in.",
    "signed-out": "The user was signed out everywhere.",
}

INVITE_FORM = FormSpec(
    id="invite",
    submit="Invite user",
    fields=(
        Field(
            "email",
            "Email address",
            "email",
            required=True,
            autocomplete="off",
            attrs={"maxlength": "320", "spellcheck": "false"},
        ),
        Field("name", "Name", attrs={"maxlength": "200"}),
        Field("role", "Role", "select", required=True),
    ),
)

ACCESS_FORM = FormSpec(
    id="access",
    submit="Save changes",
    fields=(
        Field("role", "Role", "select", required=True),
        Field("status", "Status", "select", required=True, choices=STATUS_CHOICES),
    ),
)

USER_TABLE = Table(
    caption="Users of your organization",
    id="user",
    row_id=lambda user: str(user.id),
    empty="No users yet.",
    columns=(
        Column("User", template="cells/user.html"),
        Column("Role and status", template="cells/user_access.html"),
        Column("Last sign-in", lambda u: u.last_sign_in_at, kind="time"),
        Column(
            "Actions",
            template="cells/user_actions.html",
            permission="users:write",
            hidden_label=True,
        ),
    ),
)


def grantable_roles(console: Console) -> list[Choice]:
    role = console.account.role
    return [
        Choice(r.value, r.value.capitalize(), ROLE_DESCRIPTIONS[r])
        for r in Role
        if may_grant(role, r)
    ]


def manageable(console: Console, user: User) -> bool:
    """May this person change ``user`` from the console?"""
    return (
        console.can("users:write")
        and user.id != console.account.user_id
        and may_grant(console.account.role, user.role)
    )


def invite_form(console: Console, data: FormData | None = None) -> BoundForm:
    spec = INVITE_FORM.with_choices("role", grantable_roles(console))
    return spec.bind(data, role=Role.MARKETER.value)


def _section(
    console: Console,
    *,
    form: BoundForm | None = None,
    invited: tuple[User, str] | None = None,
) -> dict[str, Any]:
    with console.session() as session:
        users = accounts.list_users(session, console.principal.tenant_id)
    return {
        "title": "Users and roles",
        "table": USER_TABLE,
        "rows": users,
        "form": form or invite_form(console),
        "invited": invited,
        "roles": [(r, ROLE_DESCRIPTIONS[r], sorted(ROLE_PERMISSIONS[r])) for r in Role],
        "grantable": grantable_roles(console),
        "statuses": STATUS_CHOICES,
        "manageable": lambda user: manageable(console, user),
    }


@router.get("/users")
def users_page(
    console: Annotated[Console, Depends(page("users:read"))],
) -> Response:
    notice = notice_for(console.request, NOTICES)
    return console.render("users/list.html", notice=notice, **_section(console))


@router.post("/users")
def invite_user(
    console: Annotated[Console, Depends(page("users:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = invite_form(console, data)
    template = "htmx/users_section.html" if console.htmx else "users/list.html"
    try:
        form.validate()
        with console.session() as session:
            user, one_time = accounts.create_user(
                session,
                tenant_id=console.principal.tenant_id,
                email=form.value("email"),
                role=form.value("role"),
                name=form.value("name"),
                actor=console.principal.actor,
                actor_role=console.account.role,
            )
    except CarepostError as exc:
        form.failed(exc)
        return console.render(template, status=exc.status, **_section(console, form=form))
    return console.render(
        template,
        status=201,
        **_section(console, invited=(user, one_time or "")),
    )


def _detail_page(
    console: Console, user: User, *, form: BoundForm | None = None, status: int = 200
) -> Response:
    spec = ACCESS_FORM.with_choices("role", grantable_roles(console))
    return console.render(
        "users/detail.html",
        status=status,
        user=user,
        title=user.email,
        notice=notice_for(console.request, NOTICES),
        may_manage=manageable(console, user),
        form=form or spec.bind(role=user.role, status=user.status),
    )


@router.get("/users/{user_id}")
def user_page(user_id: str, console: Annotated[Console, Depends(page("users:read"))]) -> Response:
    with console.session() as session:
        user = accounts.get_user(session, console.principal.tenant_id, parse_id(user_id))
    return _detail_page(console, user)


def _row_or_page(console: Console, user: User, message: str, done: str) -> Response:
    if console.htmx:
        return row_response(
            console,
            USER_TABLE,
            user,
            message,
            grantable=grantable_roles(console),
            statuses=STATUS_CHOICES,
            manageable=lambda u: manageable(console, u),
        )
    return redirect(console.request, f"/users/{user.id}?done={done}")


def _managed_user(console: Console, user_id: str) -> User:
    with console.session() as session:
        user = accounts.get_user(session, console.principal.tenant_id, parse_id(user_id))
    if user.id == console.account.user_id:
        raise PermissionDenied("you cannot change your own access here; ask another admin")
    return user


@router.post("/users/{user_id}")
def update_user(
    user_id: str,
    console: Annotated[Console, Depends(page("users:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    target = _managed_user(console, user_id)
    form = ACCESS_FORM.with_choices("role", grantable_roles(console)).bind(data)
    try:
        with console.session() as session:
            user = accounts.update_user(
                session,
                tenant_id=console.principal.tenant_id,
                user_id=target.id,
                actor=console.principal.actor,
                actor_role=console.account.role,
                role=form.value("role") or None,
                status=form.value("status") or None,
            )
    except CarepostError as exc:
        form.failed(exc)
        if console.htmx:
            message = (form.summary + list(form.errors.values()))[0]
            return alert_response(console, sentence(message), status=exc.status)
        return _detail_page(console, target, form=form, status=exc.status)
    message = f"Saved: {user.email} is now {user.role}, {user.status}."
    return _row_or_page(console, user, message, "updated")


@router.post("/users/{user_id}/reset-mfa")
def reset_mfa(user_id: str, console: Annotated[Console, Depends(page("users:write"))]) -> Response:
    target = _managed_user(console, user_id)
    with console.session() as session:
        user = accounts.reset_mfa(
            session,
            tenant_id=console.principal.tenant_id,
            user_id=target.id,
            actor=console.principal.actor,
            actor_role=console.account.role,
        )
    return _row_or_page(console, user, f"Two-factor sign-in reset for {user.email}.", "mfa-reset")


@router.post("/users/{user_id}/sign-out-everywhere")
def sign_out_user(
    user_id: str, console: Annotated[Console, Depends(page("users:write"))]
) -> Response:
    target = _managed_user(console, user_id)
    with console.session() as session:
        count = revoke_user_sessions(
            session, tenant_id=console.principal.tenant_id, user_id=target.id
        )
        audit.record(
            session,
            tenant_id=console.principal.tenant_id,
            actor=console.principal.actor,
            action="auth.sign_out_everywhere",
            object_type="user",
            object_id=target.id,
            details={"sessions": count},
        )
    sessions_word = "session" if count == 1 else "sessions"
    return _row_or_page(
        console,
        target,
        f"{target.email} was signed out ({count} {sessions_word} ended).",
        "signed-out",
    )
