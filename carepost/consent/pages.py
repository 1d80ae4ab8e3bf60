"""Recipients' pages, opened from a signed link without signing in: one-click
unsubscribe (``/u/{token}``, RFC 8058) and the preference center (``/p/{token}``).

``POST /u/{token}`` is what a mail client sends for ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click``: the address is suppressed at once and the answer is
a 200 page, never a redirect (RFC 8058 section 3.2). The confirmation page's
button posts the same form, so a link scanner fetching the URL with GET never
unsubscribes anyone. Every bad link (malformed, tampered, expired, unknown)
gets the same 404 page.

A message's link carries ``?m=<its return token>`` (signed, no id in clear): the
unsubscribe is then also an ``unsubscribed`` event of that message (its history, the
contact's timeline, webhooks). A token that does not verify, or names a message of
another contact, is ignored: the unsubscribe itself never depends on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from carepost.api.deps import client_address, get_runtime
from carepost.consent import links, recipient
from carepost.consent.links import InvalidLink, LinkKind, RecipientLink
from carepost.core.errors import CryptoError
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys, bind_tenant_keys
from carepost.delivery import verp
from carepost.delivery.feedback_keys import cached_feedback_secret
from carepost.delivery.message_ledger import message_ledger
from carepost.tenancy.models import Tenant
from carepost.web.console import render

router = APIRouter(include_in_schema=False)
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
TOKEN_MAX = 200
# A message's return token (carepost.delivery.verp): base32, lower case.
_MESSAGE_TOKEN = re.compile(rf"[a-z2-7]{{{verp.TOKEN_CHARS}}}")


@dataclass(frozen=True)
class _Opened:
    """A verified link with its tenant's keys and name."""

    keys: TenantKeys
    link: RecipientLink
    organization: str


def _open(runtime: Runtime, session: Session, token: str, kind: LinkKind) -> _Opened:
    tenant_id = links.token_tenant(token)
    tenant = session.get(Tenant, tenant_id)
    if tenant is None or tenant.status != "active":
        raise InvalidLink
    try:
        keys = runtime.keyring.load(session, tenant_id)
    except CryptoError:
        raise InvalidLink from None
    return _Opened(keys, links.verify(keys, token, kind), tenant.name)


def _invalid(request: Request) -> HTMLResponse:
    return render(request, "recipient/invalid.html", status=404, title="Link not valid")


def _message_token(request: Request) -> str | None:
    """The ``m`` of the link, when it has the shape of a return token (else None)."""
    value = request.query_params.get("m", "")
    return value if _MESSAGE_TOKEN.fullmatch(value) else None


def _record_unsubscribed(
    runtime: Runtime, session: Session, opened: _Opened, message_token: str
) -> None:
    """The ``unsubscribed`` event of the message the link came in, if it is the
    link's contact's message (a forged or foreign token records nothing)."""
    message_id = verp.message_of_token(
        message_token, secret=cached_feedback_secret(runtime.settings)
    )
    if message_id is None:
        return
    ledger = message_ledger()
    found = ledger.find(session, opened.keys, message_id)
    if found is None or found.contact_id != opened.link.contact_id:
        return
    ledger.record_event(
        session, opened.keys, message_id, "unsubscribed", detail={"source": "one_click"}
    )


def _unsubscribe_page(request: Request, runtime: Runtime, token: str, *, act: bool) -> HTMLResponse:
    message_token = _message_token(request)
    try:
        with runtime.database.session() as session:
            opened = _open(runtime, session, token, LinkKind.UNSUBSCRIBE)
            with bind_tenant_keys(opened.keys):
                if act:
                    recipient.unsubscribe(
                        session, opened.keys, opened.link, client_address=client_address(request)
                    )
                    if message_token is not None:
                        _record_unsubscribed(runtime, session, opened, message_token)
                view = recipient.preferences(session, opened.keys, opened.link)
                session.flush()
    except InvalidLink:
        return _invalid(request)
    link = opened.link
    preferences_token = links.make_token(
        opened.keys, LinkKind.PREFERENCES, link.contact_id, link.channel
    )
    return render(
        request,
        "recipient/unsubscribe.html",
        title="Unsubscribe",
        organization=opened.organization,
        address=view.masked.get(link.channel, "your address"),
        action=f"/u/{token}" + (f"?m={message_token}" if message_token else ""),
        done=act,
        preferences_url=f"/p/{preferences_token}",
    )


@router.get("/u/{token}")
def unsubscribe_page(request: Request, token: str, runtime: RuntimeDep) -> HTMLResponse:
    return _unsubscribe_page(request, runtime, token, act=False)


@router.post("/u/{token}")
def unsubscribe(request: Request, token: str, runtime: RuntimeDep) -> HTMLResponse:
    """One click: the body (``List-Unsubscribe=One-Click``) needs no checking to act."""
    return _unsubscribe_page(request, runtime, token, act=True)


def _preferences_page(
    request: Request,
    runtime: Runtime,
    token: str,
    *,
    chosen: set[str] | None = None,
    unsubscribe_all: bool = False,
) -> HTMLResponse:
    notice = ""
    try:
        with runtime.database.session() as session:
            opened = _open(runtime, session, token, LinkKind.PREFERENCES)
            with bind_tenant_keys(opened.keys):
                if chosen is not None:
                    recipient.save_preferences(
                        session,
                        opened.keys,
                        opened.link,
                        chosen=chosen,
                        unsubscribe_all=unsubscribe_all,
                        client_address=client_address(request),
                    )
                    notice = (
                        "You are unsubscribed from all marketing."
                        if unsubscribe_all
                        else "Your choices are saved."
                    )
                view = recipient.preferences(session, opened.keys, opened.link)
                session.flush()
    except InvalidLink:
        return _invalid(request)
    return render(
        request,
        "recipient/preferences.html",
        title="Preferences",
        organization=opened.organization,
        view=view,
        notice=notice,
        action=f"/p/{token}",
    )


@router.get("/p/{token}")
def preferences_page(request: Request, token: str, runtime: RuntimeDep) -> HTMLResponse:
    return _preferences_page(request, runtime, token)


@router.post("/p/{token}")
def save_preferences(
    request: Request,
    token: str,
    runtime: RuntimeDep,
    consent: Annotated[list[str] | None, Form()] = None,
    action: Annotated[str, Form(max_length=40)] = "save",
) -> HTMLResponse:
    return _preferences_page(
        request,
        runtime,
        token,
        chosen=set(consent or []),
        unsubscribe_all=action == "unsubscribe_all",
    )
