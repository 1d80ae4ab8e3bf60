"""Key discovery from relayed mail: a message relayed through the real gateway that is
S/MIME-signed (detached or opaque) or carries an Autocrypt header gives its sender's
certificate or key to the tenant's key directory (source ``gateway``), after the
``250``; a signature that does not verify imports nothing and the relay is accepted
all the same."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime

import pysequoia
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from carepost.core.runtime import Runtime
from carepost.delivery.mime import OutgoingMessage, build_message
from carepost.domains import service as domains
from carepost.e2ee import directory, smime
from carepost.gateway.server import GatewayHandler
from tests.e2ee.conftest import test_ca  # noqa: F401 - the fixture
from tests.gateway.conftest import ADMIN

TO = "someone@elsewhere.example"


def _sender(make_client, tenant, runtime: Runtime):
    name = f"keys-{uuid.uuid4().hex[:8]}.example"
    with runtime.bound_session(tenant[1]) as session:
        domain = domains.add_domain(session, tenant[0].id, name=name, actor=ADMIN)
        domain.state = "verified"
    return make_client(tenant, sender_domains=[name]), f"care@{name}"


def _relay(gateway, creds, sender: str, data: bytes) -> None:
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        assert smtp.sendmail(sender, [TO], data) == {}
    handler = gateway.controller.handler
    assert isinstance(handler, GatewayHandler)
    asyncio.run_coroutine_threadsafe(handler.discovery_done(), gateway.controller.loop).result(60)


def _keys(runtime: Runtime, tenant, address: str):
    with runtime.bound_session(tenant[1]) as session:
        rows = directory.list_keys(session, tenant[0].id)
        return sorted((row.kind, row.source) for row in rows if row.address == address)


def _detached(sender: str, issued) -> bytes:
    message = build_message(
        OutgoingMessage(
            from_address=sender, from_name=None, to_address=TO, to_name=None,
            reply_to=None, subject="Signed", html=None, text="signed text\n",
        )
    )  # fmt: skip
    return smime.protect(
        message,
        signer=smime.SmimeSigner(issued.certificate, issued.key),
        recipients=[],
        now=datetime.now(UTC),
    )


def test_a_detached_signature_gives_the_senders_certificate(
    gateway,
    make_client,
    make_tenant,
    runtime,
    test_ca,  # noqa: F811
):
    tenant = make_tenant()
    creds, sender = _sender(make_client, tenant, runtime)
    _relay(gateway, creds, sender, _detached(sender, test_ca.issue(sender)))
    assert _keys(runtime, tenant, sender) == [("smime", "gateway")]


def test_an_opaque_signature_gives_the_senders_certificate(
    gateway,
    make_client,
    make_tenant,
    runtime,
    test_ca,  # noqa: F811
):
    tenant = make_tenant()
    creds, sender = _sender(make_client, tenant, runtime)
    issued = test_ca.issue(sender)
    inner = b"Content-Type: text/plain; charset=utf-8\r\n\r\nopaque signed text\r\n"
    der = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(inner)
        .add_signer(issued.certificate, issued.key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    encoded = base64.encodebytes(der).replace(b"\n", b"\r\n")
    data = (
        f"From: {sender}\r\nTo: {TO}\r\nSubject: Opaque\r\nMIME-Version: 1.0\r\n"
        'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + encoded
    _relay(gateway, creds, sender, data)
    assert _keys(runtime, tenant, sender) == [("smime", "gateway")]


def test_a_bad_signature_imports_nothing_and_the_mail_is_relayed(
    gateway,
    make_client,
    make_tenant,
    runtime,
    test_ca,  # noqa: F811
):
    tenant = make_tenant()
    creds, sender = _sender(make_client, tenant, runtime)
    signed = _detached(sender, test_ca.issue(sender))
    tampered = signed.replace(b"signed text", b"forged text")
    assert tampered != signed
    _relay(gateway, creds, sender, tampered)  # still answered 250
    assert _keys(runtime, tenant, sender) == []


def test_an_autocrypt_header_gives_the_senders_key(gateway, make_client, make_tenant, runtime):
    tenant = make_tenant()
    creds, sender = _sender(make_client, tenant, runtime)
    tsk = pysequoia.Tsk.generate(f"Care <{sender}>", profile=pysequoia.Profile.RFC4880)
    keydata = base64.b64encode(bytes(tsk.extract_certificate())).decode()
    folded = "\r\n ".join(keydata[i : i + 76] for i in range(0, len(keydata), 76))
    data = (
        f"From: {sender}\r\nTo: {TO}\r\nSubject: hi\r\n"
        f"Autocrypt: addr={sender}; prefer-encrypt=mutual; keydata=\r\n {folded}\r\n"
        "Content-Type: text/plain\r\n\r\nhello\r\n"
    ).encode()
    _relay(gateway, creds, sender, data)
    assert _keys(runtime, tenant, sender) == [("openpgp", "gateway")]


def test_a_plain_message_starts_no_discovery(gateway, make_client, make_tenant, runtime):
    tenant = make_tenant()
    creds, sender = _sender(make_client, tenant, runtime)
    data = f"From: {sender}\r\nTo: {TO}\r\nSubject: plain\r\n\r\nhello\r\n".encode()
    _relay(gateway, creds, sender, data)
    assert _keys(runtime, tenant, sender) == []
    with runtime.bound_session(tenant[1]) as session:
        assert directory.list_keys(session, tenant[0].id) == []
