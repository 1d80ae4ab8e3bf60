"""Sending domains and their DKIM keys: generation, encryption at rest, rotation,
promotion, the keys the outbox signs with, and the audit trail (never a key)."""

from __future__ import annotations

from datetime import timedelta

import dkim as dkimpy
import pytest
from sqlalchemy import select, text

from carepost.audit.service import Actor
from carepost.core.database import utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from carepost.delivery.dkim import sign_all
from carepost.delivery.mime import OutgoingMessage, build_message, message_bytes
from carepost.domains import service
from carepost.domains.keys import key_record_value
from carepost.domains.models import DkimKey, SendingDomain

ADMIN = Actor("user", "u-1", "admin@clinic.example")


def add(runtime, tenant, name="clinic.example"):
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        return service.add_domain(session, tenant_row.id, name=name, actor=ADMIN).id


def key_states(runtime, tenant, domain_id):
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        return sorted(
            (k.algorithm, k.state, k.selector)
            for k in service.key_rows(session, tenant_row.id, domain_id)
        )


def message_from(address: str) -> bytes:
    outgoing = OutgoingMessage(
        from_address=address,
        from_name="Clinic",
        to_address="pat@example.org",
        to_name=None,
        reply_to=None,
        subject="Hello",
        html=None,
        text="Hello",
    )
    return message_bytes(build_message(outgoing))


def dns_of(runtime, tenant, domain_id):
    """The DKIM records the admin was told to publish, as dkimpy's DNS answers."""
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        domain = service.get_domain(session, tenant_row.id, domain_id)
        records = {
            r.name: r.value
            for r in service.records_for(session, domain, runtime.settings)
            if r.kind == "dkim"
        }
    return lambda name, timeout=5: (records.get(name.decode().rstrip(".")) or "").encode() or None


def test_adding_a_domain_makes_an_rsa_and_an_ed25519_key_that_sign(runtime, tenant):
    domain_id = add(runtime, tenant, "Clinic.Example.")
    states = key_states(runtime, tenant, domain_id)
    assert [(a, s) for a, s, _ in states] == [
        ("ed25519-sha256", "active"),
        ("rsa-sha256", "active"),
    ]
    assert states[0][2].startswith("cp-ed-") and states[1][2].startswith("cp-rsa-")
    with runtime.bound_session(tenant[1]) as session:
        signers = service.signing_keys_for(session, tenant[1], "clinic.example")
    assert [s.algorithm for s in signers] == ["rsa-sha256", "ed25519-sha256"]
    assert all(s.domain == "clinic.example" for s in signers)
    signed = sign_all(message_from("news@clinic.example"), signers)
    verifier = dkimpy.DKIM(signed)
    lookup = dns_of(runtime, tenant, domain_id)
    assert verifier.verify(idx=0, dnsfunc=lookup) and verifier.verify(idx=1, dnsfunc=lookup)


def test_a_subdomain_signs_with_its_parent_domain_keys(runtime, tenant):
    add(runtime, tenant, "clinic.example")
    with runtime.bound_session(tenant[1]) as session:
        signers = service.signing_keys_for(session, tenant[1], "News.Clinic.Example")
        assert {s.domain for s in signers} == {"clinic.example"}
        assert service.signing_keys_for(session, tenant[1], "other.example") == []
        assert service.signing_keys_for(session, tenant[1], "not a domain") == []


def test_another_tenants_domain_never_signs(runtime, make_tenant):
    owner, stranger = make_tenant(), make_tenant()
    add(runtime, owner, "clinic.example")
    with runtime.bound_session(stranger[1]) as session:
        assert service.signing_keys_for(session, stranger[1], "clinic.example") == []
        domain_id = session.scalar(
            select(SendingDomain.id).where(SendingDomain.tenant_id == owner[0].id)
        )
        with pytest.raises(NotFound):
            service.get_domain(session, stranger[0].id, domain_id)


def test_private_keys_are_encrypted_at_rest(runtime, tenant):
    domain_id = add(runtime, tenant)
    with runtime.database.session() as session:
        raw = session.execute(
            text("SELECT private_key, public_key FROM dkim_keys WHERE domain_id = :d"),
            {"d": domain_id if runtime.settings.is_sqlite is False else domain_id.hex},
        ).all()
    assert len(raw) == 2
    for private, public in raw:
        assert b"PRIVATE KEY" not in bytes(private) and public.encode() not in bytes(private)


def test_audit_names_the_keys_never_their_secret(runtime, tenant, audit_trail):
    domain_id = add(runtime, tenant)
    with runtime.bound_session(tenant[1]) as session:
        pems = [
            k.private_key
            for k in session.scalars(select(DkimKey).where(DkimKey.domain_id == domain_id))
        ]
    created = audit_trail(tenant, "dkim_key.create")
    assert {e.details["algorithm"] for e in created} == {"rsa-sha256", "ed25519-sha256"}
    assert [e.details["domain"] for e in audit_trail(tenant, "domain.create")] == ["clinic.example"]
    trail = repr([(e.details, e.reason) for e in audit_trail(tenant)])
    for pem in pems:
        body = "".join(pem.splitlines()[1:-1])
        assert body[:40] not in trail


