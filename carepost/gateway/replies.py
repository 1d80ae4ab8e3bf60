"""Inbound secure replies: an external recipient answers a message carepost sent
encrypted, encrypting the answer to the organization's S/MIME certificate or
OpenPGP key; carepost receives it (the inbound listener,
:mod:`carepost.delivery.inbound`), stores it, opens it (:mod:`carepost.gateway.unwrap`)
and hands it to the organization's own mail server, its *inbound route*.

* Only addresses of a **verified** sending domain of an organization that has an
  enabled route are accepted (:func:`tenant_for_recipient`); anything else is
  refused at RCPT, so the listener relays nowhere else.
* :func:`store_reply` commits the reply (encrypted at rest, as it came) **before**
  the listener answers 250; nothing accepted is lost.
* :func:`deliver_reply` decrypts it again (the decrypted text is never stored),
  verifies a signature inside, offers the signer's key to the key directory
  (source ``received``), and sends it to the route over TLS only (``verify``: the
  certificate checked against the route's host; ``encrypt``: any certificate), TLS
  1.2 or later, never in the clear. A failure defers it (retried by the worker's
  ``gateway.inbound_replies`` job, :func:`deliver_due_replies`); after
  ``MAX_ATTEMPTS`` it is ``failed`` and stays stored for the operator.

Audit entries (``inbound_reply.receive``, ``.deliver``, ``.defer``) and logs hold ids,
methods, outcomes and fingerprints, never addresses or content.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import smtplib
import ssl
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from email.utils import parseaddr

import pysequoia
from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.audit import service as audit
from carepost.core.database import new_id, utcnow
from carepost.core.errors import FieldError, ValidationFailed
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.domains.models import SendingDomain
from carepost.domains.senders import PROVEN_STATES
from carepost.e2ee import directory, smime
from carepost.e2ee.models import TenantSigningKey
from carepost.gateway import unwrap
from carepost.gateway.models import InboundReply, InboundRoute

log = get_logger(__name__)

INBOUND_ACTOR = audit.Actor("system", "inbound", "inbound secure replies")
TLS_MODES = ("verify", "encrypt")
MAX_ATTEMPTS = 12
SMTP_SECONDS = 30.0
FIRST_RETRY = timedelta(minutes=5)


# --- the route ---------------------------------------------------------------------


def _check_ca(pem: str) -> str:
    if not pem.strip():
        return ""
    try:
        context = ssl.create_default_context()
        context.load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError):
        raise ValidationFailed(
            "Invalid CA certificate",
            errors=[FieldError("ca_certificate", "PEM certificates of the CA to trust")],
        ) from None
    return pem.strip() + "\n"


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _checked_host(host: str) -> str:
    """A host name (letters, digits, hyphens; ``localhost`` too) or an IP address."""
    clean = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(clean))
    except ValueError:
        pass
    if 0 < len(clean) <= 253 and all(_LABEL.match(label) for label in clean.split(".")):
        return clean
    raise ValidationFailed(
        "Invalid host", errors=[FieldError("host", "the mail server's host name or address")]
    )


def get_route(session: Session, tenant_id: uuid.UUID) -> InboundRoute | None:
    return session.scalar(select(InboundRoute).where(InboundRoute.tenant_id == tenant_id))


def set_route(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    host: str,
    port: int,
    tls_mode: str = "verify",
    ca_certificate: str = "",
    enabled: bool = True,
    actor: audit.Actor,
) -> InboundRoute:
    """Create or replace the organization's inbound route (audited)."""
    clean_host = _checked_host(host)
    if not 1 <= port <= 65535:
        raise ValidationFailed("Invalid port", errors=[FieldError("port", "1 to 65535")])
    if tls_mode not in TLS_MODES:
        raise ValidationFailed(
            "Invalid TLS mode", errors=[FieldError("tls_mode", "verify or encrypt")]
        )
    ca = _check_ca(ca_certificate)
    route = get_route(session, tenant_id)
    created = route is None
    if route is None:
        route = InboundRoute(id=new_id(), tenant_id=tenant_id)
        session.add(route)
    route.host, route.port, route.tls_mode = clean_host, port, tls_mode
    route.ca_certificate, route.enabled, route.updated_at = ca, enabled, utcnow()
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="inbound_route.create" if created else "inbound_route.update",
        object_type="inbound_route",
        object_id=str(route.id),
        details={
            "host": clean_host,
            "port": port,
            "tls_mode": tls_mode,
            "ca": bool(ca),
            "enabled": enabled,
        },
    )
    return route


