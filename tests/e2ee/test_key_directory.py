"""The key directory on the database (both engines): keys added by upload, from
received signed messages and checked again at use; addresses and key material
encrypted at rest; the tenant's signing identities used by ``protect_message``
and read by openssl and gpg."""

from __future__ import annotations

import base64
import subprocess
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import SMTP

import pysequoia
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from carepost.audit.service import SYSTEM
from carepost.core.errors import ValidationFailed
from carepost.delivery.mime import OutgoingMessage, build_message
from carepost.e2ee import directory, smime
from carepost.e2ee.entity import inner_entity
from carepost.e2ee.errors import KeyRejected
from tests.canaries import PHI_CANARIES, phi_value
from tests.e2ee.conftest import CLINIC


def patient_address() -> str:
    """A recipient address registered as a PHI canary (as stored: lower-case)."""
    address = f"{phi_value('mailbox').lower()}@patient.example"
    PHI_CANARIES.add(address)
    return address


def message_to(address: str, body: str):
    return build_message(
        OutgoingMessage(
            from_address=CLINIC,
            from_name="Clinic",
            to_address=address,
            to_name=None,
            reply_to=None,
            subject="A new message from your clinic",
            html=None,
            text=body,
        )
    )


def test_uploaded_keys_are_usable_until_expiry_or_revocation(runtime, tenant, test_ca, make_gpg):
    address = patient_address()
    now = datetime.now(UTC)
    certificate = test_ca.issue(address, not_after=now + timedelta(days=30))
    public = make_gpg("directory").new_key(f"Patient <{address}>", expiry="10d")
    with runtime.bound_session(tenant[1]) as session:
        tenant_id = tenant[0].id
        smime_row = directory.add_key(
            session,
            tenant_id,
            address=address,
            material=certificate.cert_pem,
            source="upload",
            actor=SYSTEM,
        )
        pgp_row = directory.add_key(
            session,
            tenant_id,
            address=address.upper(),
            material=public,
            source="upload",
            actor=SYSTEM,
        )
        assert (smime_row.kind, pgp_row.kind) == ("smime", "openpgp")
        assert smime_row.algorithm == "rsa-2048" and smime_row.can_encrypt
        # The same key again is the same row.
        again = directory.add_key(
            session,
            tenant_id,
            address=address,
            material=certificate.cert_pem,
            source="received",
            actor=SYSTEM,
        )
        assert again.id == smime_row.id

        usable = directory.usable_keys(session, tenant_id, address, now)
        assert {key.row.kind for key in usable} == {"smime", "openpgp"}
        # After the OpenPGP key's expiry only the certificate is left, after its own none.
        later = directory.usable_keys(session, tenant_id, address, now + timedelta(days=15))
        assert [key.row.kind for key in later] == ["smime"]
        assert directory.usable_keys(session, tenant_id, address, now + timedelta(days=31)) == []
        directory.revoke_key(session, tenant_id, smime_row.id, actor=SYSTEM)
        assert [k.row.kind for k in directory.usable_keys(session, tenant_id, address, now)] == [
            "openpgp"
        ]
        # Another address finds nothing.
        assert directory.usable_keys(session, tenant_id, "x@patient.example", now) == []


def test_an_openpgp_revocation_uploaded_later_retires_the_key(runtime, tenant):
    address = patient_address()
    tsk = pysequoia.Tsk.generate(f"P <{address}>", profile=pysequoia.Profile.RFC4880)
    cert = tsk.extract_certificate()
    now = datetime.now(UTC)
    with runtime.bound_session(tenant[1]) as session:
        row = directory.add_key(
            session,
            tenant[0].id,
            address=address,
            material=str(cert).encode(),
            source="upload",
            actor=SYSTEM,
        )
        assert len(directory.usable_keys(session, tenant[0].id, address, now)) == 1
        revoked = bytes(cert) + bytes(cert.revoke(tsk.certifier()))
        # Refused as a new key, but recorded on the copy carepost holds.
        with pytest.raises(KeyRejected):
            directory.add_key(
                session,
                tenant[0].id,
                address=address,
                material=revoked,
                source="wkd",
                actor=SYSTEM,
            )
        session.refresh(row)
        assert row.revoked
        assert directory.usable_keys(session, tenant[0].id, address, now) == []
        # Even a row that missed it: the revocation inside the stored key counts.
        row.revoked = False
        session.flush()
        assert directory.usable_keys(session, tenant[0].id, address, now) == []


