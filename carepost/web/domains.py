"""The "Domains & DKIM" console page: sending domains, the DNS records to publish
(DKIM keys, SPF, DMARC), the last DNS check in plain words, and the actions: add,
check now, rotate keys, promote the next keys, delete.

Reading needs ``tenant:read`` (the records are public DNS data); every action needs
``domains:write``. The page shows public keys only: private keys never leave the
service layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import dns.resolver
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from carepost.core.errors import CarepostError
from carepost.domains import service
from carepost.domains.api import get_dns_resolver
from carepost.domains.keys import zone_text
from carepost.domains.schemas import CheckOut
from carepost.web.console import Console, form_data, page, parse_id, redirect
from carepost.web.forms import Field, FormData, FormSpec
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)
Reader = Annotated[Console, Depends(page("tenant:read"))]
Writer = Annotated[Console, Depends(page("domains:write"))]

NOTICES = {
    "added": "Domain added. Publish the records below, then check DNS.",
    "checked": "DNS checked.",
    "rotated": "New keys created. Publish their records, then promote them.",
    "promoted": "The new keys sign your mail now; the old ones are retired.",
    "deleted": "Domain deleted. Mail from it is no longer signed.",
}
ADD_FORM = FormSpec(
    id="domain",
    submit="Add domain",
    fields=(
        Field(
            "name",
            "Domain",
            hint="The domain of your From addresses, like clinic.example or mail.clinic.example.",
            required=True,
            attrs={"maxlength": "253", "autocomplete": "off"},
        ),
    ),
)


def _list_context(console: Console) -> dict[str, Any]:
    with console.session() as session:
        domains = service.list_domains(session, console.principal.tenant_id)
    return {"title": "Domains & DKIM", "domains": domains}


@router.get("/domains")
def domains_page(console: Reader) -> Response:
    return console.render(
        "domains/list.html",
        notice=notice_for(console.request, NOTICES),
        form=ADD_FORM.bind(None),
        **_list_context(console),
    )


@router.post("/domains")
def add_domain(console: Writer, data: Annotated[FormData, Depends(form_data)]) -> Response:
    form = ADD_FORM.bind(data)
    try:
        form.validate()
        with console.session() as session:
            domain = service.add_domain(
                session,
                console.principal.tenant_id,
                name=form.value("name"),
                actor=console.principal.actor,
            )
            domain_id = domain.id
    except CarepostError as exc:
        form.failed(exc)
        return console.render(
            "domains/list.html", status=exc.status, form=form, **_list_context(console)
        )
    return redirect(console.request, f"/domains/{domain_id}?done=added")


@router.get("/domains/{domain_id}")
def domain_page(domain_id: str, console: Reader) -> Response:
    target = parse_id(domain_id)
    tenant_id = console.principal.tenant_id
    with console.session() as session:
        domain = service.get_domain(session, tenant_id, target)
        keys = service.key_rows(session, tenant_id, target)
        records = service.records_for(session, domain, console.runtime.settings)
        check = CheckOut.of(domain.last_check, domain.last_checked_at)
        return console.render(
            "domains/detail.html",
            notice=notice_for(console.request, NOTICES),
            title=domain.name,
            domain=domain,
            keys=keys,
            records=[(record, zone_text(record.value)) for record in records],
            check=check,
            has_next=any(key.state == "next" for key in keys),
        )


@router.post("/domains/{domain_id}/check")
def check_domain(
    domain_id: str,
    console: Writer,
    resolver: Annotated[dns.resolver.Resolver, Depends(get_dns_resolver)],
) -> Response:
    target = parse_id(domain_id)
    with console.session() as session:
        service.check_dns(
            session,
            console.principal.tenant_id,
            target,
            settings=console.runtime.settings,
            resolver=resolver,
        )
    return redirect(console.request, f"/domains/{target}?done=checked#check")


def _act(console: Console, domain_id: str, call: Callable[..., object], location: str) -> Response:
    target = parse_id(domain_id)
    with console.session() as session:
        call(session, console.principal.tenant_id, target, actor=console.principal.actor)
    return redirect(console.request, location.format(id=target))


@router.post("/domains/{domain_id}/rotate")
def rotate_keys(domain_id: str, console: Writer) -> Response:
    return _act(console, domain_id, service.rotate_keys, "/domains/{id}?done=rotated")


@router.post("/domains/{domain_id}/promote")
def promote_keys(domain_id: str, console: Writer) -> Response:
    return _act(console, domain_id, service.promote_next_keys, "/domains/{id}?done=promoted")


@router.post("/domains/{domain_id}/delete")
def delete_domain(domain_id: str, console: Writer) -> Response:
    return _act(console, domain_id, service.delete_domain, "/domains?done=deleted")
