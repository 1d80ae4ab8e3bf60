"""The From address must be on a verified sending domain of the tenant
(carepost/domains/senders.py): refused with a problem+json on ``from`` otherwise;
subdomains send under a verified parent; a tenant listed in
``sender_unverified_tenants`` (development, the demo) sends from anywhere."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from carepost.audit.service import SYSTEM
from carepost.core.config import get_settings
from carepost.domains import service as domains
from carepost.domains.models import SendingDomain
from carepost.domains.senders import check_sender
from carepost.tenancy.models import Tenant

V1 = "/api/v1"


@pytest.fixture
def tenant(make_tenant):
    """A tenant sending from the verified clinic.example (and nothing else)."""
    return make_tenant(verified_senders=("clinic.example",))


def _message(sender: str) -> dict[str, str]:
    return {
        "to": f"r-{uuid.uuid4().hex[:8]}@example.org",
        "from": sender,
        "subject": "Your appointment",
        "text": "See you soon.",
    }


def _set_state(runtime, tenant, name: str, state: str) -> None:
    with runtime.database.session() as session:
        session.execute(
            update(SendingDomain)
            .where(SendingDomain.tenant_id == tenant[0].id, SendingDomain.name == name)
            .values(state=state)
        )


def test_an_unknown_domain_is_refused_on_the_from_field(client, tenant, make_api_key):
    response = client.post(
        f"{V1}/messages", json=_message("care@elsewhere.example"), headers=make_api_key(tenant)
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    [error] = response.json()["errors"]
    assert error["pointer"] == "#/body/from"
    assert "elsewhere.example is not a sending domain" in error["detail"]


def test_a_pending_domain_is_refused_until_its_check_passes(client, runtime, tenant, make_api_key):
    with runtime.bound_session(tenant[1]) as session:
        domains.add_domain(session, tenant[0].id, name="new.example", actor=SYSTEM)
    headers = make_api_key(tenant)

    refused = client.post(f"{V1}/messages", json=_message("care@new.example"), headers=headers)
    assert refused.status_code == 422
    assert "new.example is not verified yet" in refused.json()["errors"][0]["detail"]

    _set_state(runtime, tenant, "new.example", "verified")
    accepted = client.post(f"{V1}/messages", json=_message("care@new.example"), headers=headers)
    assert accepted.status_code == 201, accepted.text

    # Verified once, failing later (DNS changed): still the tenant's, mail goes on.
    _set_state(runtime, tenant, "new.example", "failing")
    again = client.post(f"{V1}/messages", json=_message("care@new.example"), headers=headers)
    assert again.status_code == 201, again.text


def test_a_subdomain_sends_under_its_verified_parent_and_case_does_not_matter(
    client, tenant, make_api_key
):
    headers = make_api_key(tenant)
    for sender in ("news@mail.Clinic.Example", "care@CLINIC.example"):
        response = client.post(f"{V1}/messages", json=_message(sender), headers=headers)
        assert response.status_code == 201, response.text


def test_a_batch_names_each_refused_item(client, tenant, make_api_key):
    items = [_message("care@clinic.example"), _message("care@spoofed.example")]
    response = client.post(
        f"{V1}/messages/batch", json={"items": items}, headers=make_api_key(tenant)
    )
    assert response.status_code in (200, 207, 422), response.text
    text = response.text
    assert "spoofed.example is not a sending domain" in text


def test_another_tenants_domain_does_not_count(runtime, make_tenant):
    owner = make_tenant(verified_senders=("mine.example",))
    other = make_tenant(verified_senders=())
    with runtime.bound_session(owner[1]) as session:
        assert check_sender(session, owner[0].id, "a@mine.example", exempt=()) is None
    with runtime.bound_session(other[1]) as session:
        assert check_sender(session, other[0].id, "a@mine.example", exempt=()) is not None


def test_exempt_tenants_send_from_any_address(runtime, make_tenant):
    demo = make_tenant(verified_senders=())
    with runtime.bound_session(demo[1]) as session:
        slug = session.get(Tenant, demo[0].id).slug  # type: ignore[union-attr]
        assert check_sender(session, demo[0].id, "a@anything.example", exempt=(slug,)) is None
    with runtime.bound_session(demo[1]) as session:
        assert check_sender(session, demo[0].id, "a@anything.example", exempt=()) is not None


def test_no_organization_is_exempt_by_default():
    """Not even one whose slug is "demo": the demo command verifies demo.example instead
    (tests/test_cli.py)."""
    assert get_settings().sender_unverified_tenants == ()
