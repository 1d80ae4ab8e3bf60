"""The message log in the console: messages newest first, filtered by status, tag
and campaign; a search by recipient; each message's page with its event history.

The recipient address is PHI. Searching by it needs ``phi:read`` (as well as
``reports:read`` for the log) and is a POST: the address travels in the form body,
never in a URL (so never in a log line, a browser history or a Referer), and the
"next page" of a search is a POST too. Results that show recipients are audited
(``message.view_phi``, ``via=console_search``) through the same service as the API's
``POST /api/v1/messages/search``.

A message's page shows ids, state, tags, the event history with times and the SMTP
server's replies, never the recipient, subject or content; a ``phi:read`` user
presses "Reveal" (a CSRF-checked POST, audited ``via=console`` in the same
transaction as the read) to see them, as on a contact's page. The HTML part is shown
in a sandboxed frame that runs no script.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.api.pagination import decode_cursor, encode_cursor
from carepost.core.errors import CarepostError
from carepost.messages import service
from carepost.messages.models import Message, MessageState
from carepost.messages.service import MessageFilter
from carepost.web.console import Console, form_data, page, parse_id
from carepost.web.forms import FormData
from carepost.web.tables import Column, Table

router = APIRouter(include_in_schema=False)

READ = "reports:read"
PHI_READ = "phi:read"
PAGE_SIZE = 50
TAG = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
EVENT_LABELS = {
    "queued": "Queued",
    "sent": "Sent",
    "delivered": "Delivered",
    "deferred": "Deferred (will retry)",
    "bounced": "Bounced",
    "failed": "Failed",
    "suppressed": "Suppressed",
    "opened": "Opened",
    "clicked": "Clicked",
    "unsubscribed": "Unsubscribed",
    "complained": "Complained (spam report)",
}


def _columns(*, recipient: bool) -> tuple[Column, ...]:
    first = (
        (Column("Recipient", lambda m: m.to_address, phi=True, link=lambda m: f"/messages/{m.id}"),)
        if recipient
        else (Column("Message", lambda m: str(m.id)[:8] + "…", link=lambda m: f"/messages/{m.id}"),)
    )
    return (
        *first,
        Column("Status", lambda m: m.state, kind="badge"),
        Column("Queued", lambda m: m.first_queued_at, kind="time"),
        Column("Last event", lambda m: m.last_event_at, kind="time"),
        Column("From", lambda m: m.from_address, kind="code"),
        Column("Tags", lambda m: m.tags, kind="tags"),
        Column("Purpose", lambda m: m.purpose),
    )


LOG_TABLE = Table(
    caption="Messages, newest first",
    id="message",
    row_id=lambda m: str(m.id),
    empty="No messages match.",
    columns=_columns(recipient=False),
)
SEARCH_TABLE = Table(
    caption="Messages to this recipient, newest first",
    id="message",
    row_id=lambda m: str(m.id),
    empty="No messages to this address.",
    columns=_columns(recipient=True),
)


def _filters(values: dict[str, str]) -> tuple[MessageFilter, dict[str, str], list[str]]:
    """The filter the form asks for, the values to show back, and what was refused."""
    errors: list[str] = []
    state = values.get("state", "").strip()
    tag = values.get("tag", "").strip()
    campaign = values.get("campaign", "").strip()
    if state and state not in MessageState.ALL:
        errors.append("Status: choose one of the listed statuses.")
        state = ""
    if tag and not TAG.match(tag):
        errors.append("Tag: letters, digits and _ . : - only, at most 64.")
        tag = ""
    campaign_id: uuid.UUID | None = None
    if campaign:
        try:
            campaign_id = uuid.UUID(campaign)
        except ValueError:
            errors.append("Campaign: paste the campaign's id.")
            campaign = ""
    shown = {"state": state, "tag": tag, "campaign": campaign}
    criteria = MessageFilter(state=state or None, tag=tag or None, campaign_id=campaign_id)
    return criteria, shown, errors


def _cursor(value: str | None) -> uuid.UUID | None:
    try:
        return decode_cursor(value) if value else None
    except CarepostError:
        return None


def _next_query(shown: dict[str, str], last: Message) -> str:
    from urllib.parse import urlencode

    query = {key: value for key, value in shown.items() if value}
    return "/messages?" + urlencode({**query, "after": encode_cursor(last.id)})


def _context(console: Console, **extra: Any) -> dict[str, Any]:
    return {
        "title": "Message log",
        "states": MessageState.ALL,
        "can_search": console.can(PHI_READ),
        "searched": None,
        "errors": [],
        "next_url": None,
        "next_cursor": None,
        **extra,
    }


@router.get("/messages")
def message_log(console: Annotated[Console, Depends(page(READ))]) -> Response:
    params = console.request.query_params
    criteria, shown, errors = _filters({k: params.get(k, "") for k in ("state", "tag", "campaign")})
    with console.session() as session:
        found = service.list_messages(
            session,
            console.principal.keys,
            criteria,
            after=_cursor(params.get("after")),
            limit=PAGE_SIZE + 1,
            with_phi=False,
        )
    rows = found[:PAGE_SIZE]
    next_url = _next_query(shown, rows[-1]) if len(found) > PAGE_SIZE else None
    context = _context(console, table=LOG_TABLE, rows=rows, shown=shown, errors=errors)
    context["next_url"] = next_url
    return console.render("messages/log.html", **context)


@router.post("/messages/search")
def search_by_recipient(
    console: Annotated[Console, Depends(page(PHI_READ))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    """Messages to one address (in the body), audited like the API's search."""
    console.principal.require(READ)
    values = {k: str(data.get(k, "") or "") for k in ("to", "state", "tag", "campaign", "after")}
    criteria, shown, errors = _filters(values)
    to = values["to"].strip()
    rows: list[Message] = []
    next_cursor = None
    if not to:
        errors.append("Recipient: enter the email address to search for.")
    else:
        criteria = MessageFilter(
            to=to, state=criteria.state, tag=criteria.tag, campaign_id=criteria.campaign_id
        )
        try:
            with console.session() as session:
                found = service.list_messages(
                    session,
                    console.principal.keys,
                    criteria,
                    after=_cursor(values["after"]),
                    limit=PAGE_SIZE + 1,
                    with_phi=True,
                )
                rows = found[:PAGE_SIZE]
                service.record_phi_view(
                    session,
                    tenant_id=console.principal.tenant_id,
                    actor=console.principal.actor,
                    messages=rows,
                    via="console_search",
                )
                if len(found) > PAGE_SIZE:
                    next_cursor = encode_cursor(rows[-1].id)
                # Read while the keys are bound: the rows are rendered after the session.
                for row in rows:
                    _ = row.to_address
        except CarepostError:
            # Never echo the address back in an error: say what is wrong only.
            errors.append("Recipient: not a valid email address.")
            rows = []
    context = _context(
        console, table=SEARCH_TABLE, rows=rows, shown=shown, errors=errors, searched=to
    )
    context["next_cursor"] = next_cursor
    return console.render("messages/log.html", **context)


