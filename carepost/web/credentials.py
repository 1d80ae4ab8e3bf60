"""Setting up credentials: the forced change of a one-time password, TOTP enrolment with
a server-rendered QR code (inline SVG as a data: URI, which the CSP allows), and the
page that shows new recovery codes once.

These pages serve both a person part-way through signing in (see the order in
:mod:`carepost.web.console`) and a signed-in person who chooses to enrol.
"""

from __future__ import annotations

from typing import Annotated

import segno
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.accounts import service as accounts
from carepost.accounts import sessions, totp
from carepost.accounts.passwords import MIN_LENGTH
from carepost.core.database import utcnow
from carepost.core.errors import CarepostError, ValidationFailed
from carepost.tenancy import service as tenancy
from carepost.web import reveal
from carepost.web.console import Console, form_data, redirect, set_session_cookie, sign_in_step
from carepost.web.forms import BoundForm, Field, FormData, FormSpec
from carepost.web.signin import account_of, finish_sign_in, next_location

router = APIRouter(include_in_schema=False)

RECOVERY_CODES_PATH = "/mfa/recovery-codes"

ENROL_FORM = FormSpec(
    id="enrol",
    submit="Turn on two-factor sign-in",
    fields=(
        Field(
            "code",
            "Code from your app",
            hint="Enter the 6-digit code your authenticator app shows for carepost.",
            required=True,
            autocomplete="one-time-code",
            sensitive=True,
            attrs={"inputmode": "numeric", "pattern": "[0-9 ]*", "maxlength": "7"},
        ),
    ),
)
PASSWORD_FIELDS = (
    Field(
        "current_password",
        "Current password",
        "password",
        required=True,
        autocomplete="current-password",
    ),
    Field(
        "new_password",
        "New password",
        "password",
        hint=f"At least {MIN_LENGTH} characters. A few unrelated words make a strong password.",
        required=True,
        autocomplete="new-password",
        aliases=("password",),
        attrs={"minlength": str(MIN_LENGTH)},
    ),
    Field(
        "confirm_password",
        "New password again",
        "password",
        required=True,
        autocomplete="new-password",
    ),
)
PASSWORD_FORM = FormSpec(id="password", submit="Change password", fields=PASSWORD_FIELDS)


def show_recovery_codes(console: Console, codes: list[str]) -> Response:
    """Redirect to the page that shows ``codes`` once, carrying them sealed in a cookie."""
    response = redirect(console.request, RECOVERY_CODES_PATH)
    sealed = reveal.seal(
        console.principal.keys, console.principal.session_id, "recovery-codes", codes
    )
    reveal.set_reveal_cookie(response, sealed, console.runtime.settings, path=RECOVERY_CODES_PATH)
    return response


# --- /password (forced change) -----------------------------------------------------------


def check_confirmation(data: FormData) -> None:
    if str(data.get("new_password", "")) != str(data.get("confirm_password", "")):
        raise ValidationFailed("the two new passwords are not the same", field="confirm_password")


@router.get("/password")
def password_page(console: Annotated[Console, Depends(sign_in_step("/password"))]) -> Response:
    return console.render("password.html", form=PASSWORD_FORM.bind(), title="Choose a new password")


@router.post("/password")
def password_change(
    console: Annotated[Console, Depends(sign_in_step("/password"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = PASSWORD_FORM.bind(data)
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
            account = account_of(
                user,
                console.account.session_stage,
                console.account.tenant_name,
                has_passkey=console.account.has_passkey,
            )
    except CarepostError as exc:
        form.failed(exc)
        return console.render(
            "password.html", status=exc.status, form=form, title="Choose a new password"
        )
    return redirect(console.request, next_location(account))


# --- /mfa/enrol and /mfa/recovery-codes -------------------------------------------------


def _enrolment(console: Console) -> tuple[str, str]:
    """The secret and otpauth:// URI of the enrolment in progress (started if needed)."""
    with console.session() as session:
        user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
        tenant = tenancy.get_tenant(session, console.principal.tenant_id)
        if user.totp_secret:
            uri = totp.totp_uri(user, tenant)
        else:
            uri = totp.begin_totp_enrolment(session, user=user, tenant=tenant)
        return str(user.totp_secret), uri


def _enrol_page(console: Console, form: BoundForm, *, status: int = 200) -> Response:
    secret, uri = _enrolment(console)
    qr = segno.make(uri, error="m")
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return console.render(
        "enrol.html",
        status=status,
        form=form,
        qr_data_uri=qr.svg_data_uri(scale=5, border=2, dark="#111111", light="#ffffff"),
        secret=grouped,
        title="Set up two-factor sign-in",
        forced=console.account.next_step is not None,
    )


ENROL_STEP = sign_in_step("/mfa/enrol", or_signed_in=True)


@router.get("/mfa/enrol")
def enrol_page(console: Annotated[Console, Depends(ENROL_STEP)]) -> Response:
    if console.account.totp_enabled:
        return redirect(console.request, "/account")
    return _enrol_page(console, ENROL_FORM.bind())


@router.post("/mfa/enrol")
def enrol_confirm(
    console: Annotated[Console, Depends(ENROL_STEP)],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    if console.account.totp_enabled:
        return redirect(console.request, "/account")
    form = ENROL_FORM.bind(data)
    failure: CarepostError | None = None
    token: str | None = None
    with console.session() as session:
        user = accounts.get_user(session, console.principal.tenant_id, console.account.user_id)
        try:
            codes = totp.confirm_totp_enrolment(
                session,
                user=user,
                code=str(data.get("code", "")).replace(" ", ""),
                actor=console.principal.actor,
            )
        except CarepostError as exc:
            failure = exc
        else:
            if console.account.session_stage != sessions.STAGE_MFA_OK:
                user.last_sign_in_at = utcnow()
                token, _account = finish_sign_in(session, console, user)
    if failure is not None:
        form.failed(failure)
        return _enrol_page(console, form, status=failure.status)
    response = show_recovery_codes(console, codes)
    if token is not None:
        set_session_cookie(response, token, console.runtime.settings)
    return response


@router.get(RECOVERY_CODES_PATH)
def recovery_codes_page(
    console: Annotated[Console, Depends(sign_in_step(or_signed_in=True))],
) -> Response:
    codes = reveal.unseal(
        console.principal.keys,
        console.principal.session_id,
        "recovery-codes",
        console.request.cookies.get(reveal.REVEAL_COOKIE),
    )
    response = console.render("recovery_codes.html", codes=codes, title="Your recovery codes")
    reveal.clear_reveal_cookie(response, console.runtime.settings, path=RECOVERY_CODES_PATH)
    return response
