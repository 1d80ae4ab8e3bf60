"""SMTP gateway clients in the console: list (never a secret), add one (its SMTP AUTH
secret is shown once, in the answer to the create request), change one on its own
page (``/gateway/clients/{id}``: name, domains, networks, fingerprints, limits),
rotate its secret (the new one shown once, the old one refused at once), delete one
after a confirmation. Reading needs ``tenant:read``, changing ``domains:write``, as in the API
(a client sends as the organization's domains). See docs/gateway.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.core.errors import CarepostError, FieldError, ValidationFailed
from carepost.domains import service as domains
from carepost.domains.senders import PROVEN_STATES
from carepost.gateway import replies, service
from carepost.gateway.models import GatewayClient
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec
from carepost.web.tables import Column, Table
from carepost.web.views import notice_for, notice_header

router = APIRouter(include_in_schema=False)
Reader = Annotated[Console, Depends(page("tenant:read"))]
Writer = Annotated[Console, Depends(page("domains:write"))]

NOTICES = {"deleted": "The gateway client was deleted. It can relay no more mail."}
MIB = 1024 * 1024

CREATE_FORM = FormSpec(
    id="gwclient",
    submit="Add gateway client",
    fields=(
        Field(
            "name",
            "Name",
            hint="The sending system, for example “Exchange Online”.",
            required=True,
            attrs={"maxlength": "100"},
        ),
        Field(
            "sender_domains",
            "Sender domains",
            "checkboxes",
            hint="The verified sending domains it may relay for (subdomains included).",
            required=True,
        ),
        Field(
            "networks",
            "Source networks",
            "textarea",
            hint="Optional. One CIDR network per line, for example 40.92.0.0/15.",
        ),
        Field(
            "cert_fingerprints",
            "TLS client certificate fingerprints",
            "textarea",
            hint="Optional. One SHA-256 fingerprint per line, as openssl prints it.",
        ),
        Field(
            "max_message_mib",
            "Message size limit (MiB)",
            "number",
            required=True,
            attrs={"min": "1", "max": "100"},
        ),
        Field(
            "max_recipients",
            "Recipients per message",
            "number",
            required=True,
            attrs={"min": "1", "max": "1000"},
        ),
    ),
)

EDIT_FORM = FormSpec(
    id="gwedit",
    submit="Save changes",
    fields=tuple(f for f in CREATE_FORM.fields),
)

CLIENT_TABLE = Table(
    caption="SMTP gateway clients of your organization",
    id="gwclient",
    row_id=lambda client: str(client.id),
    empty="No gateway clients yet.",
    columns=(
        Column("Name", lambda c: c.name, link=lambda c: f"/gateway/clients/{c.id}"),
        Column("Username", lambda c: c.username, kind="code"),
        Column("Sender domains", lambda c: list(c.sender_domains), kind="tags"),
        Column("Networks", lambda c: list(c.networks), kind="tags"),
        Column("Certificates", lambda c: len(c.cert_fingerprints), kind="number"),
        Column("Created", lambda c: c.created_at, kind="time"),
        Column(
            "Actions",
            template="cells/gwclient_actions.html",
            permission="domains:write",
            hidden_label=True,
        ),
    ),
)


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.replace(",", "\n").splitlines() if line.strip()]


def _number(form: BoundForm, name: str, low: int, high: int) -> int:
    value = form.value(name).strip()
    if not value.isdigit() or not low <= int(value) <= high:
        raise ValidationFailed(
            "check the highlighted fields", errors=[FieldError(name, f"a number {low} to {high}")]
        )
    return int(value)


def create_form(console: Console, data: FormData | None = None) -> BoundForm:
    with console.session() as session:
        verified = [
            d.name
            for d in domains.list_domains(session, console.principal.tenant_id)
            if d.state in PROVEN_STATES
        ]
    spec = CREATE_FORM.with_choices("sender_domains", [Choice(d, d) for d in verified])
    if data is None:
        return spec.bind(max_message_mib="25", max_recipients="100")
    return spec.bind(data)


def _section(
    console: Console,
    *,
    form: BoundForm | None = None,
    created: tuple[GatewayClient, str] | None = None,
) -> dict[str, Any]:
    with console.session() as session:
        clients = service.list_clients(session, console.principal.tenant_id)
    return {
        "title": "SMTP gateway",
        "table": CLIENT_TABLE,
        "rows": clients,
        "form": form or (create_form(console) if console.can("domains:write") else None),
        "created": created,
    }


@router.get("/gateway")
def clients_page(console: Reader) -> Response:
    return console.render(
        "gateway/list.html", notice=notice_for(console.request, NOTICES), **_section(console)
    )


@router.post("/gateway/clients")
def create_client(console: Writer, data: Annotated[FormData, Depends(form_data)]) -> Response:
    form = create_form(console, data)
    template = "htmx/gateway_section.html" if console.htmx else "gateway/list.html"
    try:
        form.validate()
        if not form.selected("sender_domains"):
            raise ValidationFailed(
                "check the highlighted fields",
                errors=[FieldError("sender_domains", "choose at least one verified domain")],
            )
        size = _number(form, "max_message_mib", 1, 100)
        recipients = _number(form, "max_recipients", 1, 1000)
        with console.session() as session:
            client, secret = service.create_client(
                session,
                console.principal.tenant_id,
                name=form.value("name"),
                sender_domains=form.selected("sender_domains"),
                networks=_lines(form.value("networks")),
                cert_fingerprints=_lines(form.value("cert_fingerprints")),
                max_message_bytes=size * MIB,
                max_recipients=recipients,
                actor=console.principal.actor,
            )
    except CarepostError as exc:
        form.failed(exc)
        return console.render(template, status=exc.status, **_section(console, form=form))
    return console.render(template, status=201, **_section(console, created=(client, secret)))


@router.post("/gateway/clients/{gateway_client_id}/delete")
def delete_client(gateway_client_id: str, console: Writer) -> Response:
    with console.session() as session:
        tenant_id = console.principal.tenant_id
        client = service.get_client(session, tenant_id, parse_id(gateway_client_id))
        name = client.name
        service.delete_client(session, tenant_id, client.id, actor=console.principal.actor)
    if console.htmx:
        return console.render(
            "htmx/gateway_section.html",
            headers=notice_header(f"Deleted the gateway client “{name}”."),
            **_section(console),
        )
    return redirect(console.request, "/gateway?done=deleted")


def edit_form(console: Console, client: GatewayClient, data: FormData | None = None) -> BoundForm:
    spec = create_form(console).spec
    # A domain the client has that is no longer verified stays visible (and refused on save).
    known = {choice.value for choice in spec.field("sender_domains").choices}
    extra = [Choice(d, d) for d in client.sender_domains if d not in known]
    spec = EDIT_FORM.with_choices("sender_domains", [*spec.field("sender_domains").choices, *extra])
    if data is not None:
        return spec.bind(data)
    return spec.bind(
        name=client.name,
        sender_domains=list(client.sender_domains),
        networks="\n".join(client.networks),
        cert_fingerprints="\n".join(client.cert_fingerprints),
        max_message_mib=str(max(1, client.max_message_bytes // MIB)),
        max_recipients=str(client.max_recipients),
    )


def _client(console: Console, gateway_client_id: str) -> GatewayClient:
    with console.session() as session:
        return service.get_client(session, console.principal.tenant_id, parse_id(gateway_client_id))


def _detail(
    console: Console,
    client: GatewayClient,
    *,
    form: BoundForm | None = None,
    secret: str | None = None,
    status: int = 200,
    saved: bool = False,
) -> Response:
    if form is None and console.can("domains:write"):
        form = edit_form(console, client)
    return console.render(
        "gateway/detail.html",
        status=status,
        title=f"Gateway client {client.name}",
        client=client,
        form=form,
        secret=secret,
        saved=saved,
    )


@router.get("/gateway/clients/{gateway_client_id}")
def client_page(gateway_client_id: str, console: Reader) -> Response:
    return _detail(console, _client(console, gateway_client_id))


@router.post("/gateway/clients/{gateway_client_id}")
def update_client(
    gateway_client_id: str, console: Writer, data: Annotated[FormData, Depends(form_data)]
) -> Response:
    client = _client(console, gateway_client_id)
    form = edit_form(console, client, data)
    try:
        form.validate()
        if not form.selected("sender_domains"):
            raise ValidationFailed(
                "check the highlighted fields",
                errors=[FieldError("sender_domains", "choose at least one verified domain")],
            )
        size = _number(form, "max_message_mib", 1, 100)
        recipients = _number(form, "max_recipients", 1, 1000)
        # An unchanged limit in whole MiB keeps the exact byte limit set by the API.
        size_bytes = None if size == max(1, client.max_message_bytes // MIB) else size * MIB
        with console.session() as session:
            client = service.update_client(
                session,
                console.principal.tenant_id,
                client.id,
                actor=console.principal.actor,
                name=form.value("name"),
                sender_domains=form.selected("sender_domains"),
                networks=_lines(form.value("networks")),
                cert_fingerprints=_lines(form.value("cert_fingerprints")),
                max_message_bytes=size_bytes,
                max_recipients=recipients,
            )
    except CarepostError as exc:
        form.failed(exc)
        return _detail(console, client, form=form, status=exc.status)
    return _detail(console, client, saved=True)


@router.post("/gateway/clients/{gateway_client_id}/secret")
def rotate_secret(gateway_client_id: str, console: Writer) -> Response:
    with console.session() as session:
        client, secret = service.rotate_secret(
            session,
            console.principal.tenant_id,
            parse_id(gateway_client_id),
            actor=console.principal.actor,
        )
    return _detail(console, client, secret=secret)


# --- inbound secure replies: the organization's route ---------------------------------

ROUTE_FORM = FormSpec(
    id="inroute",
    submit="Save inbound route",
    fields=(
        Field(
            "host",
            "Mail server",
            hint="Your own mail server's host name, for example mail.clinic.example.",
            required=True,
            attrs={"maxlength": "253"},
        ),
        Field("port", "Port", "number", required=True, attrs={"min": "1", "max": "65535"}),
        Field(
            "tls_mode",
            "TLS",
            "select",
            hint="TLS is always required; choose whether its certificate is checked.",
            required=True,
            choices=(
                Choice("verify", "Required, certificate checked against the host name"),
                Choice("encrypt", "Required, any certificate"),
            ),
        ),
        Field(
            "ca_certificate",
            "CA certificate",
            "textarea",
            hint="Optional. PEM certificate of a private CA that signed the server's.",
        ),
        Field(
            "enabled",
            "Accept replies",
            "select",
            required=True,
            choices=(Choice("yes", "Yes"), Choice("no", "No: refuse them for now")),
        ),
    ),
)


def _route_page(
    console: Console, *, form: BoundForm | None = None, status: int = 200, saved: bool = False
) -> Response:
    with console.session() as session:
        route = replies.get_route(session, console.principal.tenant_id)
    if form is None and console.can("domains:write"):
        form = (
            ROUTE_FORM.bind(port="25", tls_mode="verify", enabled="yes")
            if route is None
            else ROUTE_FORM.bind(
                host=route.host,
                port=str(route.port),
                tls_mode=route.tls_mode,
                ca_certificate=route.ca_certificate,
                enabled="yes" if route.enabled else "no",
            )
        )
    return console.render(
        "gateway/inbound_route.html",
        status=status,
        title="Inbound secure replies",
        route=route,
        form=form,
        saved=saved,
    )


@router.get("/gateway/inbound-route")
def route_page(console: Reader) -> Response:
    return _route_page(console)


@router.post("/gateway/inbound-route")
def save_route(console: Writer, data: Annotated[FormData, Depends(form_data)]) -> Response:
    form = ROUTE_FORM.bind(data)
    try:
        form.validate()
        port = _number(form, "port", 1, 65535)
        with console.session() as session:
            replies.set_route(
                session,
                console.principal.tenant_id,
                host=form.value("host"),
                port=port,
                tls_mode=form.value("tls_mode"),
                ca_certificate=form.value("ca_certificate"),
                enabled=form.value("enabled") != "no",
                actor=console.principal.actor,
            )
    except CarepostError as exc:
        form.failed(exc)
        return _route_page(console, form=form, status=exc.status)
    return _route_page(console, saved=True)


@router.post("/gateway/inbound-route/delete")
def delete_route(console: Writer) -> Response:
    with console.session() as session:
        replies.delete_route(session, console.principal.tenant_id, actor=console.principal.actor)
    return redirect(console.request, "/gateway/inbound-route")