def test_bad_keys_are_refused_naming_the_field(runtime, tenant, test_ca):
    address = patient_address()
    now = datetime.now(UTC)
    with runtime.bound_session(tenant[1]) as session:
        tenant_id = tenant[0].id

        def refused(material: bytes, to: str = address) -> str:
            with pytest.raises(ValidationFailed) as caught:
                directory.add_key(
                    session,
                    tenant_id,
                    address=to,
                    material=material,
                    source="upload",
                    actor=SYSTEM,
                )
            return caught.value.errors[0].field

        assert refused(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") == (
            "material"
        )
        assert refused(b"\x30\x03garbage") == "material"
        assert refused(b"   ") == "material"
        expired = test_ca.issue(
            address, not_before=now - timedelta(days=9), not_after=now - timedelta(days=1)
        )
        assert refused(expired.cert_pem) == "material"
        assert refused(test_ca.issue("other@patient.example").cert_pem) == "address"
        assert refused(test_ca.issue(address).cert_pem, to="not an address") == "address"
        # An EC certificate is kept but never offered for encryption (no ECDH yet).
        ec_cert = test_ca.issue(address, key=ec.generate_private_key(ec.SECP384R1()))
        row = directory.add_key(
            session,
            tenant_id,
            address=address,
            material=ec_cert.cert_pem,
            source="upload",
            actor=SYSTEM,
        )
        assert row.algorithm == "ec-secp384r1" and not row.can_encrypt
        assert directory.usable_keys(session, tenant_id, address, now) == []


def test_addresses_and_key_material_are_encrypted_at_rest(runtime, tenant, test_ca):
    address = patient_address()
    with runtime.bound_session(tenant[1]) as session:
        directory.add_key(
            session,
            tenant[0].id,
            address=address,
            material=test_ca.issue(address).cert_pem,
            source="upload",
            actor=SYSTEM,
        )
    with runtime.database.session() as session:
        rows = session.execute(
            text(
                "SELECT address, material, address_index FROM recipient_keys WHERE tenant_id = :t"
            ),
            {
                "t": tenant[0].id.hex
                if runtime.database.engine.dialect.name == "sqlite"
                else tenant[0].id
            },
        ).all()
    assert len(rows) == 1
    raw = bytes(rows[0].address) + bytes(rows[0].material)
    assert address.encode() not in raw and b"BEGIN CERTIFICATE" not in raw
    assert address not in rows[0].address_index


def test_keys_are_imported_from_received_signed_messages(runtime, tenant, test_ca):
    address = patient_address()
    now = datetime.now(UTC)
    patient = test_ca.issue(address)
    reply = smime.protect(
        build_message(
            OutgoingMessage(
                from_address=address,
                from_name=None,
                to_address=CLINIC,
                to_name=None,
                reply_to=None,
                subject="Re: your message",
                html=None,
                text="thanks\n",
            )
        ),
        signer=smime.SmimeSigner(patient.certificate, patient.key),
        recipients=[],
        now=now,
    )
    tsk = pysequoia.Tsk.generate(f"P <{address}>", profile=pysequoia.Profile.RFC4880)
    keydata = base64.b64encode(bytes(tsk.extract_certificate())).decode()
    autocrypt = (
        f"From: {address}\r\nTo: {CLINIC}\r\nSubject: hi\r\n"
        f"Autocrypt: addr={address}; prefer-encrypt=mutual; keydata={keydata}\r\n"
        "Content-Type: text/plain\r\n\r\nhello\r\n"
    ).encode()
    stranger = (
        f"From: {address}\r\nTo: {CLINIC}\r\nSubject: hi\r\n"
        f"Autocrypt: addr=someone.else@patient.example; keydata={keydata}\r\n"
        "Content-Type: text/plain\r\n\r\nhello\r\n"
    ).encode()
    with runtime.bound_session(tenant[1]) as session:
        tenant_id = tenant[0].id
        imported = directory.import_from_message(session, tenant_id, reply, actor=SYSTEM)
        assert [(row.kind, row.source) for row in imported] == [("smime", "received")]
        assert directory.import_from_message(session, tenant_id, stranger, actor=SYSTEM) == []
        imported = directory.import_from_message(session, tenant_id, autocrypt, actor=SYSTEM)
        assert [(row.kind, row.source) for row in imported] == [("openpgp", "received")]
        assert len(directory.usable_keys(session, tenant_id, address, now)) == 2
        with pytest.raises(ValidationFailed):
            directory.import_from_message(session, tenant_id, b"Subject: x\r\n\r\n", actor=SYSTEM)


