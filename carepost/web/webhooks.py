"""Webhooks in the console: endpoints (add, test, rotate the secret, delete) and each
endpoint's delivery log with a replay button.

The signing secret is shown once, in the answer to the request that made it (adding
the endpoint, rotating its secret); carepost stores it encrypted and never shows it
again. The log shows status codes, durations and short errors, never payloads or the
receiver's answers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.core.errors import CarepostError
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for
from carepost.webhooks import rules, service
from carepost.webhooks.models import WebhookDelivery, WebhookEndpoint

router = APIRouter(include_in_schema=False)

NOTICES = {
    "deleted": "The endpoint was deleted with its delivery log.",
    "tested": "A test event is queued; it appears in the log below once sent.",
    "replayed": "The event is queued again; the new delivery appears at the top of the log.",
}
EVENT_CHOICES = tuple(Choice(name, name) for name in (rules.ALL_EVENTS, *rules.EVENT_TYPES[:-1]))
CREATE_FORM = FormSpec(
    id="webhook",
    submit="Add endpoint",
    fields=(
        Field(
            "url",
            "URL",
            "url",
            hint="Where carepost POSTs events, e.g. https://example.org/carepost/events.",
            required=True,
            attrs={"maxlength": "2000"},
        ),
        Field("description", "Description", attrs={"maxlength": "200"}),
        Field(
            "event_types",
            "Events",
            "checkboxes",
            hint="“*” sends every event, including kinds added later.",
            required=True,
            choices=EVENT_CHOICES,
        ),
        Field(
            "include_phi",
            "PHI in payloads",
            "checkboxes",
            hint="Off by default. Only for receivers covered by your BAA.",
            choices=(Choice("yes", "include_phi", "Send recipient addresses and subjects"),),
        ),
    ),
)

ENDPOINT_TABLE = Table(
    caption="Webhook endpoints of your organization",
    id="webhook",
    row_id=lambda endpoint: str(endpoint.id),
    empty="No webhook endpoints yet.",
    columns=(
        Column("URL", lambda e: e.url, link=lambda e: f"/webhooks/{e.id}"),
        Column("Events", lambda e: e.event_types, kind="tags"),
        Column("Status", lambda e: "enabled" if e.enabled else "disabled", kind="badge"),
        Column("PHI", lambda e: "included" if e.include_phi else "never", kind="badge"),
        Column("Added", lambda e: e.created_at, kind="time"),
    ),
)

DELIVERY_TABLE = Table(
    caption="Delivery log, newest first",
    id="delivery",
    row_id=lambda delivery: str(delivery.id),
    empty="Nothing delivered yet.",
    columns=(
        Column("Event", lambda d: d.event_type, kind="code"),
        Column("Queued", lambda d: d.created_at, kind="time"),
        Column("State", lambda d: d.state, kind="badge"),
        Column("Attempts", lambda d: d.attempts, kind="number"),
        Column("Last status", lambda d: d.last_status_code or "—"),
        Column("Last error", lambda d: d.last_error or "—"),
        Column(
            "Actions",
            template="cells/webhook_delivery_actions.html",
            permission="webhooks:write",
            hidden_label=True,
        ),
    ),
)


def _allow_loopback(console: Console) -> bool:
    return console.runtime.settings.environment in ("development", "test")


def _list_context(
    console: Console, *, form: BoundForm | None = None, created: tuple[Any, str] | None = None
) -> dict[str, Any]:
    with console.session() as session:
        endpoints = service.list_endpoints(session, console.principal.tenant_id)
    return {
        "title": "Webhooks",
        "table": ENDPOINT_TABLE,
        "rows": endpoints,
        "form": form or CREATE_FORM.bind(None, event_types=["message.bounced"]),
        "created": created,
    }


@router.get("/webhooks")
def webhooks_page(console: Annotated[Console, Depends(page("webhooks:read"))]) -> Response:
    return console.render(
        "webhooks/list.html", notice=notice_for(console.request, NOTICES), **_list_context(console)
    )


@router.post("/webhooks")
def create_webhook(
    console: Annotated[Console, Depends(page("webhooks:write"))],
    data: Annotated[FormData, Depends(form_data)],
) -> Response:
    form = CREATE_FORM.bind(data)
    try:
        form.validate()
        with console.session() as session:
            created = service.create_endpoint(
                session,
                console.principal.tenant_id,
                url=form.value("url"),
                description=form.value("description"),
                event_types=form.selected("event_types"),
                include_phi="yes" in form.selected("include_phi"),
                allow_loopback_http=_allow_loopback(console),
                actor=console.principal.actor,
            )
            pair = (created.endpoint, created.secret)
    except CarepostError as exc:
        form.failed(exc)
        return console.render(
            "webhooks/list.html", status=exc.status, **_list_context(console, form=form)
        )
    return console.render("webhooks/list.html", status=201, **_list_context(console, created=pair))


def _detail(console: Console, endpoint_id: str, **extra: Any) -> dict[str, Any]:
    with console.session() as session:
        endpoint: WebhookEndpoint = service.get_endpoint(
            session, console.principal.tenant_id, parse_id(endpoint_id)
        )
        deliveries: list[WebhookDelivery] = service.list_deliveries(
            session, console.principal.tenant_id, endpoint.id, limit=100
        )
    return {
        "title": "Webhook endpoint",
        "endpoint": endpoint,
        "table": DELIVERY_TABLE,
        "rows": deliveries,
        **extra,
    }


@router.get("/webhooks/{endpoint_id}")
def webhook_page(
    endpoint_id: str, console: Annotated[Console, Depends(page("webhooks:read"))]
) -> Response:
    return console.render(
        "webhooks/detail.html",
        notice=notice_for(console.request, NOTICES),
        **_detail(console, endpoint_id),
    )


@router.post("/webhooks/{endpoint_id}/test")
def test_webhook(
    endpoint_id: str, console: Annotated[Console, Depends(page("webhooks:write"))]
) -> Response:
    with console.session() as session:
        service.send_test_event(
            session,
            console.principal.tenant_id,
            parse_id(endpoint_id),
            actor=console.principal.actor,
        )
    return redirect(console.request, f"/webhooks/{parse_id(endpoint_id)}?done=tested")


@router.post("/webhooks/{endpoint_id}/rotate")
def rotate_webhook_secret(
    endpoint_id: str, console: Annotated[Console, Depends(page("webhooks:write"))]
) -> Response:
    with console.session() as session:
        created = service.rotate_secret(
            session,
            console.principal.tenant_id,
            parse_id(endpoint_id),
            actor=console.principal.actor,
        )
        secret = created.secret
    return console.render("webhooks/detail.html", **_detail(console, endpoint_id, secret=secret))


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/replay")
def replay_webhook_delivery(
    endpoint_id: str,
    delivery_id: str,
    console: Annotated[Console, Depends(page("webhooks:write"))],
) -> Response:
    with console.session() as session:
        service.replay_delivery(
            session,
            console.principal.tenant_id,
            parse_id(endpoint_id),
            parse_id(delivery_id),
            actor=console.principal.actor,
        )
    return redirect(console.request, f"/webhooks/{parse_id(endpoint_id)}?done=replayed")


@router.post("/webhooks/{endpoint_id}/delete")
def delete_webhook(
    endpoint_id: str, console: Annotated[Console, Depends(page("webhooks:write"))]
) -> Response:
    with console.session() as session:
        service.delete_endpoint(
            session,
            console.principal.tenant_id,
            parse_id(endpoint_id),
            actor=console.principal.actor,
        )
    return redirect(console.request, "/webhooks?done=deleted")
