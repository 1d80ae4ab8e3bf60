"""SMTP gateway clients in the console: listed without secrets, added with the secret
shown once (and it is the one the gateway accepts), refused with the field at fault,
deleted after a confirmation; readers see the list only."""

from __future__ import annotations

import html
import re
import uuid

from sqlalchemy import select

from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.domains import service as domains
from carepost.gateway import service

SECRET = re.compile(r'<code id="gateway-secret">([^<]+)</code>')
USERNAME = re.compile(r'<code id="gateway-username">([^<]+)</code>')


def verified_domain(runtime, person) -> str:
    name = f"gw-{uuid.uuid4().hex[:8]}.example"
    with runtime.bound_session(person.keys) as session:
        domain = domains.add_domain(session, person.tenant.id, name=name, actor=SYSTEM)
        domain.state = "verified"
    return name


def add(b, domain: str, **more: str):
    data = {
        "name": "Exchange Online",
        "sender_domains": domain,
        "networks": "",
        "cert_fingerprints": "",
        "max_message_mib": "25",
        "max_recipients": "100",
    } | more
    return b.post("/gateway/clients", data, htmx=True)


def test_add_shows_the_secret_once_and_the_gateway_accepts_it(owner, sign_in, runtime):
    domain = verified_domain(runtime, owner)
    b = sign_in(owner)
    page = b.get("/gateway")
    assert page.status_code == 200
    assert 'href="/gateway"' in page.text  # in the navigation
    assert f'value="{domain}"' in page.text  # verified domains are offered
    response = add(b, domain, networks="203.0.113.0/24\n198.51.100.0/24", max_recipients="7")
    assert response.status_code == 201
    secret = SECRET.search(response.text).group(1)
    username = USERNAME.search(response.text).group(1)
    with runtime.database.session() as session:
        found = service.by_username(session, username, secret)
    assert found is not None and found.max_recipients == 7
    assert found.sender_domains == (domain,)
    listing = b.get("/gateway")
    assert secret not in listing.text
    assert username in listing.text and "203.0.113.0/24" in listing.text


def test_add_refuses_bad_input_naming_the_field(owner, sign_in, runtime):
    domain = verified_domain(runtime, owner)
    b = sign_in(owner)
    no_domain = b.post("/gateway/clients", {"name": "x", "max_message_mib": "25",
                                            "max_recipients": "10"}, htmx=True)  # fmt: skip
    assert no_domain.status_code == 422
    assert 'id="gwclient-sender_domains-error"' in no_domain.text
    whole_internet = add(b, domain, networks="0.0.0.0/0")
    assert whole_internet.status_code == 422
    assert "not the whole internet" in html.unescape(whole_internet.text)
    unverified = add(b, "not-verified.example")
    assert unverified.status_code == 422
    assert 'id="gwclient-sender_domains-error"' in unverified.text
    too_many = add(b, domain, max_recipients="5000")
    assert too_many.status_code == 422 and 'id="gwclient-max_recipients-error"' in too_many.text
    no_name = add(b, domain, name=" ")
    assert no_name.status_code == 422 and 'id="gwclient-name-error"' in no_name.text
    with runtime.bound_session(owner.keys) as session:
        assert service.list_clients(session, owner.tenant.id) == []


def test_delete_after_confirmation_stops_the_client(owner, sign_in, runtime):
    domain = verified_domain(runtime, owner)
    b = sign_in(owner)
    created = add(b, domain)
    username = USERNAME.search(created.text).group(1)
    secret = SECRET.search(created.text).group(1)
    with runtime.bound_session(owner.keys) as session:
        [client] = service.list_clients(session, owner.tenant.id)
    page = b.get("/gateway")
    assert f'hx-post="/gateway/clients/{client.id}/delete"' in page.text
    assert "hx-confirm=" in page.text
    response = b.post(f"/gateway/clients/{client.id}/delete", htmx=True)
    assert response.status_code == 200
    assert "No gateway clients yet." in response.text
    assert "HX-Trigger" in response.headers
    with runtime.database.session() as session:
        assert service.by_username(session, username, secret) is None
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.tenant_id == owner.tenant.id)
        ).all()
    assert "gateway.client.create" in actions and "gateway.client.delete" in actions
    again = b.post(f"/gateway/clients/{client.id}/delete")
    assert again.status_code == 404


def test_delete_without_htmx_redirects_with_a_notice(owner, sign_in, runtime):
    domain = verified_domain(runtime, owner)
    b = sign_in(owner)
    add(b, domain)
    with runtime.bound_session(owner.keys) as session:
        [client] = service.list_clients(session, owner.tenant.id)
    response = b.post(f"/gateway/clients/{client.id}/delete")
    assert response.status_code == 303
    assert response.headers["location"].endswith("/gateway?done=deleted")
    assert "It can relay no more mail." in b.get("/gateway?done=deleted").text


def test_readers_see_the_list_but_cannot_change_it(owner, tenant, make_person, sign_in, runtime):
    domain = verified_domain(runtime, owner)
    add(sign_in(owner), domain, name="Postfix relay")
    analyst = sign_in(make_person(tenant, "analyst"))
    page = analyst.get("/gateway")
    assert page.status_code == 200 and "Postfix relay" in page.text
    assert "Add a gateway client" not in page.text and "/delete" not in page.text
    assert add(analyst, domain).status_code == 403
