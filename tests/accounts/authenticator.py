"""A WebAuthn authenticator in software, for tests of the real ceremonies.

It does what a security key or a phone does, byte for byte (W3C WebAuthn Level 2,
§6.1 authenticator data, §6.5.4 the ``none`` attestation, §6.3.3 assertion signatures):
one EC P-256 key pair per credential, COSE-encoded public keys, CBOR attestation
objects, and ES256 signatures over ``authenticatorData || SHA-256(clientDataJSON)``.
The browser's part (clientDataJSON with the origin) is done here too, so a test can
pretend to be a phishing site by passing another ``origin`` or ``rp_id``.

Every credential id, public key and private key it makes is registered as a log canary.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.canaries import secret_value

FLAG_USER_PRESENT = 0x01
FLAG_USER_VERIFIED = 0x04
FLAG_ATTESTED_DATA = 0x40
AAGUID = bytes(16)  # "none" attestation: the authenticator model is not disclosed


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "===")


@dataclass
class SoftwareCredential:
    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    user_handle: bytes
    sign_count: int = 0

    @property
    def id(self) -> str:
        return b64url(self.credential_id)


def cose_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    numbers = key.public_numbers()
    return cbor2.dumps(
        {
            1: 2,  # kty: EC2
            3: -7,  # alg: ES256
            -1: 1,  # crv: P-256
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    )


class SoftwareAuthenticator:
    """Answers ``navigator.credentials.create()`` and ``.get()`` options as a browser with
    a platform authenticator would, in the JSON shape carepost's script posts."""

    def __init__(self, rp_id: str, origin: str, *, counter_step: int = 1) -> None:
        self.rp_id = rp_id
        self.origin = origin
        # 0: an authenticator without a signature counter (always reports 0).
        self.counter_step = counter_step
        self.credentials: dict[str, SoftwareCredential] = {}

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            }
        ).encode()

    def _auth_data(self, rp_id: str | None, flags: int, count: int, attested: bytes = b"") -> bytes:
        rp_hash = hashlib.sha256((rp_id or self.rp_id).encode()).digest()
        return rp_hash + bytes([flags]) + count.to_bytes(4, "big") + attested

    def create(
        self, options: dict[str, Any], *, origin: str | None = None, rp_id: str | None = None
    ) -> dict[str, Any]:
        assert options["rp"]["id"] == self.rp_id
        key = ec.generate_private_key(ec.SECP256R1())
        credential = SoftwareCredential(
            credential_id=secrets.token_bytes(32),
            private_key=key,
            user_handle=unb64url(options["user"]["id"]),
        )
        self.credentials[credential.id] = credential
        public_key = cose_public_key(key.public_key())
        secret_value(credential.id)
        secret_value(b64url(public_key))
        secret_value(str(key.private_numbers().private_value))
        attested = (
            AAGUID
            + len(credential.credential_id).to_bytes(2, "big")
            + credential.credential_id
            + public_key
        )
        flags = FLAG_USER_PRESENT | FLAG_USER_VERIFIED | FLAG_ATTESTED_DATA
        auth_data = self._auth_data(rp_id, flags, credential.sign_count, attested)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        return {
            "id": credential.id,
            "rawId": credential.id,
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        credential: SoftwareCredential | None = None,
        sign_count: int | None = None,
    ) -> dict[str, Any]:
        if credential is None:
            allowed = [c["id"] for c in options.get("allowCredentials", [])]
            credential = next(self.credentials[i] for i in allowed if i in self.credentials)
        if sign_count is None:
            credential.sign_count += self.counter_step
            sign_count = credential.sign_count
        auth_data = self._auth_data(rp_id, FLAG_USER_PRESENT | FLAG_USER_VERIFIED, sign_count)
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = credential.private_key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": credential.id,
            "rawId": credential.id,
            "type": "public-key",
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(credential.user_handle),
            },
        }
