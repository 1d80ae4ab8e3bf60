"""Protection end to end over real SMTP on loopback (aiosmtpd peers, a real DNS
server): PHI to a recipient with an S/MIME certificate or an OpenPGP key arrives
encrypted and the independent tools read it; TLS-required delivery goes over
verified STARTTLS or, when the receiver offers none, to the portal, never in the
clear; a blocked message reaches nobody."""

from __future__ import annotations

import logging
import subprocess
import uuid
from datetime import timedelta
from email import message_from_bytes
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

import pytest

from carepost.audit.service import SYSTEM
from carepost.core.database import utcnow
from carepost.e2ee import directory
from carepost.messages.delivery import deliver_due_messages
from carepost.protection.models import DomainTlsRecord
from tests.canaries import phi_value
from tests.delivery.smtp_peers import (
    LoopbackDns,
    running_peer,
    self_signed_certificate,
    server_tls_context,
)
from tests.protection.protection_support import decisions, message, portal_notices, send

SSN = "536-22-8145"
CLINIC = "care@clinic.example"
pytestmark = pytest.mark.usefixtures("empty_queue")

FAST = {
    "smtp_connect_timeout": 3.0,
    "smtp_command_timeout": 3.0,
    "smtp_data_timeout": 3.0,
    "mta_sts_enabled": False,
}


def smarthost_runtime(with_settings, port: int):
    return with_settings(
        smtp_mode="smarthost", smarthost_host="127.0.0.1", smarthost_port=port,
        smarthost_tls="none", **FAST,
    )  # fmt: skip


def mx_runtime(with_settings, dns: LoopbackDns, port: int, ca_file: Path | None = None):
    return with_settings(
        smtp_mode="mx", dns_nameserver="127.0.0.1", dns_port=dns.port, mx_port=port,
        mx_allow_non_global=True, tls_ca_file=ca_file, **FAST,
    )  # fmt: skip


def enforced_mta_sts(runtime, domain: str) -> None:
    """The domain's MTA-STS policy as cached after a fetch: enforce, mx.<domain>."""
    now = utcnow()
    with runtime.database.session() as session:
        session.add(
            DomainTlsRecord(
                domain=domain, mta_sts_id="1", mta_sts_mode="enforce", mta_sts_mx=[f"mx.{domain}"],
                mta_sts_max_age=86400, mta_sts_expires_at=now + timedelta(days=1),
                dane_usable=False, starttls_seen=False, checked_at=now,
                next_check_at=now + timedelta(hours=1),
            )
        )  # fmt: skip


def mx_records(domain: str) -> dict[str, dict[str, list[str]]]:
    return {domain: {"MX": [f"10 mx.{domain}."]}, f"mx.{domain}": {"A": ["127.0.0.1"]}}


def openssl(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, timeout=60, check=False
    )