def _detail(console: Console, message_id: uuid.UUID, *, revealed: bool) -> dict[str, Any]:
    revealed = revealed and console.can(PHI_READ)
    with console.session() as session:
        message = service.get_message(session, console.principal.tenant_id, message_id)
        events = service.message_events(session, message.id)
        content: dict[str, Any] | None = None
        if revealed:
            service.record_phi_view(
                session,
                tenant_id=console.principal.tenant_id,
                actor=console.principal.actor,
                messages=[message],
                via="console",
            )
            body = message.body or {}
            content = {
                "to": message.to_address,
                "to_name": message.to_name,
                "subject": message.subject,
                "html": body.get("html") or "",
                "text": body.get("text") or "",
                "metadata": message.meta,
            }
        facts = service.message_out(message, show_phi=False)
    return {
        "title": "Message",
        "message": facts,
        "events": [
            {
                "kind": event.kind,
                "label": EVENT_LABELS.get(event.kind, event.kind),
                "at": event.occurred_at,
                "detail": dict(event.detail or {}),
            }
            for event in events
        ],
        "revealed": revealed,
        "content": content,
    }


@router.get("/messages/{message_id}")
def message_page(message_id: str, console: Annotated[Console, Depends(page(READ))]) -> Response:
    return console.render(
        "messages/detail.html", **_detail(console, parse_id(message_id), revealed=False)
    )


@router.post("/messages/{message_id}/reveal")
def reveal_message(
    message_id: str, console: Annotated[Console, Depends(page(PHI_READ))]
) -> Response:
    console.principal.require(READ)
    return console.render(
        "messages/detail.html", **_detail(console, parse_id(message_id), revealed=True)
    )
