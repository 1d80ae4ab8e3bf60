"""The per-tenant key directory: add recipients' keys (upload, a received signed
message, WKD), list and delete them, find the ones usable for an address now;
and the tenant's own signing identities.

Every change is audited (``recipient_key.add``/``.delete``, ``signing_key.add``)
with the kind, fingerprint and source, never the address (PHI) nor key material.
Validation errors name the field at fault (``address``, ``material``).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import default as default_policy
from email.utils import parseaddr

import httpx
import pysequoia
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, pkcs7
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.core.database import new_id, utcnow
from carepost.core.errors import Conflict, NotFound, ValidationFailed
from carepost.crypto.keyring import current_tenant_keys
from carepost.e2ee import openpgp, smime
from carepost.e2ee.certificates import (
    certificate_pem,
    check_certificate,
    load_certificate,
    normalize_address,
)
from carepost.e2ee.errors import CertificateUntrusted, KeyRejected
from carepost.e2ee.models import KINDS, SOURCES, RecipientKey, TenantSigningKey
from carepost.e2ee.trust import TrustChecker, TrustDecision, is_ca_certificate, reason_code
from carepost.e2ee.wkd import fetch_wkd

INDEX_LABEL = "recipient_keys.address"
MAX_MATERIAL = 256 * 1024
MAX_KEYS_PER_ADDRESS = 20


def _index(address: str) -> str:
    return current_tenant_keys().blind_index(INDEX_LABEL, normalize_address(address))


def _checked_address(address: str) -> str:
    clean = normalize_address(address)
    _name, parsed = parseaddr(clean)
    if parsed != clean or "@" not in clean or len(clean) > 320:
        raise ValidationFailed("not a valid email address", field="address")
    return clean


MAX_CHAIN = 5  # intermediates kept with an uploaded certificate


def detect_kind(material: bytes) -> str:
    """``smime`` for a PEM/DER certificate, ``openpgp`` for an OpenPGP key."""
    if b"-----BEGIN CERTIFICATE-----" in material:
        return "smime"
    if b"-----BEGIN PGP" in material:
        return "openpgp"
    # Binary: a DER certificate starts with a SEQUENCE (0x30); OpenPGP packets have bit 7 set.
    return "smime" if material[:1] == b"\x30" else "openpgp"


@dataclass(frozen=True)
class KeyFacts:
    kind: str
    fingerprint: str
    material: str
    algorithm: str
    can_encrypt: bool
    not_before: datetime | None
    not_after: datetime | None
    revoked: bool


def examine(material: bytes, address: str, now: datetime, kind: str | None = None) -> KeyFacts:
    """Parse and check key material for ``address`` at ``now`` (KeyRejected naming
    the field when it cannot be used)."""
    if not material.strip():
        raise ValidationFailed("no key material", field="material")
    if len(material) > MAX_MATERIAL:
        raise ValidationFailed(f"key material is over {MAX_MATERIAL} bytes", field="material")
    kind = kind or detect_kind(material)
    if kind not in KINDS:
        raise ValidationFailed("kind is smime or openpgp", field="kind")
    if kind == "smime":
        certificate = load_certificate(material, field="material")
        info = check_certificate(
            certificate, address, now, "encrypt", field="material", require_rsa_to_encrypt=False
        )
        return KeyFacts(
            kind,
            info.fingerprint,
            certificate_pem(certificate) + "".join(map(certificate_pem, _chain_of(material))),
            info.algorithm,
            info.can_encrypt,
            info.not_before,
            info.not_after,
            False,
        )
    cert = openpgp.load_cert(material, field="material")
    details = openpgp.check_cert(cert, address, now, field="material")
    return KeyFacts(
        kind,
        details.fingerprint,
        str(cert),
        details.algorithm,
        True,
        details.not_before,
        details.not_after,
        details.revoked,
    )


def add_key(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    address: str,
    material: bytes,
    source: str,
    actor: audit.Actor,
    now: datetime | None = None,
    kind: str | None = None,
) -> RecipientKey:
    """Add (or refresh) a recipient's key. The same key for the same address is
    one row: adding it again updates what a newer copy says (a revocation)."""
    if source not in SOURCES:
        raise ValidationFailed("unknown source", field="source")
    now = now or utcnow()
    clean = _checked_address(address)
    try:
        facts = examine(material, clean, now, kind)
    except KeyRejected:
        # A newer copy of a key we hold may carry its revocation: record it, then refuse.
        _record_revocation(session, tenant_id, clean, material, actor)
        raise
    index = _index(clean)
    row = session.scalar(
        select(RecipientKey).where(
            RecipientKey.tenant_id == tenant_id,
            RecipientKey.address_index == index,
            RecipientKey.kind == facts.kind,
            RecipientKey.fingerprint == facts.fingerprint,
        )
    )
    action = "recipient_key.refresh"
    if row is None:
        count = len(_rows_for(session, tenant_id, index))
        if count >= MAX_KEYS_PER_ADDRESS:
            raise ValidationFailed(
                f"an address has at most {MAX_KEYS_PER_ADDRESS} keys", field="address"
            )
        row = RecipientKey(
            id=new_id(),
            tenant_id=tenant_id,
            address=clean,
            address_index=index,
            kind=facts.kind,
            fingerprint=facts.fingerprint,
            source=source,
            added_at=now,
        )
        session.add(row)
        action = "recipient_key.add"
    row.material = facts.material
    row.algorithm = facts.algorithm
    row.can_encrypt = facts.can_encrypt
    row.not_before, row.not_after = facts.not_before, facts.not_after
    row.revoked = row.revoked or facts.revoked
    row.seen_at = now
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        object_type="recipient_key",
        object_id=row.id,
        details={"kind": row.kind, "fingerprint": row.fingerprint, "source": source},
    )
    return row


def _record_revocation(
    session: Session, tenant_id: uuid.UUID, address: str, material: bytes, actor: audit.Actor
) -> None:
    if detect_kind(material) != "openpgp" or b"PRIVATE KEY BLOCK" in material:
        return
    try:
        cert = pysequoia.Cert.from_bytes(material)
    except Exception:  # noqa: BLE001 - the binding raises plain exceptions for bad input
        return
    if not cert.is_revoked:
        return
    row = session.scalar(
        select(RecipientKey).where(
            RecipientKey.tenant_id == tenant_id,
            RecipientKey.address_index == _index(address),
            RecipientKey.kind == "openpgp",
            RecipientKey.fingerprint == cert.fingerprint.upper(),
            RecipientKey.revoked.is_(False),
        )
    )
    if row is not None:
        row.revoked = True
        row.material = str(cert)
        session.flush()
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="recipient_key.revoke",
            object_type="recipient_key",
            object_id=row.id,
            details={"kind": row.kind, "fingerprint": row.fingerprint, "by": "key"},
        )


def _rows_for(session: Session, tenant_id: uuid.UUID, index: str) -> list[RecipientKey]:
    return list(
        session.scalars(
            select(RecipientKey).where(
                RecipientKey.tenant_id == tenant_id, RecipientKey.address_index == index
            )
        )
    )


def list_keys(session: Session, tenant_id: uuid.UUID, *, limit: int = 500) -> list[RecipientKey]:
    query = select(RecipientKey).where(RecipientKey.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(RecipientKey.added_at.desc()).limit(limit)))


def get_key(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> RecipientKey:
    # Filtered in SQL: loading another tenant's row would try to open its sealed
    # columns with this tenant's keys.
    row = session.scalar(
        select(RecipientKey).where(RecipientKey.id == key_id, RecipientKey.tenant_id == tenant_id)
    )
    if row is None:
        raise NotFound("no such key")
    return row


def delete_key(
    session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID, *, actor: audit.Actor
) -> None:
    row = get_key(session, tenant_id, key_id)
    details = {"kind": row.kind, "fingerprint": row.fingerprint, "source": row.source}
    session.delete(row)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="recipient_key.delete",
        object_type="recipient_key",
        object_id=key_id,
        details=details,
    )


def revoke_key(
    session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID, *, actor: audit.Actor
) -> RecipientKey:
    """Mark a key revoked (the owner said so out of band): never used again."""
    row = get_key(session, tenant_id, key_id)
    row.revoked = True
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="recipient_key.revoke",
        object_type="recipient_key",
        object_id=key_id,
        details={"kind": row.kind, "fingerprint": row.fingerprint},
    )
    return row


@dataclass(frozen=True)
class UsableKey:
    """A key carepost may encrypt to for an address now, parsed and re-checked."""

    row: RecipientKey
    certificate: x509.Certificate | None = None
    cert: pysequoia.Cert | None = None

    def smime_recipient(self) -> smime.Recipient:
        assert self.certificate is not None
        return smime.Recipient(self.row.address, self.certificate)

    def pgp_recipient(self) -> openpgp.PgpRecipient:
        assert self.cert is not None
        return openpgp.PgpRecipient(self.row.address, self.cert)


def usable_keys(
    session: Session,
    tenant_id: uuid.UUID,
    address: str,
    now: datetime,
    *,
    kind: str | None = None,
    trust: TrustChecker | None = None,
    refused: list[TrustDecision] | None = None,
) -> list[UsableKey]:
    """The keys for ``address`` that are valid at ``now``, not revoked and that
    carepost can encrypt to; newest expiry first. Each is parsed and checked again
    (a revocation inside an OpenPGP key counts even if the row missed it). With
    ``trust`` (the organization's S/MIME trust settings) an S/MIME certificate must
    also pass its chain and revocation checks; the decisions of those that do not
    are appended to ``refused``."""
    query = select(RecipientKey).where(
        RecipientKey.tenant_id == tenant_id,
        RecipientKey.address_index == _index(address),
        RecipientKey.revoked.is_(False),
        RecipientKey.can_encrypt.is_(True),
        or_(RecipientKey.not_before.is_(None), RecipientKey.not_before <= now),
        or_(RecipientKey.not_after.is_(None), RecipientKey.not_after > now),
    )
    if kind is not None:
        query = query.where(RecipientKey.kind == kind)
    usable: list[UsableKey] = []
    for row in session.scalars(query):
        try:
            if row.kind == "smime":
                certificate = load_certificate(row.material.encode("ascii"))
                check_certificate(certificate, address, now, "encrypt")
                if trust is not None:
                    decision = trust.check(certificate, _bundled(row.material), now)
                    if not decision.usable:
                        if refused is not None:
                            refused.append(decision)
                        continue
                usable.append(UsableKey(row, certificate=certificate))
            else:
                cert = openpgp.load_cert(row.material)
                openpgp.check_cert(cert, address, now)
                usable.append(UsableKey(row, cert=cert))
        except KeyRejected:
            continue
    far = datetime.max.replace(tzinfo=now.tzinfo)
    usable.sort(key=lambda key: key.row.not_after or far, reverse=True)
    return usable


def _chain_of(material: bytes) -> list[x509.Certificate]:
    """The CA certificates uploaded after the recipient's own (its chain), kept with it
    for chain validation; anything else in the PEM is ignored."""
    if b"-----BEGIN" not in material:
        return []
    try:
        found = x509.load_pem_x509_certificates(material)[1:]
    except ValueError:
        return []
    return [c for c in found[:MAX_CHAIN] if is_ca_certificate(c)]


def _bundled(material: str) -> list[x509.Certificate]:
    """Certificates stored after the recipient's own in its PEM (its chain, when it was
    uploaded or received with one): candidate intermediates."""
    try:
        return x509.load_pem_x509_certificates(material.encode("ascii"))[1:]
    except ValueError:
        return []


# --- discovery ----------------------------------------------------------------------


def lookup_wkd(
    session: Session,
    tenant_id: uuid.UUID,
    address: str,
    *,
    client: httpx.Client,
    actor: audit.Actor,
    now: datetime | None = None,
    origins: Mapping[str, str] | None = None,
) -> list[RecipientKey]:
    """Ask the address's Web Key Directory and add the keys it serves for it."""
    clean = _checked_address(address)
    data = fetch_wkd(clean, client, origins=origins)
    if data is None:
        return []
    return _add_pgp_certs(session, tenant_id, clean, data, "wkd", actor, now or utcnow())


