"""Gateway clients (create, list, delete, identify) and storing relayed mail in the outbox.

Everything the SMTP server decides about a client is here, in plain functions it
runs in a worker thread: :func:`by_username` + :func:`verify_secret` (SMTP AUTH),
:func:`by_certificate` (TLS client certificate), :func:`by_network` (source
address), :func:`sender_allowed` (MAIL FROM and header From) and :func:`store`,
which writes one queued :class:`~carepost.messages.models.Message` per recipient,
the customer's MIME kept as is (encrypted, ``body = {"raw": base64}``), and commits
before the server answers 250.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.accounts.passwords import hash_password, verify_password
from carepost.audit import service as audit
from carepost.consent.models import Suppression
from carepost.contacts.fields import STANDARD_FIELDS, normalize_email
from carepost.core.database import new_id, utcnow
from carepost.core.errors import FieldError, NotFound, ValidationFailed
from carepost.crypto.keyring import TenantKeys
from carepost.domains.senders import check_sender
from carepost.domains.service import normalize_domain
from carepost.gateway.models import GatewayClient
from carepost.messages.events import write_events
from carepost.messages.models import MESSAGES_TABLE, PRIORITIES, MessageState
from carepost.messages.outbox import Sealer, column_defaults, outbox_writer
from carepost.messages.sending import MESSAGE_COLUMNS, ROW_VALUES

EMAIL_INDEX_LABEL = STANDARD_FIELDS["email"].index_label
GATEWAY_ACTOR_TYPE = "gateway"
# A gateway row sets the columns below in store_many; the rest keep their defaults.
_ROW_DEFAULTS = column_defaults(MESSAGES_TABLE)
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,99}$")


@dataclass(frozen=True)
class ClientView:
    """What the SMTP server keeps of a client (no secret)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    sender_domains: tuple[str, ...]
    max_message_bytes: int
    max_recipients: int

    @classmethod
    def of(cls, row: GatewayClient) -> ClientView:
        return cls(
            row.id,
            row.tenant_id,
            row.name,
            tuple(str(d) for d in row.sender_domains),
            row.max_message_bytes,
            row.max_recipients,
        )


def client_actor(client: ClientView) -> audit.Actor:
    """The audit actor of what a client's relayed mail does."""
    return audit.Actor(GATEWAY_ACTOR_TYPE, str(client.id), client.name)


def normalize_fingerprint(value: str) -> str:
    cleaned = value.replace(":", "").replace(" ", "").lower()
    if not _FINGERPRINT.match(cleaned):
        raise ValidationFailed(
            "Invalid certificate fingerprint",
            errors=[FieldError("cert_fingerprints", "a SHA-256 fingerprint: 64 hex digits")],
        )
    return cleaned


def _networks(values: Sequence[str]) -> list[str]:
    found = []
    for value in values:
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValidationFailed(
                "Invalid network",
                errors=[FieldError("networks", "a CIDR network such as 203.0.113.0/24")],
            ) from None
        if network.prefixlen == 0:
            raise ValidationFailed(
                "Invalid network",
                errors=[FieldError("networks", "a network that is not the whole internet")],
            )
        found.append(str(network))
    return found


def _domains(session: Session, tenant_id: uuid.UUID, values: Sequence[str]) -> list[str]:
    if not values:
        raise ValidationFailed(
            "No sender domain",
            errors=[FieldError("sender_domains", "at least one verified sending domain")],
        )
    found = []
    for value in values:
        domain = normalize_domain(value)
        refused = check_sender(session, tenant_id, f"gateway@{domain}", exempt=())
        if refused is not None:
            raise ValidationFailed(
                "Not a verified sending domain", errors=[FieldError("sender_domains", refused)]
            )
        found.append(domain)
    return sorted(set(found))


