"""The organization's S/MIME trust settings applied when sending (policy document
``smime_trust``): a recipient certificate that chains to a trusted CA and is shown
not revoked by a real OCSP responder on loopback is used; a revoked one, one that
does not chain, or (hard-fail) one whose status nobody can give is not, and the
message goes to the portal with the reason in its decision and the audit trail.
Decisions are cached per certificate: sending again asks the responder nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.e2ee import directory, trust
from tests.e2ee.smimetrust_pki import Authority, Responder, dead_url, make_ca, make_leaf, serve
from tests.protection.protection_support import message, send
from tests.protection.test_protection_stage import SSN, patient, prepare, set_policy

pytestmark = pytest.mark.usefixtures("empty_queue")


@pytest.fixture(scope="module")
def root() -> Authority:
    return make_ca("carepost sending trust root")


@pytest.fixture(scope="module")
def intermediate(root: Authority) -> Authority:
    return make_ca("carepost sending trust intermediate", root)


@pytest.fixture
def responder(intermediate: Authority) -> Iterator[Responder]:
    with serve(Responder(intermediate)) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_decisions() -> Iterator[None]:
    trust.forget_decisions()
    yield
    trust.forget_decisions()


def _pem(certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _trusting(runtime, tenant, root: Authority, revocation: str) -> None:
    set_policy(
        runtime,
        tenant,
        {
            "smime_trust": {
                "require_chain": True,
                "revocation": revocation,
                "use_system_store": False,
                "trusted_cas": [root.pem.decode("ascii")],
            }
        },
    )


def _recipient(runtime, tenant, intermediate: Authority, **urls) -> tuple[str, int]:
    """A recipient whose certificate (uploaded with its intermediate) is in the directory."""
    to = patient()
    leaf, _key = make_leaf(intermediate, to, **urls)
    with runtime.bound_session(tenant[1]) as session:
        directory.add_key(
            session,
            tenant[1].tenant_id,
            address=to,
            material=(_pem(leaf) + _pem(intermediate.certificate)).encode("ascii"),
            source="upload",
            actor=SYSTEM,
        )
    return to, leaf.serial_number


def _sent(runtime, tenant, to: str):
    message_id = send(runtime, tenant, to=to, text=f"SSN {SSN}")
    prepare(runtime, tenant, [message_id])
    return message(runtime, tenant, message_id)


def _audited_reasons(runtime, message_id) -> list[str]:
    with runtime.database.session() as session:
        entry = session.scalar(
            select(AuditEvent).where(
                AuditEvent.action == "message.protection", AuditEvent.object_id == str(message_id)
            )
        )
        assert entry is not None
        return list(entry.details["reasons"])


def test_a_chained_certificate_not_revoked_encrypts_and_the_answer_is_cached(
    runtime, tenant, root, intermediate, responder
):
    _trusting(runtime, tenant, root, "hard")
    to, _serial = _recipient(runtime, tenant, intermediate, ocsp_url=f"{responder.url}/ocsp")
    stored = _sent(runtime, tenant, to)
    assert stored.protection_method == "smime", stored.protection_reasons
    assert responder.requests == ["POST /ocsp"]
    # The next message to the same certificate asks the responder nothing.
    assert _sent(runtime, tenant, to).protection_method == "smime"
    assert responder.requests == ["POST /ocsp"]


def test_a_revoked_certificate_is_not_used_and_the_reason_is_audited(
    runtime, tenant, root, intermediate, responder
):
    _trusting(runtime, tenant, root, "soft")
    to, serial = _recipient(runtime, tenant, intermediate, ocsp_url=f"{responder.url}/ocsp")
    intermediate.revoked.add(serial)
    try:
        stored = _sent(runtime, tenant, to)
    finally:
        intermediate.revoked.discard(serial)
    assert stored.protection_method == "portal"
    assert "e2e.smime:revoked" in stored.protection_reasons
    assert "fallback.portal" in stored.protection_reasons
    reasons = _audited_reasons(runtime, stored.id)
    assert "e2e.smime:revoked" in reasons
    assert not any(to in r for r in reasons)


def test_no_revocation_status_soft_fail_encrypts_hard_fail_does_not(
    runtime, tenant, root, intermediate
):
    _trusting(runtime, tenant, root, "soft")
    to, _serial = _recipient(runtime, tenant, intermediate, ocsp_url=f"{dead_url()}/ocsp")
    assert _sent(runtime, tenant, to).protection_method == "smime"

    trust.forget_decisions()
    _trusting(runtime, tenant, root, "hard")
    stored = _sent(runtime, tenant, to)
    assert stored.protection_method == "portal"
    assert "e2e.smime:revocation_unknown" in stored.protection_reasons


def test_a_certificate_from_an_untrusted_ca_is_skipped_when_a_chain_is_required(
    runtime, tenant, root, test_ca
):
    _trusting(runtime, tenant, root, "off")
    to = patient()
    with runtime.bound_session(tenant[1]) as session:
        directory.add_key(
            session,
            tenant[1].tenant_id,
            address=to,
            material=test_ca.issue(to).cert_pem,
            source="upload",
            actor=SYSTEM,
        )
    stored = _sent(runtime, tenant, to)
    assert stored.protection_method == "portal"
    assert "e2e.smime:untrusted" in stored.protection_reasons

    # Without the chain requirement (the default) the administrator's upload is used.
    set_policy(runtime, tenant, {})
    assert _sent(runtime, tenant, to).protection_method == "smime"


def test_trusted_cas_must_be_ca_certificates(client, tenant, make_api_key, intermediate):
    leaf, _key = make_leaf(intermediate, "someone@patient.example")
    answer = client.put(
        "/api/v1/policy",
        json={"document": {"smime_trust": {"trusted_cas": [_pem(leaf)]}}},
        headers=make_api_key(tenant),
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    [error] = answer.json()["errors"]
    assert error["pointer"] == "#/body/document/smime_trust/trusted_cas/0"
    assert "not a CA certificate" in error["detail"]
    garbage = client.put(
        "/api/v1/policy",
        json={"document": {"smime_trust": {"trusted_cas": ["hello"]}}},
        headers=make_api_key(tenant),
    )
    assert garbage.status_code == 422
    assert "not a PEM X.509 certificate" in garbage.json()["errors"][0]["detail"]


def test_a_trusted_ca_that_expires_after_saving_keeps_the_policy_readable(
    runtime, tenant, intermediate, responder
):
    from datetime import timedelta

    from carepost.policy.models import StoredPolicy
    from tests.e2ee.smimetrust_pki import NOW

    _trusting(runtime, tenant, make_ca("soon expired root"), "off")
    expired = make_ca(
        "expired root", not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1)
    )
    with runtime.bound_session(tenant[1]) as session:  # as if it had expired since
        row = session.scalar(
            select(StoredPolicy).where(StoredPolicy.tenant_id == tenant[1].tenant_id)
        )
        document = dict(row.document)
        document["smime_trust"] = {
            **document["smime_trust"],
            "trusted_cas": [expired.pem.decode("ascii")],
        }
        row.document = document
    to, _serial = _recipient(runtime, tenant, intermediate, ocsp_url=f"{responder.url}/ocsp")
    stored = _sent(runtime, tenant, to)  # the policy still loads; the chain is refused
    assert stored.protection_method == "portal"
    assert "e2e.smime:untrusted" in stored.protection_reasons


def test_an_untrusted_certificate_gives_way_to_the_recipients_openpgp_key(
    runtime, tenant, root, test_ca, make_gpg
):
    """A recipient with a certificate the policy refuses and an OpenPGP key: the message
    is decided again without the certificate and goes out encrypted with the key, the
    refused certificate named as a reason, not to the portal."""
    _trusting(runtime, tenant, root, "off")
    to = patient()
    public = make_gpg("patient").new_key(f"Pat <{to}>")
    with runtime.bound_session(tenant[1]) as session:
        for material in (test_ca.issue(to).cert_pem, public):
            directory.add_key(
                session, tenant[1].tenant_id, address=to, material=material, source="upload",
                actor=SYSTEM,
            )  # fmt: skip
    stored = _sent(runtime, tenant, to)
    assert stored.protection_method == "openpgp"
    assert stored.protection_reasons is None or "fallback.portal" not in stored.protection_reasons
    reasons = _audited_reasons(runtime, stored.id)
    assert "e2e.smime:untrusted" in reasons and "e2e.openpgp:valid" in reasons
    assert to not in " ".join(reasons)
