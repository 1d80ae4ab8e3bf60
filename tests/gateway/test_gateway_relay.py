"""The SMTP gateway on loopback with real clients (smtplib): authenticated relay ends as
queued outbox rows committed before 250 and, delivered by the real worker to a
loopback receiver, arrives as the customer's MIME, DKIM-signed with the tenant's key;
every way to relay without being a known client is refused."""

from __future__ import annotations

import base64
import smtplib
import uuid

import dkim
import pytest
from sqlalchemy import select

from carepost.audit.models import AuditEvent
from carepost.domains import service as domains
from carepost.messages.delivery import deliver_due_messages
from carepost.messages.models import Message
from tests.gateway.conftest import ADMIN

MIME = (
    b"From: Clinic <care@clinic.example>\r\n"
    b"To: Pat <pat@example.org>\r\n"
    b"Subject: Your results\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Your results are ready.\r\n"
    b"--b1\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Your results are ready.</p>\r\n"
    b"--b1--\r\n"
)


def _rows(runtime, tenant) -> list[Message]:
    with runtime.tenant_session(tenant[0].id) as session:
        rows = list(
            session.scalars(
                select(Message)
                .where(Message.tenant_id == tenant[0].id, Message.created_by_type == "gateway")
                .order_by(Message.created_at)
            )
        )
        for row in rows:  # decrypt while the keys are bound
            _ = (row.to_address, row.body, row.subject)
        session.expunge_all()
        return rows


def _send(
    smtp: smtplib.SMTP, data: bytes, *, sender="care@clinic.example", to=("pat@example.org",)
):
    return smtp.sendmail(sender, list(to), data)


def test_authenticated_relay_is_queued_then_delivered_dkim_signed(
    gateway, make_client, make_tenant, delivering, smtp_sink
):
    tenant = make_tenant()
    name = f"signed-{uuid.uuid4().hex[:8]}.example"
    with delivering.bound_session(tenant[1]) as session:
        domain = domains.add_domain(session, tenant[0].id, name=name, actor=ADMIN)
        domain.state = "verified"
        records = domains.records_for(session, domain, delivering.settings)
    creds = make_client(tenant, sender_domains=[name])
    data = MIME.replace(b"clinic.example", name.encode())
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        refused = _send(
            smtp, data, sender=f"care@{name}", to=("pat@example.org", "lee@example.org")
        )
    assert refused == {}
    rows = _rows(gateway.runtime, tenant)
    assert sorted(r.to_address for r in rows) == ["lee@example.org", "pat@example.org"]
    for row in rows:
        assert row.state == "queued" and row.purpose == "transactional"
        assert row.created_by_id == creds.client_id
        assert base64.b64decode(row.body["raw"]) == data
        assert row.subject == "Your results"
    with gateway.runtime.database.session() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.tenant_id == tenant[0].id)
        ).all()
    assert "message.gateway_relay" in actions

    deliver_due_messages(delivering, budget_seconds=30)
    assert len(smtp_sink.received) == 2
    published = {r.name.rstrip("."): "".join(r.strings) for r in records if r.kind == "dkim"}

    def lookup(qname: bytes, timeout: int = 5) -> bytes | None:
        value = published.get(qname.decode().rstrip("."))
        return value.encode() if value else None

    for received in smtp_sink.received:
        assert received.data.startswith(b"DKIM-Signature:")
        assert dkim.DKIM(received.data).verify(dnsfunc=lookup)
        message = received.message
        assert message["X-Carepost-Message"]
        assert str(message["Message-ID"]).strip("<>").endswith("@" + name)
        # The customer's MIME as it came, after carepost's own headers.
        assert received.data.endswith(data.partition(b"\r\n")[2])


def test_a_forged_carepost_header_is_dropped_and_a_message_id_kept(
    gateway, make_client, make_tenant, delivering, smtp_sink
):
    tenant = make_tenant()
    creds = make_client(tenant)
    data = b"X-Carepost-Message: forged\r\nMessage-ID: <own@clinic.example>\r\n" + MIME
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        _send(smtp, data)
    deliver_due_messages(delivering, budget_seconds=30)
    [received] = smtp_sink.received
    assert b"forged" not in received.data
    assert received.message["Message-ID"] == "<own@clinic.example>"


def test_client_identified_by_source_network(gateway, make_client, make_tenant):
    tenant = make_tenant()
    make_client(tenant, networks=["127.0.0.0/8"])
    with gateway.connect() as smtp:
        assert _send(smtp, MIME) == {}
    assert len(_rows(gateway.runtime, tenant)) == 1