def test_phi_to_a_recipient_with_an_smime_certificate_arrives_encrypted_and_signed(
    runtime, tenant, with_settings, test_ca, tmp_path
):
    canary = phi_value("diagnosis")
    to = f"pat-{uuid.uuid4().hex[:8]}@patient.example"
    recipient, sender = test_ca.issue(to), test_ca.issue(CLINIC)
    recipient.write(tmp_path, "patient")
    (tmp_path / "ca.pem").write_bytes(test_ca.cert_pem)
    with runtime.bound_session(tenant[1]) as session:
        directory.add_key(
            session, tenant[1].tenant_id, address=to, material=recipient.cert_pem,
            source="upload", actor=SYSTEM,
        )  # fmt: skip
        directory.add_smime_signing_identity(
            session, tenant[1].tenant_id, address=CLINIC, certificate_pem=sender.cert_pem,
            private_key_pem=sender.key_pem, actor=SYSTEM,
        )  # fmt: skip
    message_id = send(runtime, tenant, to=to, text=f"Result for {canary}: SSN {SSN}")

    with running_peer() as peer:
        deliver_due_messages(smarthost_runtime(with_settings, peer.port), budget_seconds=30)
    [received] = peer.messages
    assert canary.encode() not in received.data and SSN.encode() not in received.data
    assert message_from_bytes(received.data, policy=SMTP_POLICY).get_content_type() == (
        "application/pkcs7-mime"
    )
    (tmp_path / "wire.eml").write_bytes(received.data)
    decrypted = openssl(
        "cms", "-decrypt", "-recip", tmp_path / "patient.crt", "-inkey",
        tmp_path / "patient.key", "-in", tmp_path / "wire.eml", "-out", tmp_path / "signed.eml",
    )  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr
    verified = openssl(
        "cms", "-verify", "-CAfile", tmp_path / "ca.pem", "-in", tmp_path / "signed.eml",
        "-inform", "SMIME",
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert canary.encode() in verified.stdout
    stored = message(runtime, tenant, message_id)
    assert (stored.state, stored.protection_method) == ("delivered", "smime")
    assert [d["method"] for d in decisions(runtime, message_id)] == ["smime"]


def test_phi_to_a_recipient_with_an_openpgp_key_arrives_encrypted(
    runtime, tenant, with_settings, make_gpg
):
    canary = phi_value("diagnosis")
    to = f"pat-{uuid.uuid4().hex[:8]}@patient.example"
    gpg = make_gpg("patient")
    public = gpg.new_key(f"Pat <{to}>")
    with runtime.bound_session(tenant[1]) as session:
        directory.add_key(
            session, tenant[1].tenant_id, address=to, material=public, source="upload",
            actor=SYSTEM,
        )  # fmt: skip
    message_id = send(runtime, tenant, to=to, text=f"Result for {canary}: SSN {SSN}")

    with running_peer() as peer:
        deliver_due_messages(smarthost_runtime(with_settings, peer.port), budget_seconds=30)
    [received] = peer.messages
    assert canary.encode() not in received.data
    outer = message_from_bytes(received.data, policy=SMTP_POLICY)
    assert outer.get_content_type() == "multipart/encrypted"
    _control, encrypted = outer.get_payload()
    result = gpg.run("--decrypt", data=encrypted.get_payload(decode=True))
    assert result.returncode == 0, result.stderr
    assert canary.encode() in result.stdout
    assert message(runtime, tenant, message_id).protection_method == "openpgp"


def test_tls_required_to_a_receiver_without_starttls_goes_to_the_portal(
    runtime, tenant, with_settings
):
    domain = f"sts-{uuid.uuid4().hex[:8]}.example"
    enforced_mta_sts(runtime, domain)
    canary = phi_value("name")
    to = f"pat@{domain}"
    message_id = send(runtime, tenant, to=to, text=f"{canary}: SSN {SSN}")

    with running_peer() as peer, LoopbackDns(mx_records(domain)) as dns:
        deliver_due_messages(mx_runtime(with_settings, dns, peer.port), budget_seconds=30)
        received = peer.messages

    stored = message(runtime, tenant, message_id)
    assert (stored.state, stored.state_reason) == ("delivered", "held for secure portal pickup")
    assert stored.protection_method == "portal"
    assert stored.protection_reasons[-2:] == ["tls.unavailable", "fallback.portal"]
    [notice] = [n for n in portal_notices(runtime, tenant) if n.to_address == to]
    # Nothing of the message reached the receiver; at most the portal's notice did.
    for item in received:
        assert canary.encode() not in item.data and SSN.encode() not in item.data
    assert {r.data.split(b"Message-ID: <")[1][:36].decode() for r in received} <= {str(notice.id)}
    assert [d["method"] for d in decisions(runtime, message_id)] == ["tls_required", "portal"]


def test_tls_required_to_a_receiver_with_starttls_is_delivered_over_verified_tls(
    runtime, tenant, with_settings, tmp_path
):
    domain = f"sts-{uuid.uuid4().hex[:8]}.example"
    enforced_mta_sts(runtime, domain)
    certificate = self_signed_certificate(tmp_path, names=(f"mx.{domain}",))
    message_id = send(runtime, tenant, to=f"pat@{domain}", text=f"SSN {SSN}")

    with (
        running_peer(tls_context=server_tls_context(certificate)) as peer,
        LoopbackDns(mx_records(domain)) as dns,
    ):
        deliver_due_messages(
            mx_runtime(with_settings, dns, peer.port, ca_file=certificate), budget_seconds=30
        )
        [received] = peer.messages

    assert received.tls is True
    stored = message(runtime, tenant, message_id)
    assert (stored.state, stored.protection_method, stored.protection_tls) == (
        "delivered",
        "tls_required",
        "verified",
    )


def test_tls_required_with_an_untrusted_certificate_never_falls_back_to_plaintext(
    runtime, tenant, with_settings, tmp_path
):
    domain = f"sts-{uuid.uuid4().hex[:8]}.example"
    enforced_mta_sts(runtime, domain)
    certificate = self_signed_certificate(tmp_path, names=(f"mx.{domain}",))
    message_id = send(runtime, tenant, to=f"pat@{domain}", text=f"SSN {SSN}")

    with (
        running_peer(tls_context=server_tls_context(certificate)) as peer,
        LoopbackDns(mx_records(domain)) as dns,
    ):
        # No CA file: the self-signed certificate is not trusted.
        deliver_due_messages(mx_runtime(with_settings, dns, peer.port), budget_seconds=30)
        received = peer.messages

    assert all(SSN.encode() not in r.data for r in received)
    assert message(runtime, tenant, message_id).protection_method == "portal"


def test_a_blocked_message_fails_and_reaches_nobody(runtime, tenant, with_settings):
    message_id = send(
        runtime, tenant, to="pat@patient.example", text="Card 4111 1111 1111 1111 on file"
    )
    with running_peer() as peer:
        deliver_due_messages(smarthost_runtime(with_settings, peer.port), budget_seconds=30)
        assert peer.messages == []
    stored = message(runtime, tenant, message_id)
    assert stored.state == "failed"
    assert "dlp.block:credit_card" in stored.state_reason


def test_decisions_fallbacks_and_blocks_leave_no_phi_in_the_logs(
    runtime, tenant, with_settings, log_file
):
    start = log_file.stat().st_size if log_file.exists() else 0
    domain = f"sts-{uuid.uuid4().hex[:8]}.example"
    enforced_mta_sts(runtime, domain)
    local = phi_value("mailbox").lower()
    canary = phi_value("name")
    ids = [
        send(runtime, tenant, to=f"{local}@{domain}", text=f"{canary}: SSN {SSN}"),
        send(runtime, tenant, to=f"{local}@patient.example", text=f"{canary} DOB: 03/14/1975"),
        send(runtime, tenant, to=f"{local}@patient.example", text="Card 4111 1111 1111 1111"),
    ]
    with running_peer() as peer, LoopbackDns(mx_records(domain)) as dns:
        deliver_due_messages(mx_runtime(with_settings, dns, peer.port), budget_seconds=30)
    for handler in logging.getLogger().handlers:
        handler.flush()
    with log_file.open(encoding="utf-8", errors="replace") as handle:
        handle.seek(start)
        written = handle.read()
    for secret in (local, canary, SSN, "4111 1111 1111 1111"):
        assert secret not in written
    for message_id in ids:
        for entry in decisions(runtime, message_id):
            assert canary not in str(entry) and SSN not in str(entry) and local not in str(entry)
        stored = message(runtime, tenant, message_id)
        assert canary not in stored.state_reason and local not in stored.state_reason


def test_a_delivery_over_starttls_is_remembered_for_the_domain(
    runtime, tenant, with_settings, tmp_path
):
    domain = f"seen-{uuid.uuid4().hex[:8]}.example"
    certificate = self_signed_certificate(tmp_path, names=(f"mx.{domain}",))
    send(runtime, tenant, to=f"pat@{domain}", text="See you at the open day.")
    with (
        running_peer(tls_context=server_tls_context(certificate)) as peer,
        LoopbackDns(mx_records(domain)) as dns,
    ):
        deliver_due_messages(mx_runtime(with_settings, dns, peer.port), budget_seconds=30)
        assert [m.tls for m in peer.messages] == [True]
    with runtime.database.session() as session:
        row = session.get(DomainTlsRecord, domain)
        assert row is not None and row.starttls_seen is True