def _add_pgp_certs(
    session: Session,
    tenant_id: uuid.UUID,
    address: str,
    data: bytes,
    source: str,
    actor: audit.Actor,
    now: datetime,
) -> list[RecipientKey]:
    try:
        certs = pysequoia.Cert.split_bytes(data)
    except Exception:  # noqa: BLE001 - the binding raises plain exceptions for bad input
        return []
    added = []
    for cert in certs:
        if address not in openpgp.cert_addresses(cert):
            continue
        try:
            added.append(
                add_key(
                    session,
                    tenant_id,
                    address=address,
                    material=bytes(cert),
                    source=source,
                    actor=actor,
                    now=now,
                    kind="openpgp",
                )
            )
        except KeyRejected:
            continue
    return added


def import_from_message(
    session: Session,
    tenant_id: uuid.UUID,
    raw: bytes,
    *,
    actor: audit.Actor,
    now: datetime | None = None,
    source: str = "received",
    include_smime: bool = True,
) -> list[RecipientKey]:
    """Add the keys a received message carries for its From address: the signer's
    certificate of an S/MIME signature, an ``Autocrypt`` header (Autocrypt 1.1
    section 2.1) and attached ``application/pgp-keys``. Keys for other addresses,
    expired or unusable ones are skipped; nothing else of the message is kept.
    ``include_smime=False`` skips the S/MIME signer (its signature did not verify)."""
    now = now or utcnow()
    message = message_from_bytes(raw, policy=default_policy)
    _name, sender = parseaddr(str(message.get("From", "")))
    try:
        sender = _checked_address(sender)
    except ValidationFailed:
        raise ValidationFailed("the message has no valid From address", field="message") from None
    added: list[RecipientKey] = []
    for certificate in _smime_signer_certificates(message) if include_smime else []:
        try:
            added.append(
                add_key(
                    session,
                    tenant_id,
                    address=sender,
                    material=certificate_pem(certificate).encode("ascii"),
                    source=source,
                    actor=actor,
                    now=now,
                    kind="smime",
                )
            )
        except KeyRejected:
            continue
    for data in _pgp_key_blobs(message, sender):
        added.extend(_add_pgp_certs(session, tenant_id, sender, data, source, actor, now))
    return added