def test_client_identified_by_certificate_fingerprint(
    gateway, make_client, make_tenant, client_cert
):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    fingerprint = x509.load_pem_x509_certificate(client_cert.read_bytes()).fingerprint(
        hashes.SHA256()
    )
    tenant = make_tenant()
    make_client(tenant, cert_fingerprints=[fingerprint.hex()])
    with gateway.connect(client_cert=client_cert) as smtp:
        assert _send(smtp, MIME) == {}
    assert len(_rows(gateway.runtime, tenant)) == 1
    # Without the certificate the same connection is nobody.
    with gateway.connect() as smtp, pytest.raises(smtplib.SMTPSenderRefused) as refused:
        _send(smtp, MIME)
    assert refused.value.smtp_code == 530


# --- no open relay ---------------------------------------------------------------------


def _mail_reply(smtp: smtplib.SMTP, sender: str = "care@clinic.example") -> int:
    code, _ = smtp.mail(sender)
    return code


def test_plain_text_session_can_do_nothing(gateway, make_client, make_tenant):
    tenant = make_tenant()
    creds = make_client(tenant, networks=["127.0.0.0/8"])
    with gateway.connect(tls=False) as smtp:
        assert not smtp.has_extn("auth")  # AUTH only after STARTTLS
        assert (
            smtp.docmd(
                "AUTH",
                "PLAIN "
                + base64.b64encode(f"\0{creds.username}\0{creds.secret}".encode()).decode(),
            )[0]
            == 530
        )
        assert _mail_reply(smtp) == 530
        assert smtp.docmd("RCPT", "TO:<pat@example.org>")[0] == 530
    assert _rows(gateway.runtime, tenant) == []


def test_unauthenticated_unknown_client_is_refused(gateway, make_client, make_tenant):
    tenant = make_tenant()
    make_client(tenant, networks=["192.0.2.0/24"])  # not loopback
    with gateway.connect() as smtp:
        assert smtp.has_extn("auth")
        assert _mail_reply(smtp) == 530
        assert smtp.docmd("RCPT", "TO:<pat@example.org>")[0] == 503
        assert smtp.docmd("DATA")[0] == 503
    assert _rows(gateway.runtime, tenant) == []


def test_failed_auth_identifies_nobody(gateway, make_client, make_tenant):
    tenant = make_tenant()
    creds = make_client(tenant)
    with gateway.connect() as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            smtp.login(creds.username, creds.secret + "x")
        assert failed.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("nobody-here", creds.secret)
        assert _mail_reply(smtp) == 530
    assert _rows(gateway.runtime, tenant) == []


def test_sender_domains_are_enforced(gateway, make_client, make_tenant):
    tenant = make_tenant()
    other = make_tenant(verified_senders=("other-clinic.example",))
    creds = make_client(tenant)
    make_client(other, sender_domains=["other-clinic.example"])
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        # Another tenant's domain, a.example (the tenant's, but not this client's), a lookalike.
        for sender in ("x@other-clinic.example", "x@a.example", "x@clinic.example.evil", "<>"):
            assert _mail_reply(smtp, sender) == 550, sender
            smtp.rset()
        # The envelope is the tenant's, the header From is not.
        forged = MIME.replace(b"care@clinic.example", b"ceo@other-clinic.example")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            _send(smtp, forged)
        assert refused.value.smtp_code == 550
        smtp.rset()
        assert _send(smtp, MIME.replace(b"care@", b"care@news.")) == {}  # a subdomain
    assert len(_rows(gateway.runtime, tenant)) == 1
    assert _rows(gateway.runtime, other) == []


def test_only_verified_domains_can_be_configured(runtime, make_client, make_tenant):
    from carepost.core.errors import ValidationFailed

    tenant = make_tenant()
    for domains_ in (["other-clinic.example"], []):
        with pytest.raises(ValidationFailed):
            make_client(tenant, sender_domains=domains_)
    with pytest.raises(ValidationFailed):
        make_client(tenant, networks=["0.0.0.0/0"])


# --- limits and malformed input ---------------------------------------------------------


def test_size_limit_is_advertised_and_enforced(gateway, make_client, make_tenant):
    tenant = make_tenant()
    creds = make_client(tenant, max_message_bytes=8 * 1024)
    big = MIME.replace(b"Your results are ready.", b"\r\n".join([b"x" * 70] * 200))
    with gateway.connect() as smtp:
        assert int(smtp.esmtp_features["size"]) == 256 * 1024
        smtp.login(creds.username, creds.secret)
        code, _ = smtp.mail("care@clinic.example", ["SIZE=9000"])
        assert code == 552
        smtp.rset()
        with pytest.raises(smtplib.SMTPSenderRefused) as refused_early:
            _send(smtp, big)  # smtplib declares SIZE itself
        assert refused_early.value.smtp_code == 552
        # A client that declares no SIZE is refused at the end of DATA.
        assert smtp.mail("care@clinic.example")[0] == 250
        assert smtp.rcpt("pat@example.org")[0] == 250
        assert smtp.data(big)[0] == 552
    assert _rows(gateway.runtime, tenant) == []


