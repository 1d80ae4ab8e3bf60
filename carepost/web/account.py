"""My account: profile, change password, two-factor status and new recovery codes, passkeys
(added, renamed and removed in :mod:`carepost.web.passkeys`), and the person's active
sessions (sign out the others, or everywhere).

Changing the password signs out every other session: whoever knew the old password
may already be signed in somewhere.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.accounts import service as accounts
from carepost.accounts import sessions, totp
from carepost.accounts import webauthn as passkeys
from carepost.audit import service as audit
from carepost.core.errors import CarepostError
from carepost.web.console import Console, form_data, page, redirect
from carepost.web.credentials import PASSWORD_FIELDS, check_confirmation, show_recovery_codes
from carepost.web.forms import BoundForm, FormData, FormSpec
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)

NOTICES = {
    "password": "Password changed. Your other sessions were signed out.",
    "signed-out-others": "Your other sessions were signed out.",
    "passkey-added": "Passkey added. You can use it to sign in.",
    "passkey-renamed": "Passkey renamed.",
    "passkey-removed": "Passkey removed. It no longer signs you in.",
}
ACCOUNT_PASSWORD_FORM = FormSpec(
    id="account-password", submit="Change password", fields=PASSWORD_FIELDS
)


def _browser(user_agent: str) -> str:
    """A short, recognisable name for a User-Agent string."""
    for marker, name in (
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Chromium/", "Chromium"),
        ("Safari/", "Safari"),
    ):
        if marker in user_agent:
            return name
    return user_agent[:40] or "unknown"


SESSION_TABLE = Table(
    caption="Your active sessions",
    id="session",
    row_id=lambda row: str(row.id),
    columns=(
        Column("Signed in", lambda s: s.created_at, kind="time"),
        Column("Last active", lambda s: s.last_seen_at, kind="time"),
        Column("Ends at the latest", lambda s: s.expires_at, kind="time"),
        Column("From", lambda s: s.client_address or "unknown", kind="code"),
        Column("Browser", lambda s: _browser(s.user_agent)),
        Column("This session", template="cells/session_current.html", hidden_label=True),
    ),
)


def render_account(
    console: Console,
    *,
    form: BoundForm | None = None,
    status: int = 200,
    passkey_error: str = "",
) -> Response:
    with console.session() as session:
        user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
        remaining = totp.remaining_recovery_codes(session, user) if user.totp_enabled else 0
        active = sessions.list_active_sessions(
            session, tenant_id=console.principal.tenant_id, user_id=user.id
        )
        keys = passkeys.list_passkeys(
            session, tenant_id=console.principal.tenant_id, user_id=user.id
        )
    return console.render(
        "account.html",
        status=status,
        user=user,
        remaining_codes=remaining,
        sessions_table=SESSION_TABLE,
        sessions=active,
        passkeys=keys,
        passkey_error=passkey_error,
        form=form or ACCOUNT_PASSWORD_FORM.bind(),
        notice=notice_for(console.request, NOTICES),
        title="My account",
    )


@router.get("/account")
def account_page(console: Annotated[Console, Depends(page())]) -> Response:
    return render_account(console)


@router.post("/account/password")
def change_password(
    console: Annotated[Console, Depends(page())],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = ACCOUNT_PASSWORD_FORM.bind(data)
    try:
        check_confirmation(data)
        with console.session() as session:
            user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
            accounts.change_password(
                session,
                user=user,
                current=str(data.get("current_password", "")),
                new=str(data.get("new_password", "")),
                actor=console.principal.actor,
                keep_session_id=console.principal.session_id,
            )
    except CarepostError as exc:
        form.failed(exc)
        return render_account(console, form=form, status=exc.status)
    return redirect(console.request, "/account?done=password")


@router.post("/account/recovery-codes")
def new_recovery_codes(console: Annotated[Console, Depends(page())]) -> Response:
    with console.session() as session:
        user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
        codes = totp.regenerate_recovery_codes(session, user=user, actor=console.principal.actor)
    return show_recovery_codes(console, codes)


@router.post("/account/sessions/sign-out-others")
def sign_out_others(console: Annotated[Console, Depends(page())]) -> Response:
    with console.session() as session:
        count = sessions.revoke_user_sessions(
            session,
            tenant_id=console.principal.tenant_id,
            user_id=console.account.user_id,
            except_id=console.principal.session_id,
        )
        audit.record(
            session,
            tenant_id=console.principal.tenant_id,
            actor=console.principal.actor,
            action="auth.sign_out_others",
            object_type="user",
            object_id=console.account.user_id,
            details={"sessions": count},
        )
    return redirect(console.request, "/account?done=signed-out-others#sessions")