def _smime_signer_certificates(message: Message) -> list[x509.Certificate]:
    found: list[x509.Certificate] = []
    for part in message.walk():
        content_type = part.get_content_type()
        signed_data = content_type in (
            "application/pkcs7-signature",
            "application/x-pkcs7-signature",
        ) or (
            content_type in ("application/pkcs7-mime", "application/x-pkcs7-mime")
            and str(part.get_param("smime-type", "")).lower() == "signed-data"
        )
        if not signed_data:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            found.extend(pkcs7.load_der_pkcs7_certificates(payload))
        except ValueError:
            continue
    return found


def _pgp_key_blobs(message: Message, sender: str) -> list[bytes]:
    blobs: list[bytes] = []
    for header in message.get_all("Autocrypt", []):
        attributes = dict(
            item.strip().partition("=")[::2] for item in str(header).split(";") if "=" in item
        )
        if normalize_address(attributes.get("addr", "")) != sender:
            continue
        try:
            blobs.append(base64.b64decode("".join(attributes.get("keydata", "").split())))
        except (binascii.Error, ValueError):
            continue
    for part in message.walk():
        if part.get_content_type() == "application/pgp-keys":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                blobs.append(payload)
    return blobs


# --- the tenant's signing identities ------------------------------------------------


def _signing_address(address: str) -> str:
    return "*" if address.strip() == "*" else _checked_address(address)