def create_client(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    name: str,
    sender_domains: Sequence[str],
    networks: Sequence[str] = (),
    cert_fingerprints: Sequence[str] = (),
    max_message_bytes: int,
    max_recipients: int,
    actor: audit.Actor,
    username: str | None = None,
) -> tuple[GatewayClient, str]:
    """A new client and its SMTP AUTH secret (returned once, stored as an argon2 hash)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationFailed("Invalid name", errors=[FieldError("name", "1 to 100 characters")])
    user = (username or f"gw-{secrets.token_hex(6)}").lower()
    if not _USERNAME.match(user):
        raise ValidationFailed(
            "Invalid username", errors=[FieldError("username", "3-100 of a-z 0-9 . _ -")]
        )
    if session.scalar(select(GatewayClient.id).where(GatewayClient.username == user)):
        raise ValidationFailed("Username taken", errors=[FieldError("username", "already in use")])
    secret = secrets.token_urlsafe(24)
    client = GatewayClient(
        id=new_id(),
        tenant_id=tenant_id,
        name=name,
        username=user,
        secret_hash=hash_password(secret),
        networks=_networks(networks),
        cert_fingerprints=sorted({normalize_fingerprint(f) for f in cert_fingerprints}),
        sender_domains=_domains(session, tenant_id, sender_domains),
        max_message_bytes=max_message_bytes,
        max_recipients=max_recipients,
        enabled=True,
        created_by_type=actor.type,
        created_by_id=actor.id,
    )
    session.add(client)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="gateway.client.create",
        object_type="gateway_client",
        object_id=str(client.id),
        details={
            "networks": len(client.networks),
            "cert_fingerprints": len(client.cert_fingerprints),
            "sender_domains": list(client.sender_domains),
        },
    )
    return client, secret


def list_clients(session: Session, tenant_id: uuid.UUID) -> list[GatewayClient]:
    return list(
        session.scalars(
            select(GatewayClient)
            .where(GatewayClient.tenant_id == tenant_id)
            .order_by(GatewayClient.created_at, GatewayClient.id)
        )
    )


def get_client(session: Session, tenant_id: uuid.UUID, client_id: uuid.UUID) -> GatewayClient:
    client = session.scalar(
        select(GatewayClient).where(
            GatewayClient.tenant_id == tenant_id, GatewayClient.id == client_id
        )
    )
    if client is None:
        raise NotFound("No such gateway client")
    return client


def delete_client(
    session: Session, tenant_id: uuid.UUID, client_id: uuid.UUID, *, actor: audit.Actor
) -> None:
    client = get_client(session, tenant_id, client_id)
    session.delete(client)
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="gateway.client.delete",
        object_type="gateway_client",
        object_id=str(client_id),
    )


def update_client(
    session: Session,
    tenant_id: uuid.UUID,
    client_id: uuid.UUID,
    *,
    actor: audit.Actor,
    name: str | None = None,
    sender_domains: Sequence[str] | None = None,
    networks: Sequence[str] | None = None,
    cert_fingerprints: Sequence[str] | None = None,
    max_message_bytes: int | None = None,
    max_recipients: int | None = None,
) -> GatewayClient:
    """Change what is given (None leaves a field as it is), checked as at creation;
    the audit entry names the fields changed, never their values' content beyond
    counts and domains. Sessions identified before keep their identity until they end;
    every new session sees the change."""
    client = get_client(session, tenant_id, client_id)
    changed: dict[str, Any] = {}
    if name is not None:
        clean = name.strip()
        if not clean or len(clean) > 100:
            raise ValidationFailed(
                "Invalid name", errors=[FieldError("name", "1 to 100 characters")]
            )
        if clean != client.name:
            client.name = clean
            changed["name"] = True
    if sender_domains is not None:
        domains = _domains(session, tenant_id, sender_domains)
        if domains != list(client.sender_domains):
            client.sender_domains = domains
            changed["sender_domains"] = domains
    if networks is not None:
        found = _networks(networks)
        if found != list(client.networks):
            client.networks = found
            changed["networks"] = len(found)
    if cert_fingerprints is not None:
        prints = sorted({normalize_fingerprint(f) for f in cert_fingerprints})
        if prints != list(client.cert_fingerprints):
            client.cert_fingerprints = prints
            changed["cert_fingerprints"] = len(prints)
    if max_message_bytes is not None and max_message_bytes != client.max_message_bytes:
        client.max_message_bytes = max_message_bytes
        changed["max_message_bytes"] = max_message_bytes
    if max_recipients is not None and max_recipients != client.max_recipients:
        client.max_recipients = max_recipients
        changed["max_recipients"] = max_recipients
    if changed:
        session.flush()
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="gateway.client.update",
            object_type="gateway_client",
            object_id=str(client.id),
            details={"changed": sorted(changed), **changed},
        )
    return client


def rotate_secret(
    session: Session, tenant_id: uuid.UUID, client_id: uuid.UUID, *, actor: audit.Actor
) -> tuple[GatewayClient, str]:
    """A new SMTP AUTH secret (returned once); the old one stops working for every new
    session at once. Verifications a gateway process remembers are keyed by the stored
    hash (:class:`VerifiedSecrets`), so none made with the old hash is believed again."""
    client = get_client(session, tenant_id, client_id)
    secret = secrets.token_urlsafe(24)
    client.secret_hash = hash_password(secret)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="gateway.client.rotate_secret",
        object_type="gateway_client",
        object_id=str(client.id),
    )
    return client, secret


# --- identification (the SMTP server calls these in a worker thread) -------------------


class VerifiedSecrets:
    """Credentials that passed argon2 verification in this process, as keyed digests of
    (username, secret, stored hash): a mail server opening fifty connections with the
    same secret pays for one verification. A changed or deleted client has another
    hash or none, so nothing stale is believed; the key is random per process."""

    def __init__(self, limit: int = 10_000) -> None:
        self._key = secrets.token_bytes(32)
        self._seen: set[bytes] = set()
        self._limit = limit

    def _digest(self, username: str, secret: str, secret_hash: str) -> bytes:
        message = "\0".join((username, secret, secret_hash)).encode("utf-8", "replace")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def known(self, username: str, secret: str, secret_hash: str) -> bool:
        return self._digest(username, secret, secret_hash) in self._seen

    def add(self, username: str, secret: str, secret_hash: str) -> None:
        if len(self._seen) >= self._limit:
            self._seen.clear()
        self._seen.add(self._digest(username, secret, secret_hash))


def by_username(
    session: Session, username: str, secret: str, verified: VerifiedSecrets | None = None
) -> ClientView | None:
    """The enabled client with these credentials, or None (an argon2 verification is
    spent on an unknown name too, so timing does not tell names apart)."""
    client = session.scalar(
        select(GatewayClient).where(
            GatewayClient.username == username.lower()[:100], GatewayClient.enabled.is_(True)
        )
    )
    if client is None:
        verify_password(_DUMMY_HASH, secret)
        return None
    if verified is not None and verified.known(client.username, secret, client.secret_hash):
        return ClientView.of(client)
    if not verify_password(client.secret_hash, secret):
        return None
    if verified is not None:
        verified.add(client.username, secret, client.secret_hash)
    return ClientView.of(client)


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def by_certificate(session: Session, fingerprint: str) -> ClientView | None:
    for client in session.scalars(select(GatewayClient).where(GatewayClient.enabled.is_(True))):
        if fingerprint in client.cert_fingerprints:
            return ClientView.of(client)
    return None


def by_network(session: Session, peer: str) -> ClientView | None:
    """The client whose networks hold ``peer`` (the longest prefix wins), or None."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return None
    best: tuple[int, GatewayClient] | None = None
    for client in session.scalars(select(GatewayClient).where(GatewayClient.enabled.is_(True))):
        for value in client.networks:
            network = ipaddress.ip_network(value)
            inside = address.version == network.version and address in network
            if inside and (best is None or network.prefixlen > best[0]):
                best = (network.prefixlen, client)
    return ClientView.of(best[1]) if best else None


