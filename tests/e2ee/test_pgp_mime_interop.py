"""PGP/MIME output read by an independent implementation: GnuPG (on a throw-away
GNUPGHOME) decrypts and verifies what carepost builds, byte for byte; expired,
revoked and wrong-address keys are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import SMTP

import pysequoia
import pytest

from carepost.e2ee import openpgp
from carepost.e2ee.entity import inner_entity
from carepost.e2ee.errors import KeyRejected
from tests.e2ee.conftest import CLINIC, PATIENT


@pytest.fixture(scope="module")
def tenant_key() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate(f"Clinic <{CLINIC}>", profile=pysequoia.Profile.RFC4880)


def test_encrypted_and_signed_message_decrypts_and_verifies_with_gpg(
    make_gpg, tenant_key, canary_message
):
    patient = make_gpg("patient")
    public = openpgp.load_cert(patient.new_key(f"Bob <{PATIENT}>"))
    assert (
        patient.run("--import", data=str(tenant_key.extract_certificate()).encode()).returncode == 0
    )
    message, canary = canary_message

    wire = openpgp.protect(
        message,
        signer=tenant_key,
        recipients=[openpgp.PgpRecipient(PATIENT, public)],
        now=datetime.now(UTC),
    )
    assert canary.encode() not in wire
    outer = message_from_bytes(wire, policy=SMTP)
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer["Content-Type"].params["protocol"] == "application/pgp-encrypted"
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        assert outer[name] == message[name]
    control, encrypted = outer.get_payload()
    assert control.get_content_type() == "application/pgp-encrypted"
    assert control.get_payload().strip() == "Version: 1"

    result = patient.run("--decrypt", data=encrypted.get_payload(decode=True))
    assert result.returncode == 0, result.stderr
    status = result.stderr.decode("utf-8", "replace")
    assert "[GNUPG:] DECRYPTION_OKAY" in status
    assert "[GNUPG:] GOODSIG" in status
    validsig = next(line for line in status.splitlines() if line.startswith("[GNUPG:] VALIDSIG"))
    assert validsig.endswith(tenant_key.extract_certificate().fingerprint.upper())
    assert result.stdout == inner_entity(message)


def test_signed_only_message_verifies_with_gpg(make_gpg, tenant_key, canary_message, tmp_path):
    reader = make_gpg("reader")
    assert (
        reader.run("--import", data=str(tenant_key.extract_certificate()).encode()).returncode == 0
    )
    message, _ = canary_message
    wire = openpgp.protect(message, signer=tenant_key, recipients=[], now=datetime.now(UTC))
    outer = message_from_bytes(wire, policy=SMTP)
    assert outer.get_content_type() == "multipart/signed"
    assert outer["Content-Type"].params["micalg"].startswith("pgp-sha")
    # RFC 3156 section 5: the signed data is the first part exactly as it is on the wire.
    boundary = outer.get_boundary().encode()
    body = wire.partition(b"\r\n\r\n")[2]
    signed = body.split(b"--" + boundary + b"\r\n")[1].rpartition(b"\r\n")[0]
    assert signed == inner_entity(message)
    (tmp_path / "signed").write_bytes(signed)
    (tmp_path / "signature.asc").write_bytes(outer.get_payload()[1].get_payload(decode=True))
    verified = reader.run("--verify", str(tmp_path / "signature.asc"), str(tmp_path / "signed"))
    assert verified.returncode == 0, verified.stderr
    assert b"[GNUPG:] GOODSIG" in verified.stderr


def _message():
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


def test_expired_revoked_and_wrong_address_keys_are_refused(make_gpg, tenant_key):
    now = datetime.now(UTC)
    patient = make_gpg("refusals")
    public = openpgp.load_cert(patient.new_key(f"Bob <{PATIENT}>", expiry="1d"))

    def refused(cert, address=PATIENT, at=now) -> str:
        with pytest.raises(KeyRejected) as caught:
            openpgp.protect(
                _message(),
                signer=tenant_key,
                recipients=[openpgp.PgpRecipient(address, cert)],
                now=at,
            )
        return caught.value.errors[0].message

    assert "expired" in refused(public, at=now + timedelta(days=2))
    assert "User IDs" in refused(public, address="eve@elsewhere.example")

    revoked = pysequoia.Tsk.generate(f"Bob <{PATIENT}>", profile=pysequoia.Profile.RFC4880)
    revocation = revoked.extract_certificate().revoke(revoked.certifier())
    revoked_cert = openpgp.load_cert(bytes(revoked.extract_certificate()) + bytes(revocation))
    assert revoked_cert.is_revoked
    assert "revoked" in refused(revoked_cert)


def test_a_secret_key_or_garbage_is_refused_as_a_recipient_key(tenant_key):
    with pytest.raises(KeyRejected) as caught:
        openpgp.load_cert(str(tenant_key).encode())
    assert caught.value.errors[0].field == "key"
    with pytest.raises(KeyRejected):
        openpgp.load_cert(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n")
