"""A gateway client's own console page: its facts, a change form (checked like the
add form, errors next to the field) and a secret rotation that shows the new secret
once while the old one stops working; readers see the page without either form."""

from __future__ import annotations

import html

from sqlalchemy import select

from carepost.audit.models import AuditEvent
from carepost.gateway import service
from tests.web.test_gateway_console import SECRET, USERNAME, add, verified_domain


def _edit(b, client_id, domain: str, **more: str):
    data = {
        "name": "Exchange Online",
        "sender_domains": domain,
        "networks": "",
        "cert_fingerprints": "",
        "max_message_mib": "25",
        "max_recipients": "100",
    } | more
    return b.post(f"/gateway/clients/{client_id}", data)


def test_edit_page_changes_the_client(owner, sign_in, runtime):
    domain = verified_domain(runtime, owner)
    b = sign_in(owner)
    add(b, domain, networks="203.0.113.0/24")
    with runtime.bound_session(owner.keys) as session:
        [client] = service.list_clients(session, owner.tenant.id)
    listing = b.get("/gateway")
    assert f'href="/gateway/clients/{client.id}"' in listing.text
    page = b.get(f"/gateway/clients/{client.id}")
    assert page.status_code == 200 and "203.0.113.0/24" in page.text
    saved = _edit(b, client.id, domain, name="Postfix", networks="198.51.100.0/24",
                  max_recipients="12")  # fmt: skip
    assert saved.status_code == 200 and 'id="saved-client"' in saved.text
    with runtime.bound_session(owner.keys) as session:
        row = service.get_client(session, owner.tenant.id, client.id)
        assert (row.name, row.networks, row.max_recipients) == ("Postfix", ["198.51.100.0/24"], 12)
        assert row.max_message_bytes == 25 * 1024 * 1024
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.tenant_id == owner.tenant.id)
        ).all()
    assert "gateway.client.update" in actions
    refused = _edit(b, client.id, domain, networks="0.0.0.0/0")
    assert refused.status_code == 422
    assert 'id="gwedit-networks-error"' in refused.text
    assert "not the whole internet" in html.unescape(refused.text)


def test_rotate_secret_shows_the_new_one_once(owner, sign_in, runtime):
    domain = verified_domain(runtime, owner)
    b = sign_in(owner)
    created = add(b, domain)
    old = SECRET.search(created.text).group(1)
    username = USERNAME.search(created.text).group(1)
    with runtime.bound_session(owner.keys) as session:
        [client] = service.list_clients(session, owner.tenant.id)
    rotated = b.post(f"/gateway/clients/{client.id}/secret")
    assert rotated.status_code == 200
    new = SECRET.search(rotated.text).group(1)
    assert new != old
    with runtime.database.session() as session:
        assert service.by_username(session, username, new) is not None
        assert service.by_username(session, username, old) is None
    assert new not in b.get(f"/gateway/clients/{client.id}").text


def test_readers_see_the_client_but_cannot_change_it(owner, tenant, make_person, sign_in, runtime):
    domain = verified_domain(runtime, owner)
    add(sign_in(owner), domain, name="Postfix relay")
    with runtime.bound_session(owner.keys) as session:
        [client] = service.list_clients(session, owner.tenant.id)
    analyst = sign_in(make_person(tenant, "analyst"))
    page = analyst.get(f"/gateway/clients/{client.id}")
    assert page.status_code == 200 and "Postfix relay" in page.text
    assert "Rotate secret" not in page.text and "Save changes" not in page.text
    assert analyst.post(f"/gateway/clients/{client.id}/secret").status_code == 403
    assert _edit(analyst, client.id, domain).status_code == 403
