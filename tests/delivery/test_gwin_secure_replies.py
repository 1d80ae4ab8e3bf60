"""Inbound secure replies end to end, over real SMTP on loopback: a patient's reply
encrypted with ``openssl cms -encrypt`` to the organization's certificate, or with
``gpg`` to its OpenPGP key, is received by carepost's inbound listener, stored before
250, decrypted, its signature checked (signer recorded, key discovered) and handed
over STARTTLS to an aiosmtpd receiver standing in for the organization's mail
server. Undecryptable replies are forwarded as received with a note; addresses of
no organization's verified domain with a route are refused (no relay); a receiver
without STARTTLS gets nothing in the clear."""

from __future__ import annotations

import base64
import smtplib
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from carepost.audit.service import SYSTEM
from carepost.delivery.inbound import inbound_controller
from carepost.e2ee import directory
from carepost.e2ee.models import RecipientKey
from carepost.gateway import replies
from carepost.gateway.models import InboundReply
from tests.canaries import phi_value
from tests.delivery.smtp_peers import running_peer, self_signed_certificate, server_tls_context
from tests.e2ee.conftest import make_gpg  # noqa: F401 - fixture
from tests.e2ee.e2ee_pki import TestCA
from tests.environment import free_port

PATIENT = "pat@patient.example"
ORG = "care@clinic.example"  # replaced per test by the tenant's own domain (below)


@pytest.fixture
def org_domain() -> str:
    # Every test tenant verifies clinic.example; a domain two organizations verified
    # gets no replies (ambiguous), so each test's organization has a domain of its own.
    return f"r{uuid.uuid4().hex[:10]}.clinic.example"


@pytest.fixture
def tenant(make_tenant, org_domain):
    global ORG
    ORG = f"care@{org_domain}"
    return make_tenant(verified_senders=(org_domain,))


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture
def organization(runtime, tenant, ca, tmp_path):
    """The tenant's S/MIME identity (certificate on disk for openssl) and OpenPGP key."""
    issued = ca.issue(ORG)
    cert_path, _key_path = issued.write(tmp_path, "org")
    with runtime.bound_session(tenant[1]) as session:
        directory.add_smime_signing_identity(
            session,
            tenant[0].id,
            address="*",
            certificate_pem=issued.cert_pem,
            private_key_pem=issued.key_pem,
            actor=SYSTEM,
        )
        pgp = directory.create_openpgp_signing_key(
            session, tenant[0].id, address=ORG, name="Clinic", actor=SYSTEM
        )
        pgp_public = pgp.certificate.encode("ascii")
        pgp_fingerprint = pgp.fingerprint
    return {"smime_cert": cert_path, "pgp_public": pgp_public, "pgp_fingerprint": pgp_fingerprint}


@pytest.fixture
def receiver(tmp_path):
    """The organization's own mail server: aiosmtpd requiring STARTTLS."""
    directory_path = tmp_path / "receiver"
    directory_path.mkdir()
    cert = self_signed_certificate(directory_path, names=("localhost",))
    with running_peer(tls_context=server_tls_context(cert), require_starttls=True) as peer:
        peer.cert = cert
        yield peer


@pytest.fixture
def route(runtime, tenant, receiver):
    with runtime.bound_session(tenant[1]) as session:
        replies.set_route(
            session,
            tenant[0].id,
            host="localhost",
            port=receiver.port,
            tls_mode="verify",
            ca_certificate=receiver.cert.read_text(),
            actor=SYSTEM,
        )


