"""S/MIME output read by an independent implementation: OpenSSL's ``cms`` command
decrypts and verifies what carepost builds, byte for byte; bad certificates are
refused before anything is built."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import SMTP
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from carepost.e2ee import smime
from carepost.e2ee.entity import inner_entity
from carepost.e2ee.errors import KeyRejected
from tests.e2ee.conftest import CLINIC, PATIENT


def openssl(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, timeout=60, check=False
    )


@pytest.fixture
def parties(test_ca, tmp_path):
    sender, patient = test_ca.issue(CLINIC), test_ca.issue(PATIENT)
    (tmp_path / "ca.pem").write_bytes(test_ca.cert_pem)
    patient.write(tmp_path, "patient")
    sender.write(tmp_path, "sender")
    signer = smime.SmimeSigner(sender.certificate, sender.key)
    return signer, patient


def test_signed_and_encrypted_message_decrypts_and_verifies_with_openssl(
    parties, canary_message, tmp_path
):
    signer, patient = parties
    message, canary = canary_message
    now = datetime.now(UTC)
    wire = smime.protect(
        message, signer=signer, recipients=[smime.Recipient(PATIENT, patient.certificate)], now=now
    )
    assert canary.encode() not in wire
    outer = message_from_bytes(wire, policy=SMTP)
    assert outer.get_content_type() == "application/pkcs7-mime"
    assert outer["Content-Type"].params["smime-type"] == "enveloped-data"
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        assert outer[name] == message[name]
    (tmp_path / "wire.eml").write_bytes(wire)

    decrypted = openssl(
        "cms",
        "-decrypt",
        "-recip",
        tmp_path / "patient.crt",
        "-inkey",
        tmp_path / "patient.key",
        "-in",
        tmp_path / "wire.eml",
        "-out",
        tmp_path / "signed.eml",
    )
    assert decrypted.returncode == 0, decrypted.stderr
    assert b"multipart/signed" in (tmp_path / "signed.eml").read_bytes()[:200]
    verified = openssl(
        "cms",
        "-verify",
        "-CAfile",
        tmp_path / "ca.pem",
        "-in",
        tmp_path / "signed.eml",
        "-out",
        tmp_path / "content.eml",
    )
    assert verified.returncode == 0, verified.stderr
    assert (tmp_path / "content.eml").read_bytes() == inner_entity(message)
    # The content key is AES-256-CBC.
    printed = openssl("cms", "-cmsout", "-print", "-in", tmp_path / "wire.eml")
    assert b"aes-256-cbc" in printed.stdout


def test_the_sender_can_decrypt_its_own_copy(parties, canary_message, tmp_path):
    signer, patient = parties
    message, _ = canary_message
    wire = smime.protect(
        message,
        signer=signer,
        recipients=[smime.Recipient(PATIENT, patient.certificate)],
        now=datetime.now(UTC),
    )
    (tmp_path / "wire.eml").write_bytes(wire)
    decrypted = openssl(
        "cms",
        "-decrypt",
        "-recip",
        tmp_path / "sender.crt",
        "-inkey",
        tmp_path / "sender.key",
        "-in",
        tmp_path / "wire.eml",
    )
    assert decrypted.returncode == 0, decrypted.stderr


def test_signed_only_message_verifies_with_openssl_smime(parties, canary_message, tmp_path):
    signer, _ = parties
    message, _ = canary_message
    wire = smime.protect(message, signer=signer, recipients=[], now=datetime.now(UTC))
    outer = message_from_bytes(wire, policy=SMTP)
    assert outer.get_content_type() == "multipart/signed"
    assert outer["Subject"] == message["Subject"]
    (tmp_path / "signed.eml").write_bytes(wire)
    verified = openssl(
        "smime",
        "-verify",
        "-CAfile",
        tmp_path / "ca.pem",
        "-in",
        tmp_path / "signed.eml",
        "-out",
        tmp_path / "content.eml",
    )
    assert verified.returncode == 0, verified.stderr
    assert (tmp_path / "content.eml").read_bytes() == inner_entity(message)


def test_encrypted_only_message_decrypts_with_openssl_smime(parties, canary_message, tmp_path):
    _, patient = parties
    message, canary = canary_message
    wire = smime.protect(
        message,
        signer=None,
        recipients=[smime.Recipient(PATIENT, patient.certificate)],
        now=datetime.now(UTC),
    )
    assert canary.encode() not in wire
    (tmp_path / "wire.eml").write_bytes(wire)
    decrypted = openssl(
        "smime",
        "-decrypt",
        "-recip",
        tmp_path / "patient.crt",
        "-inkey",
        tmp_path / "patient.key",
        "-in",
        tmp_path / "wire.eml",
        "-binary",
        "-out",
        tmp_path / "content.eml",
    )
    assert decrypted.returncode == 0, decrypted.stderr
    assert (tmp_path / "content.eml").read_bytes() == inner_entity(message)


def _refused(certificate, address=PATIENT, now=None) -> str:
    with pytest.raises(KeyRejected) as caught:
        smime.protect(
            _plain_message(),
            signer=None,
            recipients=[smime.Recipient(address, certificate)],
            now=now or datetime.now(UTC),
        )
    assert caught.value.errors
    return caught.value.errors[0].message


def _plain_message():
    from carepost.delivery.mime import OutgoingMessage, build_message

    return build_message(
        OutgoingMessage(
            from_address=CLINIC,
            from_name=None,
            to_address=PATIENT,
            to_name=None,
            reply_to=None,
            subject="Hello",
            html=None,
            text="hello\n",
        )
    )


def test_expired_not_yet_valid_and_wrong_address_certificates_are_refused(test_ca):
    now = datetime.now(UTC)
    expired = test_ca.issue(
        PATIENT, not_before=now - timedelta(days=400), not_after=now - timedelta(days=1)
    )
    assert "expired" in _refused(expired.certificate)
    future = test_ca.issue(PATIENT, not_before=now + timedelta(days=1))
    assert "not valid yet" in _refused(future.certificate)
    other = test_ca.issue("eve@elsewhere.example")
    assert "subjectAltName" in _refused(other.certificate)
    nameless = test_ca.issue(PATIENT, san=False)
    assert "subjectAltName" in _refused(nameless.certificate)
    # The address compares case-insensitively.
    smime.protect(
        _plain_message(),
        signer=None,
        now=now,
        recipients=[smime.Recipient("Bob@Patient.Example", test_ca.issue(PATIENT).certificate)],
    )


def test_wrong_usage_and_weak_keys_are_refused(test_ca):
    server_only = test_ca.issue(PATIENT, email_protection=False)
    assert "emailProtection" in _refused(server_only.certificate)
    sign_only = test_ca.issue(PATIENT, key_encipherment=False)
    assert "key usage" in _refused(sign_only.certificate)
    weak = test_ca.issue(
        PATIENT, key=rsa.generate_private_key(public_exponent=65537, key_size=1024)
    )
    assert "2048" in _refused(weak.certificate)
    # EC certificates pass the checks but cannot be encrypted to by the builder yet.
    ec_cert = test_ca.issue(PATIENT, key=ec.generate_private_key(ec.SECP256R1()))
    assert "EC" in _refused(ec_cert.certificate)


def test_an_ec_signing_certificate_signs(test_ca, tmp_path, canary_message):
    sender = test_ca.issue(CLINIC, key=ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "ca.pem").write_bytes(test_ca.cert_pem)
    message, _ = canary_message
    wire = smime.protect(
        message,
        signer=smime.SmimeSigner(sender.certificate, sender.key),
        recipients=[],
        now=datetime.now(UTC),
    )
    (tmp_path / "signed.eml").write_bytes(wire)
    verified = openssl(
        "cms",
        "-verify",
        "-CAfile",
        tmp_path / "ca.pem",
        "-in",
        tmp_path / "signed.eml",
        "-out",
        tmp_path / "content.eml",
    )
    assert verified.returncode == 0, verified.stderr