def add_smime_signing_identity(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    address: str,
    certificate_pem: bytes,
    private_key_pem: bytes,
    chain_pem: bytes = b"",
    actor: audit.Actor,
    now: datetime | None = None,
) -> TenantSigningKey:
    """Store the tenant's S/MIME signing certificate and key (the key sealed)."""
    now = now or utcnow()
    clean = _signing_address(address)
    try:
        signer = smime.load_signer(certificate_pem, private_key_pem, chain_pem)
    except ValueError:
        raise ValidationFailed(
            "not a PEM certificate and private key", field="private_key"
        ) from None
    if _public_der(signer.certificate.public_key()) != _public_der(signer.private_key.public_key()):
        raise ValidationFailed(
            "the private key does not match the certificate", field="private_key"
        )
    info = check_certificate(
        signer.certificate, None if clean == "*" else clean, now, "sign", field="certificate"
    )
    return _add_signing_key(
        session,
        tenant_id,
        kind="smime",
        address=clean,
        fingerprint=info.fingerprint,
        certificate=certificate_pem.decode("ascii"),
        chain=chain_pem.decode("ascii"),
        private_key=private_key_pem.decode("ascii"),
        not_before=info.not_before,
        not_after=info.not_after,
        actor=actor,
        now=now,
    )


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def create_openpgp_signing_key(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    address: str,
    name: str,
    actor: audit.Actor,
    now: datetime | None = None,
) -> TenantSigningKey:
    """Generate the tenant's OpenPGP key for ``address`` (Ed25519 signing, Cv25519
    encryption, v4 keys so that GnuPG 2.2 reads them) and store it sealed."""
    clean = _checked_address(address)
    tsk = pysequoia.Tsk.generate(
        f"{name} <{clean}>",
        profile=pysequoia.Profile.RFC4880,
        cipher_suite=pysequoia.CipherSuite.Cv25519,
    )
    cert = tsk.extract_certificate()
    return _add_signing_key(
        session,
        tenant_id,
        kind="openpgp",
        address=clean,
        fingerprint=cert.fingerprint.upper(),
        certificate=str(cert),
        chain="",
        private_key=str(tsk),
        not_before=None,
        not_after=cert.expiration,
        actor=actor,
        now=now or utcnow(),
    )