def test_rotation_publishes_next_keys_then_promotion_retires_the_old(runtime, tenant, audit_trail):
    tenant_row, keys = tenant
    domain_id = add(runtime, tenant)
    before = {a: sel for a, _s, sel in key_states(runtime, tenant, domain_id)}
    with runtime.bound_session(keys) as session:
        created = service.rotate_keys(session, tenant_row.id, domain_id, actor=ADMIN)
        assert {k.state for k in created} == {"next"}
        with pytest.raises(Conflict):
            service.rotate_keys(session, tenant_row.id, domain_id, actor=ADMIN)
        # Next keys are published but do not sign yet.
        domain = service.get_domain(session, tenant_row.id, domain_id)
        dkim_records = [
            r for r in service.records_for(session, domain, runtime.settings) if r.kind == "dkim"
        ]
        assert sorted(r.key_state for r in dkim_records) == ["active", "active", "next", "next"]
        signers = service.signing_keys_for(session, keys, "clinic.example")
        assert {s.selector for s in signers} == set(before.values())
        assert service.promote_next_keys(session, tenant_row.id, domain_id, actor=ADMIN) == 2
    states = key_states(runtime, tenant, domain_id)
    assert sorted((a, s) for a, s, _ in states) == [
        ("ed25519-sha256", "active"),
        ("ed25519-sha256", "retired"),
        ("rsa-sha256", "active"),
        ("rsa-sha256", "retired"),
    ]
    retired = {sel for _a, s, sel in states if s == "retired"}
    assert retired == set(before.values())
    with runtime.bound_session(keys) as session:
        rows = session.scalars(select(DkimKey).where(DkimKey.domain_id == domain_id)).all()
        # The private half of a retired key is destroyed.
        assert all((row.private_key is None) == (row.state == "retired") for row in rows)
        signers = service.signing_keys_for(session, keys, "clinic.example")
        assert not {s.selector for s in signers} & retired
        domain = service.get_domain(session, tenant_row.id, domain_id)
        published = {r.selector for r in service.records_for(session, domain, runtime.settings)}
        assert not published & retired
        with pytest.raises(Conflict):
            service.promote_next_keys(session, tenant_row.id, domain_id, actor=ADMIN)
    assert len(audit_trail(tenant, "dkim_key.promote")) == 2
    assert len(audit_trail(tenant, "dkim_key.rotate")) == 1


def test_the_worker_promotes_next_keys_after_the_delay(runtime, tenant):
    tenant_row, keys = tenant
    domain_id = add(runtime, tenant)
    with runtime.bound_session(keys) as session:
        service.rotate_keys(session, tenant_row.id, domain_id, actor=ADMIN)
    delay = timedelta(hours=72)
    with runtime.database.session() as session:
        service.promote_due_keys(session, now=utcnow(), delay=delay)
    assert "next" in {s for _a, s, _sel in key_states(runtime, tenant, domain_id)}
    with runtime.database.session() as session:
        # No tenant keys bound: promotion never needs to decrypt a key.
        assert service.promote_due_keys(session, now=utcnow() + delay, delay=delay) >= 2
    assert {s for _a, s, _sel in key_states(runtime, tenant, domain_id)} == {"active", "retired"}


@pytest.mark.parametrize(
    "name",
    [
        "",
        "localhost",
        "-bad.example",
        "a..example",
        "x" * 64 + ".example",
        "10.0.0.1",
        "exa mple.org",
    ],
)
def test_invalid_domain_names_are_refused(runtime, tenant, name):
    with pytest.raises(ValidationFailed):
        add(runtime, tenant, name)


def test_an_international_domain_is_stored_in_punycode(runtime, tenant):
    domain_id = add(runtime, tenant, "Bücher.example")
    with runtime.bound_session(tenant[1]) as session:
        assert service.get_domain(session, tenant[0].id, domain_id).name == "xn--bcher-kva.example"


def test_the_same_domain_twice_is_a_conflict(runtime, tenant):
    add(runtime, tenant)
    with pytest.raises(Conflict):
        add(runtime, tenant, "CLINIC.example")


def test_deleting_a_domain_removes_its_keys(runtime, tenant, audit_trail):
    domain_id = add(runtime, tenant)
    with runtime.bound_session(tenant[1]) as session:
        service.delete_domain(session, tenant[0].id, domain_id, actor=ADMIN)
    with runtime.bound_session(tenant[1]) as session:
        assert session.scalars(select(DkimKey).where(DkimKey.domain_id == domain_id)).all() == []
        assert service.signing_keys_for(session, tenant[1], "clinic.example") == []
    assert audit_trail(tenant, "domain.delete")[0].details == {"domain": "clinic.example"}


def test_key_record_value_format():
    assert key_record_value("ed25519-sha256", "abc") == "v=DKIM1; k=ed25519; p=abc"
    assert key_record_value("rsa-sha256", "abc") == "v=DKIM1; k=rsa; p=abc"