def sender_allowed(client: ClientView, address: str) -> bool:
    """Whether ``address`` is on one of the client's sender domains (or a subdomain)."""
    domain = address.rpartition("@")[2].strip().lower().rstrip(".")
    if not domain or "@" not in address:
        return False
    return any(domain == d or domain.endswith("." + d) for d in client.sender_domains)


# --- storing -------------------------------------------------------------------------


@dataclass
class Relay:
    """One accepted SMTP transaction, to be stored."""

    client: ClientView
    mail_from: str
    header_from: str
    recipients: Sequence[str]
    subject: str
    raw: bytes


def store(
    session: Session,
    keys: TenantKeys,
    client: ClientView,
    *,
    mail_from: str,
    header_from: str,
    recipients: Sequence[str],
    subject: str,
    raw: bytes,
) -> list[uuid.UUID]:
    """One queued message per recipient (suppressed when the address is suppressed for
    all mail), events and one audit entry; the caller commits."""
    relay = Relay(client, mail_from, header_from, recipients, subject, raw)
    return store_many(session, keys, [relay])[0]


def store_many(
    session: Session, keys: TenantKeys, relays: Sequence[Relay]
) -> list[list[uuid.UUID]]:
    """:func:`store` for several transactions of one tenant in one go (one suppression
    query, one flush, one event write, one audit entry per client); the caller commits."""
    now = utcnow()
    normalized = [[normalize_email(r) for r in relay.recipients] for relay in relays]
    indexes = {
        a: keys.blind_index(EMAIL_INDEX_LABEL, a) for addresses in normalized for a in addresses
    }
    suppressed = {
        str(index)
        for index, scope in session.execute(
            select(Suppression.address_index, Suppression.scope).where(
                Suppression.tenant_id == keys.tenant_id,
                Suppression.address_index.in_(set(indexes.values())),
            )
        )
        if scope != "marketing"
    }
    all_ids: list[list[uuid.UUID]] = []
    events = []
    counts = []
    seal = Sealer(keys, MESSAGES_TABLE)
    # The rows go in as the API's do (one binary COPY on PostgreSQL): an ORM flush of
    # the same rows cost more than the rest of the group commit together.
    with outbox_writer(session, MESSAGES_TABLE, MESSAGE_COLUMNS) as write:
        for relay, addresses in zip(relays, normalized, strict=True):
            body = seal.json("body", {"raw": base64.b64encode(relay.raw).decode("ascii")})
            subject = seal.text("subject", relay.subject)
            ids = []
            queued = 0
            for address in addresses:
                state = (
                    MessageState.SUPPRESSED
                    if indexes[address] in suppressed
                    else MessageState.QUEUED
                )
                queued += state == MessageState.QUEUED
                message_id = new_id()
                row = _ROW_DEFAULTS | {
                    "id": message_id,
                    "tenant_id": keys.tenant_id,
                    "to_address": seal.text("to_address", address),
                    "to_index": indexes[address],
                    "from_address": relay.header_from,
                    "subject": subject,
                    "body": body,
                    "tags": ["gateway"],
                    "purpose": "transactional",
                    "priority": PRIORITIES["normal"],
                    "state": state,
                    "state_reason": "suppressed" if state == MessageState.SUPPRESSED else "",
                    "next_attempt_at": now,
                    "first_queued_at": now,
                    "last_event_at": now,
                    "created_at": now,
                    "created_by_type": GATEWAY_ACTOR_TYPE,
                    "created_by_id": str(relay.client.id),
                }
                write(ROW_VALUES(row))
                ids.append(message_id)
                events.append((message_id, None, state, {"gateway": True}))
            all_ids.append(ids)
            counts.append(queued)
    write_events(session, keys.tenant_id, events, now=now)
    # One audit entry per client and group commit, as the API audits one per batch
    # (the chain's hashing is the costliest write here): ids and counts, never content.
    by_client: dict[uuid.UUID, list[tuple[Relay, list[uuid.UUID], int]]] = {}
    for relay, ids, queued in zip(relays, all_ids, counts, strict=True):
        by_client.setdefault(relay.client.id, []).append((relay, ids, queued))
    for group in by_client.values():
        client = group[0][0].client
        messages = [i for _relay, ids, _queued in group for i in ids]
        queued = sum(q for _relay, _ids, q in group)
        audit.record(
            session,
            tenant_id=keys.tenant_id,
            actor=audit.Actor(GATEWAY_ACTOR_TYPE, str(client.id), client.name),
            action="message.gateway_relay",
            object_type="message",
            object_id=str(messages[0]) if len(messages) == 1 else "",
            details={
                "transactions": len(group),
                "queued": queued,
                "suppressed": len(messages) - queued,
                "bytes": sum(len(relay.raw) for relay, _ids, _queued in group),
                "message_ids": [str(i) for i in messages[:100]],
            },
        )
    return all_ids
