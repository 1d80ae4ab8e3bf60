"""The delivery interface the outbox sends through: an envelope in, one outcome per
recipient out (docs/email-interfaces contract, issue 5).

An :class:`Envelope` is the SMTP envelope of RFC 5321 section 2.3.1 (reverse-path,
forward-paths) with the message bytes, already built and signed. A :class:`Transport`
hands it to the next hop and reports, for each recipient, what the receiving server
said: ``delivered`` (2xx: it took responsibility), ``deferred`` (4xx or any network or
TLS trouble: try again later, see :mod:`carepost.delivery.retry`) or ``bounced`` (5xx:
give up now), or ``tls_unavailable`` (the envelope requires TLS the destinations
could not give: the caller falls back by policy). ``deliver`` never raises for
trouble on the network; a deferral is an outcome like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from carepost.core.config import Settings

OutcomeStatus = Literal["delivered", "deferred", "bounced", "tls_unavailable"]
# What the envelope's content needs of the connection (carepost.policy.decision):
# "verified" STARTTLS with the MX certificate verified (PKIX against the MX name, or
# DANE TLSA), "starttls" STARTTLS without verification, "opportunistic" TLS when
# offered. The two required levels never fall back to plaintext, ask for TLS 1.2 at
# least, and end as ``tls_unavailable`` when TLS cannot be had.
TlsRequirement = Literal["verified", "starttls", "opportunistic"]


@dataclass(frozen=True)
class Envelope:
    """One message to several recipients of one domain: the content is identical for all."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    tls: TlsRequirement = "opportunistic"
    # The MTA-STS policy's mx patterns (enforce mode): only matching MX hosts are used.
    mx_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecipientOutcome:
    """What happened to one recipient. ``code``, ``enhanced`` and ``text`` are the
    receiving server's reply (RFC 5321 section 4.2, RFC 3463 enhanced status), or
    carepost's own words when no server answered; never any of the message content."""

    recipient: str
    status: OutcomeStatus
    code: int | None
    enhanced: str | None
    text: str


@dataclass(frozen=True)
class DeliveryReport:
    """The outcomes of one envelope, in the order of its recipients; ``host`` is the
    server that gave the last answer (None when none could be reached) and ``tls``
    whether that session was encrypted."""

    outcomes: tuple[RecipientOutcome, ...]
    host: str | None
    tls: bool
    # True when ``host`` is the recipient domain's MX (not a smarthost): then ``tls``
    # says something of the domain (carepost.protection.domain_tls).
    mx: bool = False


class Transport(Protocol):
    """Something that delivers envelopes: direct to MX or through a smarthost."""

    async def deliver(self, envelope: Envelope) -> DeliveryReport: ...

    async def aclose(self) -> None: ...


def transport_from_settings(settings: Settings) -> Transport:
    """The SMTP transport the settings describe (``smtp_mode``: smarthost or mx)."""
    # Imported here: smtp.py builds on the dataclasses above.
    from carepost.delivery.smtp import SmtpTransport

    return SmtpTransport.from_settings(settings)