def delete_route(session: Session, tenant_id: uuid.UUID, *, actor: audit.Actor) -> bool:
    """Remove the route (replies are refused at RCPT from then on); False if none."""
    route = get_route(session, tenant_id)
    if route is None:
        return False
    session.delete(route)
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="inbound_route.delete",
        object_type="inbound_route",
        object_id=str(route.id),
    )
    return True


# --- receiving ---------------------------------------------------------------------


def tenant_for_recipient(session: Session, address: str) -> uuid.UUID | None:
    """The one organization that receives replies for ``address``: the domain is a
    verified sending domain of it and it has an enabled inbound route. None for
    anything else (the listener refuses it: no relay)."""
    local, _, domain = address.strip().rpartition("@")
    domain = domain.lower().rstrip(".")
    if not local or not domain:
        return None
    tenants = set(
        session.scalars(
            select(SendingDomain.tenant_id)
            .join(InboundRoute, InboundRoute.tenant_id == SendingDomain.tenant_id)
            .where(
                SendingDomain.name == domain,
                SendingDomain.state.in_(PROVEN_STATES),
                InboundRoute.enabled.is_(True),
            )
        )
    )
    return tenants.pop() if len(tenants) == 1 else None


def store_reply(
    runtime: Runtime,
    tenant_id: uuid.UUID,
    *,
    mail_from: str,
    recipients: Sequence[str],
    data: bytes,
) -> uuid.UUID:
    """Commit one received reply (encrypted at rest) and its audit entry; only then
    may the listener answer 250."""
    now = utcnow()
    with runtime.tenant_session(tenant_id) as session:
        reply = InboundReply(
            id=new_id(),
            tenant_id=tenant_id,
            state="received",
            mail_from=mail_from,
            recipients=list(recipients),
            raw=base64.b64encode(data).decode("ascii"),
            size=len(data),
            method="",
            decrypted=False,
            signature="",
            signer_fingerprint="",
            attempts=0,
            last_error="",
            received_at=now,
            # The listener tries at once, after its 250; the worker's job only picks up
            # what that attempt did not finish (a process stopped in between).
            next_attempt_at=now + FIRST_RETRY,
        )
        session.add(reply)
        session.flush()
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=INBOUND_ACTOR,
            action="inbound_reply.receive",
            object_type="inbound_reply",
            object_id=str(reply.id),
            details={"bytes": len(data), "recipients": len(recipients)},
        )
        return reply.id


# --- delivering --------------------------------------------------------------------


def _organization_keys(
    session: Session, tenant_id: uuid.UUID, now: datetime
) -> tuple[list[smime.SmimeSigner], list[pysequoia.Tsk]]:
    smime_keys: list[smime.SmimeSigner] = []
    pgp_keys: list[pysequoia.Tsk] = []
    rows = session.scalars(
        select(TenantSigningKey).where(
            TenantSigningKey.tenant_id == tenant_id, TenantSigningKey.active.is_(True)
        )
    )
    # Expired keys still decrypt: a reply may answer a message sent before the expiry.
    for row in rows:
        try:
            if row.kind == "smime":
                smime_keys.append(
                    smime.load_signer(
                        row.certificate.encode("ascii"),
                        row.private_key.encode("ascii"),
                        row.chain.encode("ascii"),
                    )
                )
            else:
                pgp_keys.append(pysequoia.Tsk.from_bytes(row.private_key.encode("ascii")))
        except Exception:  # noqa: BLE001 - one unreadable key must not stop the others
            log.warning("inbound_reply.key_unreadable", key=str(row.id), kind=row.kind)
    return smime_keys, pgp_keys


def _tls_context(route: InboundRoute) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=route.ca_certificate or None)
    if route.tls_mode == "encrypt":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class RouteFailure(Exception):
    """The route could not take the reply now (no PHI in the message)."""


def send_to_route(
    route: InboundRoute, mail_from: str, recipients: Sequence[str], data: bytes
) -> None:
    """Send over STARTTLS to the route; raises :class:`RouteFailure` (never sends in
    the clear: a server without STARTTLS is a failure)."""
    try:
        with smtplib.SMTP(route.host, route.port, timeout=SMTP_SECONDS) as smtp:
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise RouteFailure("the route does not offer STARTTLS")
            smtp.starttls(context=_tls_context(route))
            smtp.ehlo()
            refused = smtp.sendmail(mail_from, list(recipients), data)
            if refused:
                raise RouteFailure(f"the route refused {len(refused)} recipients")
    except ssl.SSLError as error:
        raise RouteFailure(f"TLS failed: {error.reason or type(error).__name__}") from None
    except smtplib.SMTPResponseException as error:
        raise RouteFailure(f"the route answered {error.smtp_code}") from None
    except (TimeoutError, smtplib.SMTPException, OSError) as error:
        raise RouteFailure(f"connection failed: {type(error).__name__}") from None


