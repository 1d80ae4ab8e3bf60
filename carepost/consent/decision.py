"""May this message go to this contact? A pure decision with its reasons.

Every send path calls :func:`may_send` with the contact's current consents (see
:func:`carepost.consent.service.current_consents`), the suppression matching the
address it would send to (:func:`carepost.consent.service.is_suppressed`), the
channel, the message's purpose and whether it uses PHI. The function does no
I/O; the caller acts on the decision and records it.

The rules, in order (every failing rule adds its reason; any reason of refusal wins):

1. A suppression with scope ``all`` (hard bounce, complaint, manual) blocks every
   message; scope ``marketing`` (an unsubscribe) blocks all but ``transactional``.
2. ``transactional`` (treatment, payment, operations) by email needs no opt-in, but
   an explicit revocation is honoured; by SMS it needs a grant (prior express
   consent for texts, TCPA).
3. Any other purpose (``marketing``, ``research``, a tenant topic) needs a current,
   unexpired grant for that channel and purpose.
4. Marketing that uses PHI needs, in addition, a granted ``marketing_phi``
   (the HIPAA marketing authorization, 45 CFR 164.508(a)(3)) for the channel.
   The authorization is never implied by a topic or a general marketing grant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class Purpose(StrEnum):
    """Built-in purposes; tenants add their own as topics."""

    TRANSACTIONAL = "transactional"
    MARKETING = "marketing"
    MARKETING_PHI = "marketing_phi"
    RESEARCH = "research"


class Status(StrEnum):
    GRANTED = "granted"
    REVOKED = "revoked"
    PENDING = "pending"


class Scope(StrEnum):
    ALL = "all"
    MARKETING = "marketing"


@dataclass(frozen=True)
class ConsentState:
    """The current consent of one contact for one channel and purpose."""

    status: str
    expires_at: datetime | None = None

    def granted_at(self, now: datetime) -> bool:
        return self.status == Status.GRANTED and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class SuppressionMatch:
    """The suppression entry matching the address, as far as a decision needs it."""

    reason: str
    scope: str


@dataclass(frozen=True)
class Decision:
    """Whether to send, and why: stable reason codes, refusals first."""

    allowed: bool
    reasons: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.allowed


# (channel, purpose) -> the contact's current state for it; absent means never recorded.
Consents = Mapping[tuple[str, str], ConsentState]


def _shortfall(consents: Consents, channel: str, purpose: str, now: datetime) -> str | None:
    """Why the grant for (channel, purpose) is not current (missing, revoked, pending,
    expired), or None when it is."""
    state = consents.get((channel, purpose))
    if state is None:
        return "missing"
    if state.status == Status.REVOKED:
        return "revoked"
    if state.status != Status.GRANTED:
        return "pending"
    if not state.granted_at(now):
        return "expired"
    return None


def may_send(
    consents: Consents,
    suppression: SuppressionMatch | None,
    channel: str,
    purpose: str,
    uses_phi: bool,
    now: datetime,
) -> Decision:
    """Decide whether a message of ``purpose`` may go to a contact over ``channel``."""
    refusals: list[str] = []
    if channel not in tuple(Channel):
        refusals.append("unknown_channel")
    if purpose == Purpose.MARKETING_PHI:
        # The authorization is a condition of marketing, not a purpose to send for.
        refusals.append("not_a_send_purpose")
    if suppression is not None:
        if suppression.scope == Scope.ALL:
            refusals.append(f"suppressed:{suppression.reason}")
        elif purpose != Purpose.TRANSACTIONAL:
            refusals.append(f"suppressed_for_marketing:{suppression.reason}")
    shortfall = _shortfall(consents, channel, purpose, now)
    if purpose == Purpose.TRANSACTIONAL:
        # Treatment messages may carry PHI without an authorization (the encryption
        # policy protects them); by email they need no opt-in, by SMS they do.
        if channel == Channel.SMS and shortfall is not None:
            refusals.append(f"consent_{shortfall}:{purpose}")
        elif shortfall == "revoked":
            refusals.append(f"consent_revoked:{purpose}")
    else:
        if shortfall is not None:
            refusals.append(f"consent_{shortfall}:{purpose}")
        if uses_phi:
            missing = _shortfall(consents, channel, Purpose.MARKETING_PHI, now)
            if missing is not None:
                refusals.append(f"phi_authorization_{missing}")
    if refusals:
        return Decision(False, tuple(refusals))
    if purpose == Purpose.TRANSACTIONAL and shortfall is not None:
        return Decision(True, ("transactional_needs_no_opt_in",))
    granted = ["consent_granted"]
    if uses_phi and purpose != Purpose.TRANSACTIONAL:
        granted.append("phi_authorization_granted")
    return Decision(True, tuple(granted))