def test_too_many_recipients(gateway, make_client, make_tenant):
    tenant = make_tenant()
    creds = make_client(tenant, max_recipients=2)
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        smtp.mail("care@clinic.example")
        assert smtp.rcpt("a@example.org")[0] == 250
        assert smtp.rcpt("b@example.org")[0] == 250
        assert smtp.rcpt("c@example.org")[0] == 452


def _nested(depth: int) -> bytes:
    head = b"From: care@clinic.example\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
    body = b"Content-Type: text/plain\r\n\r\ninner\r\n"
    for level in range(depth):
        boundary = f"n{level}".encode()
        body = (
            b'Content-Type: multipart/mixed; boundary="'
            + boundary
            + b'"\r\n\r\n--'
            + boundary
            + b"\r\n"
            + body
            + b"--"
            + boundary
            + b"--\r\n"
        )
    return head + body


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_nested(15), id="nested-too-deep"),
        pytest.param(
            b"From: care@clinic.example\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\nno boundary ever\r\n',
            id="missing-boundary",
        ),
        pytest.param(b"Subject: no from\r\n\r\nhello\r\n", id="no-from"),
        pytest.param(
            b"From: care@clinic.example\r\nFrom: x@clinic.example\r\n\r\nhello\r\n", id="two-froms"
        ),
    ],
)
def test_malformed_messages_are_refused(gateway, make_client, make_tenant, data):
    tenant = make_tenant()
    creds = make_client(tenant)
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            _send(smtp, data)
        assert refused.value.smtp_code == 550
    assert _rows(gateway.runtime, tenant) == []


def test_nesting_within_the_limit_is_accepted(gateway, make_client, make_tenant):
    tenant = make_tenant()
    creds = make_client(tenant)
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        assert _send(smtp, _nested(5)) == {}


# --- SMTP smuggling (2023): only <CRLF>.<CRLF> ends data, bare LF / CR are refused ------


@pytest.mark.parametrize(
    "end",
    [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n"],
    ids=["lf-dot-lf", "crlf-dot-lf", "lf-dot-crlf", "cr-dot-cr", "crlf-dot-cr", "cr-dot-crlf"],
)
def test_smuggled_end_of_data_is_refused(gateway, make_client, make_tenant, end):
    tenant = make_tenant()
    creds = make_client(tenant)
    smuggled = (
        b"From: care@clinic.example\r\nSubject: one\r\n\r\nfirst"
        + end
        + b"MAIL FROM:<ceo@clinic.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
        b"From: ceo@clinic.example\r\nSubject: smuggled\r\n\r\nsecond\r\n"
    )
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        smtp.mail("care@clinic.example")
        smtp.rcpt("pat@example.org")
        # Raw bytes: smtplib's data() would repair the line ends.
        assert smtp.docmd("DATA")[0] == 354
        smtp.send(smuggled + b"\r\n.\r\n")
        code, _ = smtp.getreply()
        assert code == 550
        assert smtp.noop()[0] == 250  # one transaction, one answer: nothing else ran
    assert _rows(gateway.runtime, tenant) == []


# --- durable before 250 -----------------------------------------------------------------


def test_a_storage_failure_answers_451_and_keeps_nothing(
    gateway, make_client, make_tenant, monkeypatch
):
    from carepost.gateway import service

    tenant = make_tenant()
    creds = make_client(tenant)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    # The rows are added, then the event write fails: the transaction rolls back.
    monkeypatch.setattr(service, "write_events", broken)
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            _send(smtp, MIME)
        assert refused.value.smtp_code == 451
    assert _rows(gateway.runtime, tenant) == []
    monkeypatch.undo()
    with gateway.connect() as smtp:  # the client retries: now it is kept
        smtp.login(creds.username, creds.secret)
        assert _send(smtp, MIME) == {}
    assert len(_rows(gateway.runtime, tenant)) == 1


def test_auth_login_works_too(gateway, make_client, make_tenant):
    tenant = make_tenant()
    creds = make_client(tenant)
    with gateway.connect() as smtp:
        smtp.user, smtp.password = creds.username, creds.secret
        assert smtp.auth("LOGIN", smtp.auth_login)[0] == 235
        assert _send(smtp, MIME) == {}
    assert len(_rows(gateway.runtime, tenant)) == 1


def test_a_domain_deleted_after_configuration_is_refused(gateway, make_client, make_tenant):
    from carepost.domains.models import SendingDomain

    tenant = make_tenant()
    creds = make_client(tenant, sender_domains=["a.example"])
    with gateway.runtime.database.session() as session:
        domain = session.scalars(
            select(SendingDomain).where(
                SendingDomain.tenant_id == tenant[0].id, SendingDomain.name == "a.example"
            )
        ).one()
        session.delete(domain)
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            _send(smtp, MIME.replace(b"clinic.example", b"a.example"), sender="care@a.example")
        assert refused.value.smtp_code == 550
    assert _rows(gateway.runtime, tenant) == []
