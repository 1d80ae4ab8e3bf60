"""Bad input: whatever bytes arrive as key material or as a received message,
the directory answers with a validation error (or imports nothing), never
another exception, and stores nothing it did not check."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carepost.audit.service import SYSTEM
from carepost.core.errors import ValidationFailed
from carepost.e2ee import directory

NOW = datetime(2026, 12, 4, tzinfo=UTC)
PREFIXES = st.sampled_from(
    [
        b"",
        b"-----BEGIN CERTIFICATE-----\n",
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n",
        b"\x30\x82\x01\x00",
        b"\x99\x01\x0d\x04",
    ]
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=PREFIXES, tail=st.binary(max_size=300))
def test_garbage_key_material_is_a_validation_error(runtime, tenant, prefix, tail):
    with runtime.bound_session(tenant[1]) as session:
        try:
            directory.add_key(
                session,
                tenant[0].id,
                address="p@patient.example",
                material=prefix + tail,
                source="upload",
                actor=SYSTEM,
                now=NOW,
            )
        except ValidationFailed as error:
            assert error.errors and error.errors[0].field in {"material", "address"}
        else:  # pragma: no cover - random bytes are never a valid key
            raise AssertionError("garbage accepted as a key")


MESSAGES = st.one_of(
    st.binary(max_size=400),
    st.builds(
        lambda sender, header, body: f"From: {sender}\r\n{header}\r\n\r\n".encode() + body,
        st.sampled_from(["p@patient.example", "<>", "x", ""]),
        st.sampled_from(
            [
                "Autocrypt: addr=p@patient.example; keydata=!!!notbase64",
                "Autocrypt: addr=p@patient.example; keydata=AAAA",
                "Content-Type: multipart/signed; boundary=b",
                "Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n"
                "Content-Transfer-Encoding: base64",
                "Content-Type: application/pgp-keys",
            ]
        ),
        st.binary(max_size=300),
    ),
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=MESSAGES)
def test_malformed_received_messages_import_nothing(runtime, tenant, raw):
    with runtime.bound_session(tenant[1]) as session:
        try:
            imported = directory.import_from_message(
                session, tenant[0].id, raw, actor=SYSTEM, now=NOW
            )
        except ValidationFailed as error:
            assert error.errors[0].field == "message"
        else:
            assert imported == []
