"""Mail relayed through the SMTP gateway is protected as policy says, with no action
from the customer's server: PHI to a recipient whose S/MIME certificate carepost
knows arrives encrypted (``openssl cms -decrypt`` reads it), and PHI to a recipient
without a key, over a hop without verified TLS, waits at the portal while the
receiver gets only the notice."""

from __future__ import annotations

import subprocess
import uuid
from email import message_from_bytes
from email.policy import SMTP as SMTP_POLICY

from sqlalchemy import select

from carepost.audit.service import SYSTEM
from carepost.core.runtime import Runtime
from carepost.domains import service as domains
from carepost.e2ee import directory
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Message
from tests.e2ee.conftest import test_ca  # noqa: F401 - the fixture
from tests.gateway.conftest import ADMIN
from tests.protection.protection_support import portal_notices

SSN = "536-22-8145"


def _mime(sender: str, to: str) -> bytes:
    return (
        f"From: Clinic <{sender}>\r\nTo: <{to}>\r\nSubject: Your visit\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Patient SSN {SSN}: your biopsy results are ready.\r\n"
    ).encode()


def _relay(gateway, make_client, tenant, runtime: Runtime, to: str) -> str:
    name = f"relay-{uuid.uuid4().hex[:8]}.example"
    with runtime.bound_session(tenant[1]) as session:
        domain = domains.add_domain(session, tenant[0].id, name=name, actor=ADMIN)
        domain.state = "verified"
    creds = make_client(tenant, sender_domains=[name])
    sender = f"care@{name}"
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        assert smtp.sendmail(sender, [to], _mime(sender, to)) == {}
    return sender


def _no_mta_sts(delivering: Runtime) -> Runtime:
    settings = delivering.settings.model_copy(update={"mta_sts_enabled": False})
    return Runtime(settings, delivering.database, delivering.keyring)


def test_phi_relayed_to_a_recipient_with_a_certificate_arrives_encrypted(
    gateway,
    make_client,
    make_tenant,
    delivering,
    smtp_sink,
    test_ca,  # noqa: F811
    tmp_path,
):
    tenant = make_tenant()
    to = f"pat-{uuid.uuid4().hex[:8]}@patient.example"
    recipient = test_ca.issue(to)
    recipient.write(tmp_path, "patient")
    with delivering.bound_session(tenant[1]) as session:
        directory.add_key(
            session, tenant[0].id, address=to, material=recipient.cert_pem,
            source="upload", actor=SYSTEM,
        )  # fmt: skip
    _relay(gateway, make_client, tenant, delivering, to)

    deliver_due_messages(_no_mta_sts(delivering), budget_seconds=30)
    [received] = smtp_sink.received
    assert SSN.encode() not in received.data
    wire = message_from_bytes(received.data, policy=SMTP_POLICY)
    assert wire.get_content_type() == "application/pkcs7-mime"
    (tmp_path / "wire.eml").write_bytes(received.data)
    decrypted = subprocess.run(
        ["openssl", "cms", "-decrypt", "-recip", str(tmp_path / "patient.crt"),
         "-inkey", str(tmp_path / "patient.key"), "-in", str(tmp_path / "wire.eml")],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr
    assert SSN.encode() in decrypted.stdout


def test_phi_relayed_without_a_key_or_verified_tls_waits_at_the_portal(
    gateway, make_client, make_tenant, delivering, smtp_sink
):
    tenant = make_tenant()
    to = f"lee-{uuid.uuid4().hex[:8]}@patient.example"
    _relay(gateway, make_client, tenant, delivering, to)

    deliver_due_messages(_no_mta_sts(delivering), budget_seconds=30)  # the relayed message
    [notice] = portal_notices(delivering, tenant)
    deliver_due_messages(_no_mta_sts(delivering), budget_seconds=30)  # then its notice
    [received] = smtp_sink.received
    assert received.message["To"] == to
    assert SSN.encode() not in received.data and b"biopsy" not in received.data
    assert received.message["Subject"] == notice.subject != "Your visit"
    with delivering.bound_session(tenant[1]) as session:
        relayed = session.scalars(
            select(Message).where(
                Message.tenant_id == tenant[0].id, Message.created_by_type == "gateway"
            )
        ).one()
        assert (relayed.state, relayed.protection_method) == ("delivered", "portal")
        assert relayed.state_reason == "held for secure portal pickup"