def _add_signing_key(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    kind: str,
    address: str,
    fingerprint: str,
    certificate: str,
    chain: str,
    private_key: str,
    not_before: datetime | None,
    not_after: datetime | None,
    actor: audit.Actor,
    now: datetime,
) -> TenantSigningKey:
    row = TenantSigningKey(
        id=new_id(),
        tenant_id=tenant_id,
        kind=kind,
        address=address,
        fingerprint=fingerprint,
        certificate=certificate,
        chain=chain,
        private_key=private_key,
        not_before=not_before,
        not_after=not_after,
        active=True,
        added_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise Conflict("this signing key is already stored", field="certificate") from None
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="signing_key.add",
        object_type="signing_key",
        object_id=row.id,
        details={"kind": kind, "fingerprint": fingerprint, "address": address},
    )
    return row


def signing_keys(session: Session, tenant_id: uuid.UUID) -> list[TenantSigningKey]:
    query = select(TenantSigningKey).where(TenantSigningKey.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(TenantSigningKey.added_at)))


def _signing_row(
    session: Session, tenant_id: uuid.UUID, kind: str, address: str, now: datetime
) -> TenantSigningKey | None:
    """The newest active key for the sender address, else the tenant-wide ``*`` one."""
    rows = session.scalars(
        select(TenantSigningKey)
        .where(
            TenantSigningKey.tenant_id == tenant_id,
            TenantSigningKey.kind == kind,
            TenantSigningKey.active.is_(True),
            TenantSigningKey.address.in_([normalize_address(address), "*"]),
            or_(TenantSigningKey.not_after.is_(None), TenantSigningKey.not_after > now),
        )
        .order_by(TenantSigningKey.added_at.desc())
    ).all()
    exact = [row for row in rows if row.address != "*"]
    chosen = exact or list(rows)
    return chosen[0] if chosen else None


def smime_signer(
    session: Session, tenant_id: uuid.UUID, address: str, now: datetime
) -> smime.SmimeSigner | None:
    row = _signing_row(session, tenant_id, "smime", address, now)
    if row is None:
        return None
    return smime.load_signer(
        row.certificate.encode("ascii"), row.private_key.encode("ascii"), row.chain.encode("ascii")
    )


def openpgp_signer(
    session: Session, tenant_id: uuid.UUID, address: str, now: datetime
) -> pysequoia.Tsk | None:
    row = _signing_row(session, tenant_id, "openpgp", address, now)
    return None if row is None else pysequoia.Tsk.from_bytes(row.private_key.encode("ascii"))


def protect_message(
    session: Session,
    tenant_id: uuid.UUID,
    message: EmailMessage,
    *,
    kind: str,
    recipients: Sequence[str],
    now: datetime,
    sign: bool = True,
    trust: TrustChecker | None = None,
) -> bytes:
    """The message encrypted (and signed with the tenant's key for its From address
    when ``sign``) for ``recipients`` with their usable keys of ``kind``: the one
    call the delivery path needs. KeyRejected names the recipient index without a
    usable key."""
    _name, sender = parseaddr(str(message.get("From", "")))
    if kind == "smime":
        smime_recipients = []
        for index, address in enumerate(recipients):
            refused: list[TrustDecision] = []
            keys = usable_keys(
                session, tenant_id, address, now, kind="smime", trust=trust, refused=refused
            )
            if not keys and refused:
                code = reason_code(refused[0])
                raise CertificateUntrusted(
                    f"no trusted S/MIME certificate ({code})",
                    trust_code=code,
                    field=f"recipients/{index}",
                )
            if not keys:
                raise KeyRejected("no usable S/MIME certificate", field=f"recipients/{index}")
            smime_recipients.append(keys[0].smime_recipient())
        signer = smime_signer(session, tenant_id, sender, now) if sign else None
        return smime.protect(message, signer=signer, recipients=smime_recipients, now=now)
    pgp_recipients = []
    for index, address in enumerate(recipients):
        keys = usable_keys(session, tenant_id, address, now, kind="openpgp")
        if not keys:
            raise KeyRejected("no usable OpenPGP key", field=f"recipients/{index}")
        pgp_recipients.append(keys[0].pgp_recipient())
    pgp_signer = openpgp_signer(session, tenant_id, sender, now) if sign else None
    return openpgp.protect(message, signer=pgp_signer, recipients=pgp_recipients, now=now)