@pytest.fixture
def listener(runtime):
    controller = inbound_controller(runtime, host="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def inner_entity(text: str) -> bytes:
    return crlf(f"Content-Type: text/plain; charset=utf-8\n\n{text}\n".encode())


def openssl(*args: str) -> None:
    done = subprocess.run(["openssl", "cms", *args], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def smime_reply(tmp_path: Path, entity: bytes, recipient_cert: Path) -> bytes:
    source, encrypted = tmp_path / "inner.eml", tmp_path / "reply.eml"
    source.write_bytes(entity)
    openssl(
        "-encrypt", "-binary", "-aes256", "-in", str(source), "-out", str(encrypted),
        "-from", PATIENT, "-to", ORG, "-subject", "Re: your results", str(recipient_cert),
    )  # fmt: skip
    return crlf(encrypted.read_bytes())


def send(listener, data: bytes, to=None) -> tuple[int, bytes]:
    to = to or (ORG,)
    with smtplib.SMTP(listener.hostname, listener.port, timeout=30) as smtp:
        smtp.ehlo("mx.patient.example")
        code, _ = smtp.mail(PATIENT)
        assert code == 250
        for address in to:
            code, message = smtp.rcpt(address)
            if code != 250:
                return code, message
        return smtp.data(data)


def wait_for(runtime, tenant, predicate, seconds: float = 60.0) -> InboundReply:
    deadline = time.monotonic() + seconds
    while True:
        with runtime.tenant_session(tenant[0].id) as session:
            rows = list(session.scalars(select(InboundReply).where(
                InboundReply.tenant_id == tenant[0].id)))  # fmt: skip
            for row in rows:
                _ = (row.mail_from, row.recipients)
            session.expunge_all()
        found = [r for r in rows if predicate(r)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, [(r.state, r.last_error) for r in rows]
        time.sleep(0.2)


def test_smime_reply_is_decrypted_verified_and_delivered_over_tls(
    runtime, tenant, organization, receiver, route, listener, ca, tmp_path, audit_trail
):
    canary = phi_value("diagnosis")
    signer = ca.issue(PATIENT)
    signer_cert, signer_key = signer.write(tmp_path, "patient")
    (tmp_path / "plain.eml").write_bytes(inner_entity(f"My symptoms: {canary}"))
    openssl(
        "-sign", "-in", str(tmp_path / "plain.eml"), "-out", str(tmp_path / "signed.eml"),
        "-signer", str(signer_cert), "-inkey", str(signer_key),
    )  # fmt: skip
    data = smime_reply(
        tmp_path, crlf((tmp_path / "signed.eml").read_bytes()), organization["smime_cert"]
    )
    assert canary.encode() not in data
    code, answer = send(listener, data)
    assert code == 250, answer
    reply = wait_for(runtime, tenant, lambda r: r.state == "delivered")
    [got] = receiver.messages
    assert got.tls and got.mail_from == PATIENT and got.rcpt_tos == [ORG]
    assert canary.encode() in got.data  # decrypted for the organization's server
    assert b"X-Carepost-Reply: decrypted; method=smime" in got.data
    assert b"Subject: Re: your results" in got.data
    assert (reply.method, reply.decrypted, reply.signature) == ("smime", True, "valid")
    assert reply.signer_fingerprint and reply.signer_fingerprint.encode() in got.data
    with runtime.tenant_session(tenant[0].id) as session:
        stored = session.get(InboundReply, reply.id)
        assert base64.b64decode(stored.raw) == data  # as it came, never decrypted at rest
        keys = session.scalars(
            select(RecipientKey).where(RecipientKey.tenant_id == tenant[0].id)
        ).all()
        assert [(k.kind, k.source, k.fingerprint) for k in keys] == [
            ("smime", "received", reply.signer_fingerprint)
        ]
    [received] = audit_trail(tenant, "inbound_reply.receive")
    [delivered] = audit_trail(tenant, "inbound_reply.deliver")
    assert delivered.details["signature"] == "valid" and delivered.details["keys_discovered"] == 1
    assert canary not in str(delivered.details) + str(received.details)
    assert PATIENT not in str(delivered.details) + str(received.details)


@pytest.mark.parametrize(("compress", "signature"), [(False, "valid"), (True, "unchecked")])
def test_pgp_reply_is_decrypted_and_its_signature_checked(
    runtime, tenant, organization, receiver, route, listener, make_gpg, audit_trail,  # noqa: F811
    compress, signature,
):  # fmt: skip
    canary = phi_value("medication")
    gpg = make_gpg("patient")
    patient_public = gpg.new_key(f"Pat <{PATIENT}>")
    assert gpg.run("--import", data=organization["pgp_public"]).returncode == 0
    # GnuPG compresses by default; pysequoia verifies a signature only outside one.
    compression = [] if compress else ["--compress-algo", "none"]
    encrypted = gpg.run(
        *compression, "--armor", "--trust-model", "always", "--encrypt", "--sign",
        "-u", PATIENT, "-r", organization["pgp_fingerprint"],
        data=inner_entity(f"Refill please: {canary}"),
    )  # fmt: skip
    assert encrypted.returncode == 0, encrypted.stderr
    keydata = base64.b64encode(gpg.run("--export", PATIENT).stdout).decode()
    assert patient_public
    folded = "\n ".join(keydata[i : i + 76] for i in range(0, len(keydata), 76))
    autocrypt = "Autocrypt: addr=" + PATIENT + "; keydata=\n " + folded
    data = crlf(
        (
            f"From: Pat <{PATIENT}>\nTo: {ORG}\nSubject: Re: refill\n"
            f"Message-ID: <{uuid.uuid4()}@patient.example>\n{autocrypt}\n"
            "MIME-Version: 1.0\n"
            'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
            ' boundary="b1"\n\n'
            "--b1\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n"
            "--b1\nContent-Type: application/octet-stream\n\n"
        ).encode()
        + encrypted.stdout
        + b"\n--b1--\n"
    )
    code, answer = send(listener, data)
    assert code == 250, answer
    reply = wait_for(runtime, tenant, lambda r: r.state == "delivered")
    [got] = receiver.messages
    assert canary.encode() in got.data and b"method=openpgp" in got.data
    assert (reply.method, reply.decrypted, reply.signature) == ("openpgp", True, signature)
    assert len(reply.signer_fingerprint) == (40 if signature == "valid" else 0)
    [delivered] = audit_trail(tenant, "inbound_reply.deliver")
    assert delivered.details["keys_discovered"] == 1  # the Autocrypt key, source received


def test_undecryptable_reply_is_forwarded_as_received_with_a_note(
    runtime, tenant, organization, receiver, route, listener, ca, tmp_path
):
    stranger, _ = ca.issue("someone@else.example").write(tmp_path, "stranger")
    data = smime_reply(tmp_path, inner_entity("for someone else"), stranger)
    code, _ = send(listener, data)
    assert code == 250
    reply = wait_for(runtime, tenant, lambda r: r.state == "delivered")
    [got] = receiver.messages
    assert b"X-Carepost-Reply: not-decrypted; method=smime" in got.data
    assert got.data.endswith(data.split(b"\r\n\r\n", 1)[1])  # the body as it came
    assert (reply.method, reply.decrypted) == ("smime", False)


def test_forged_carepost_headers_are_dropped(
    runtime, tenant, organization, receiver, route, listener
):
    data = crlf(
        f"From: {PATIENT}\nTo: {ORG}\nSubject: hi\n"
        "X-Carepost-Reply-Signature: valid; signer=FORGED\n\nplain reply\n".encode()
    )
    assert send(listener, data)[0] == 250
    wait_for(runtime, tenant, lambda r: r.state == "delivered")
    [got] = receiver.messages
    assert b"FORGED" not in got.data and b"not-encrypted" in got.data


def test_no_relay_for_other_domains_or_organizations_without_a_route(
    runtime, tenant, make_tenant, organization, route, listener
):
    for address in ("victim@gmail.example", "x@a.example.evil", f"{ORG}@evil.example",
                    f"{ORG.replace('@', '%')}@evil.example", f"@evil.example:{ORG}"):  # fmt: skip
        assert send(listener, b"Subject: x\r\n\r\nx\r\n", to=(address,))[0] in (550, 553)
    other = make_tenant(verified_senders=("lab.example",))  # verified, but no route
    assert other
    assert send(listener, b"Subject: x\r\n\r\nx\r\n", to=("front@lab.example",))[0] == 550
    assert send(listener, b"Subject: x\r\n\r\nx\r\n", to=("someone@unverified.example",))[0] == 550
    with runtime.bound_session(tenant[1]) as session:
        route_row = replies.get_route(session, tenant[0].id)
        route_row.enabled = False
    assert send(listener, b"Subject: x\r\n\r\nx\r\n", to=(ORG,))[0] == 550
    with runtime.database.session() as session:
        assert (
            session.scalar(select(InboundReply.id).where(InboundReply.tenant_id == tenant[0].id))
            is None
        )


def test_bare_lf_is_refused_and_nothing_stored(runtime, tenant, route, listener):
    code, _ = send(listener, b"Subject: x\r\n\r\nline\nsmuggled\r\n")
    assert code == 550
    with runtime.database.session() as session:
        assert (
            session.scalar(select(InboundReply.id).where(InboundReply.tenant_id == tenant[0].id))
            is None
        )


def test_receiver_without_starttls_gets_nothing_and_the_reply_is_kept(
    runtime, tenant, organization, listener, tmp_path
):
    with running_peer() as plain:  # no STARTTLS offered
        with runtime.bound_session(tenant[1]) as session:
            replies.set_route(
                session, tenant[0].id, host="localhost", port=plain.port,
                tls_mode="encrypt", actor=SYSTEM,
            )  # fmt: skip
        canary = phi_value("name")
        data = crlf(f"From: {PATIENT}\nTo: {ORG}\nSubject: hi\n\n{canary}\n".encode())
        assert send(listener, data)[0] == 250
        reply = wait_for(runtime, tenant, lambda r: r.state == "deferred")
        assert plain.messages == []
        assert "STARTTLS" in reply.last_error and reply.attempts == 1