def test_protect_message_signs_with_the_tenant_keys_and_encrypts_for_the_directory(
    runtime, tenant, test_ca, make_gpg, tmp_path, log_file
):
    address = patient_address()
    canary = phi_value("diagnosis")
    now = datetime.now(UTC)
    sender = test_ca.issue(CLINIC)
    patient_cert = test_ca.issue(address)
    gpg = make_gpg("protect")
    public = gpg.new_key(f"Patient <{address}>")
    message = message_to(address, f"Your result: {canary}\n")
    with runtime.bound_session(tenant[1]) as session:
        tenant_id = tenant[0].id
        directory.add_smime_signing_identity(
            session,
            tenant_id,
            address="*",
            certificate_pem=sender.cert_pem,
            private_key_pem=sender.key_pem,
            actor=SYSTEM,
        )
        signing = directory.create_openpgp_signing_key(
            session, tenant_id, address=CLINIC, name="Clinic", actor=SYSTEM
        )
        for material in (patient_cert.cert_pem, public):
            directory.add_key(
                session,
                tenant_id,
                address=address,
                material=material,
                source="upload",
                actor=SYSTEM,
            )
        smime_wire = directory.protect_message(
            session, tenant_id, message, kind="smime", recipients=[address], now=now
        )
        pgp_wire = directory.protect_message(
            session, tenant_id, message, kind="openpgp", recipients=[address], now=now
        )
        with pytest.raises(KeyRejected) as caught:
            directory.protect_message(
                session, tenant_id, message, kind="smime", recipients=["x@y.example"], now=now
            )
        assert caught.value.errors[0].field == "recipients/0"
        signing_certificate = signing.certificate
        stored_secret = (
            session.execute(
                text("SELECT private_key FROM tenant_signing_keys WHERE kind = 'openpgp'")
            )
            .scalars()
            .all()
        )
    assert all(b"PRIVATE KEY" not in bytes(blob) for blob in stored_secret)
    for wire in (smime_wire, pgp_wire):
        assert canary.encode() not in wire
        assert message_from_bytes(wire, policy=SMTP)["Subject"] == message["Subject"]

    (tmp_path / "wire.eml").write_bytes(smime_wire)
    (tmp_path / "ca.pem").write_bytes(test_ca.cert_pem)
    patient_cert.write(tmp_path, "patient")
    decrypted = subprocess.run(
        [
            "openssl",
            "cms",
            "-decrypt",
            "-recip",
            str(tmp_path / "patient.crt"),
            "-inkey",
            str(tmp_path / "patient.key"),
            "-in",
            str(tmp_path / "wire.eml"),
        ],
        capture_output=True,
        check=False,
    )
    assert decrypted.returncode == 0, decrypted.stderr
    (tmp_path / "signed.eml").write_bytes(decrypted.stdout)
    verified = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-CAfile",
            str(tmp_path / "ca.pem"),
            "-in",
            str(tmp_path / "signed.eml"),
        ],
        capture_output=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.replace(b"\r\n", b"\n") == inner_entity(message).replace(b"\r\n", b"\n")

    assert gpg.run("--import", data=signing_certificate.encode()).returncode == 0
    encrypted = message_from_bytes(pgp_wire, policy=SMTP).get_payload()[1]
    result = gpg.run("--decrypt", data=encrypted.get_payload(decode=True))
    assert result.returncode == 0 and b"[GNUPG:] GOODSIG" in result.stderr
    assert result.stdout == inner_entity(message)
    # Nothing of the body or the address reached the log.
    logged = log_file.read_text() if log_file.exists() else ""
    assert canary not in logged and address not in logged