def _retry_at(attempts: int, now: datetime) -> datetime:
    return now + timedelta(minutes=min(2**attempts, 240))


def deliver_reply(runtime: Runtime, tenant_id: uuid.UUID, reply_id: uuid.UUID) -> str:
    """Open one stored reply and send it to the organization's route; its new state
    (``delivered``, ``deferred``, ``failed``)."""
    now = utcnow()
    with runtime.tenant_session(tenant_id) as session:
        reply = session.get(InboundReply, reply_id)
        if reply is None or reply.tenant_id != tenant_id or reply.state == "delivered":
            return "missing" if reply is None else reply.state
        route = get_route(session, tenant_id)
        raw = base64.b64decode(reply.raw)
        mail_from, recipients = reply.mail_from, list(reply.recipients)
        smime_keys, pgp_keys = _organization_keys(session, tenant_id, now)
        sender = parseaddr(str(unwrap._parse(raw).get("From", "")))[1]

        def sender_certs() -> list[pysequoia.Cert]:
            certs = unwrap.autocrypt_certs(raw, sender) if sender else []
            if sender:
                try:
                    usable = directory.usable_keys(session, tenant_id, sender, now, kind="openpgp")
                except ValidationFailed:
                    usable = []
                certs.extend(key.cert for key in usable if key.cert is not None)
            return certs

        opened = unwrap.open_reply(
            raw, smime_keys=smime_keys, pgp_keys=pgp_keys, sender_certs=sender_certs
        )
        reply.method, reply.decrypted = opened.method, opened.decrypted
        reply.signature, reply.signer_fingerprint = opened.signature, opened.signer_fingerprint
        discovered = _discover(session, tenant_id, opened) if reply.attempts == 0 else 0
        reply.attempts += 1
        try:
            if route is None or not route.enabled:
                raise RouteFailure("the organization has no enabled inbound route")
            send_to_route(route, mail_from, recipients, opened.data)
        except RouteFailure as failure:
            reply.last_error = str(failure)[:200]
            reply.state = "failed" if reply.attempts >= MAX_ATTEMPTS else "deferred"
            reply.next_attempt_at = _retry_at(reply.attempts, now)
            action = "inbound_reply.defer"
        else:
            reply.state, reply.delivered_at, reply.last_error = "delivered", now, ""
            action = "inbound_reply.deliver"
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=INBOUND_ACTOR,
            action=action,
            object_type="inbound_reply",
            object_id=str(reply.id),
            details={
                "state": reply.state,
                "method": opened.method,
                "decrypted": opened.decrypted,
                "signature": opened.signature,
                "signer_fingerprint": opened.signer_fingerprint,
                "keys_discovered": discovered,
                "note": opened.note,
                "attempts": reply.attempts,
                "error": reply.last_error,
            },
        )
        state = reply.state
    log.info(
        "inbound_reply.processed",
        reply=str(reply_id),
        state=state,
        method=opened.method,
        decrypted=opened.decrypted,
        signature=opened.signature,
    )
    return state


def _discover(session: Session, tenant_id: uuid.UUID, opened: unwrap.Opened) -> int:
    """Offer the keys a decrypted reply carries (a verified S/MIME signer's
    certificate, an Autocrypt header) to the key directory, source ``received``."""
    if not opened.decrypted or not opened.inner:
        return 0
    include_smime = opened.method == "smime" and opened.signature == "valid"
    try:
        with session.begin_nested():
            rows = directory.import_from_message(
                session,
                tenant_id,
                opened.inner,
                actor=INBOUND_ACTOR,
                source="received",
                include_smime=include_smime,
            )
    except ValidationFailed:
        return 0
    except Exception as error:  # noqa: BLE001 - discovery never stops the delivery
        log.warning("inbound_reply.keys_failed", error=type(error).__name__)
        return 0
    return len(rows)


def deliver_due_replies(runtime: Runtime, *, limit: int = 100) -> int:
    """Retry the replies whose next attempt is due (the worker's job); how many."""
    now = utcnow()
    with runtime.database.session() as session:
        due = session.execute(
            select(InboundReply.tenant_id, InboundReply.id)
            .where(
                InboundReply.state.in_(("received", "deferred")),
                InboundReply.next_attempt_at <= now,
            )
            .order_by(InboundReply.next_attempt_at)
            .limit(limit)
        ).all()
    for tenant_id, reply_id in due:
        try:
            deliver_reply(runtime, tenant_id, reply_id)
        except Exception as error:  # noqa: BLE001 - one reply must not stop the rest
            log.error("inbound_reply.failed", reply=str(reply_id), error=type(error).__name__)
    return len(due)
