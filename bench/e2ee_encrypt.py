"""Benchmark: S/MIME and PGP/MIME messages/s for a 50 KB body (issue 6), each
printed beside the rate of the bare library call on the same bytes in the same run
(``cryptography``'s PKCS#7 envelope, pysequoia's encrypt), so the ratio says what
carepost's MIME handling and checks cost on top of the cryptography.

Prints ``e2ee_encrypt <method> messages/s=<n> raw_calls/s=<m> ratio_to_raw=<r>``
for S/MIME sign+encrypt and PGP sign+encrypt, and the machine's load average
(other processes share the CPU), and ``clear_serialize``: the rate of serializing
the clear message alone (what sending it unprotected costs in the email package).
``BENCH_E2EE_MESSAGES`` sets the count (200).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pysequoia
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from carepost.delivery.mime import OutgoingMessage, build_message, message_bytes
from carepost.e2ee import openpgp, smime
from carepost.e2ee.entity import inner_entity

BODY_BYTES = 50 * 1024
SENDER = "care@clinic.example"
RECIPIENT = "patient@patient.example"


def _certificate(address: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _rate(count: int, call: object) -> float:
    assert callable(call)
    started = time.perf_counter()
    for _ in range(count):
        call()
    return count / (time.perf_counter() - started)


def measure(count: int) -> dict[str, tuple[float, float]]:
    """(messages/s, raw calls/s) per method."""
    text = ("Lab result line, value 7.2 mmol/L, reference 4.0-6.0.\n" * 1000)[:BODY_BYTES]
    message = build_message(
        OutgoingMessage(
            from_address=SENDER,
            from_name="Clinic",
            to_address=RECIPIENT,
            to_name=None,
            reply_to=None,
            subject="A new message",
            html=None,
            text=text,
        )
    )
    entity = inner_entity(message)
    now = datetime.now(UTC)

    sender_cert, sender_key = _certificate(SENDER)
    recipient_cert, _ = _certificate(RECIPIENT)
    signer = smime.SmimeSigner(sender_cert, sender_key)
    recipients = [smime.Recipient(RECIPIENT, recipient_cert)]

    def raw_smime() -> bytes:
        signed = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(entity)
            .add_signer(sender_cert, sender_key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature])
        )
        return (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(entity + signed)
            .set_content_encryption_algorithm(algorithms.AES256)
            .add_recipient(recipient_cert)
            .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )

    results = {
        "smime_sign_encrypt": (
            _rate(
                count, lambda: smime.protect(message, signer=signer, recipients=recipients, now=now)
            ),
            _rate(count, raw_smime),
        )
    }

    tenant = pysequoia.Tsk.generate(f"Clinic <{SENDER}>", profile=pysequoia.Profile.RFC4880)
    patient = pysequoia.Tsk.generate(f"P <{RECIPIENT}>", profile=pysequoia.Profile.RFC4880)
    cert = patient.extract_certificate()
    pgp_recipients = [openpgp.PgpRecipient(RECIPIENT, cert)]
    own = tenant.extract_certificate()
    results["pgp_sign_encrypt"] = (
        _rate(
            count,
            lambda: openpgp.protect(message, signer=tenant, recipients=pgp_recipients, now=now),
        ),
        _rate(
            count, lambda: pysequoia.encrypt(entity, recipients=[cert, own], signer=tenant.signer())
        ),
    )
    # What the delivery path pays for a clear message: serializing it once.
    clear = _rate(count, lambda: message_bytes(message))
    results["clear_serialize"] = (clear, clear)
    return results


def run() -> dict[str, tuple[float, float]]:
    count = int(os.environ.get("BENCH_E2EE_MESSAGES", "200"))
    results = measure(count)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    for method, (messages, raw) in results.items():
        print(
            f"e2ee_encrypt {method} messages/s={messages:.0f} raw_calls/s={raw:.0f} "
            f"ratio_to_raw={messages / raw:.2f} body_bytes={BODY_BYTES} messages={count} "
            f"load={load}",
            flush=True,
        )
    return results


if __name__ == "__main__":
    run()
