"""may_send, the pure consent decision: table tests for each rule, and hypothesis over
every combination of consents, suppression, channel, purpose and PHI use against an
independent statement of the rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.consent.decision import (
    ConsentState,
    Decision,
    SuppressionMatch,
    may_send,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
GRANTED = ConsentState("granted")
REVOKED = ConsentState("revoked")
PENDING = ConsentState("pending")
EXPIRED = ConsentState("granted", NOW - timedelta(seconds=1))
FUTURE = ConsentState("granted", NOW + timedelta(days=1))
UNSUBSCRIBED = SuppressionMatch("unsubscribe", "marketing")
BOUNCED = SuppressionMatch("hard_bounce", "all")


def decide(consents, purpose, *, channel="email", suppression=None, uses_phi=False) -> Decision:
    return may_send(consents, suppression, channel, purpose, uses_phi, NOW)


def test_marketing_needs_a_grant():
    assert not decide({}, "marketing")
    assert decide({}, "marketing").reasons == ("consent_missing:marketing",)
    assert decide({("email", "marketing"): GRANTED}, "marketing")


def test_a_grant_on_one_channel_does_not_cover_the_other():
    assert not decide({("email", "marketing"): GRANTED}, "marketing", channel="sms")


@pytest.mark.parametrize(
    ("state", "reason"),
    [(REVOKED, "revoked"), (PENDING, "pending"), (EXPIRED, "expired")],
)
def test_marketing_refused_unless_the_grant_is_current(state, reason):
    decision = decide({("email", "marketing"): state}, "marketing")
    assert not decision and decision.reasons == (f"consent_{reason}:marketing",)


def test_a_grant_expiring_later_still_counts():
    assert decide({("email", "marketing"): FUTURE}, "marketing")


def test_marketing_with_phi_needs_the_authorization_too():
    consents = {("email", "marketing"): GRANTED}
    decision = decide(consents, "marketing", uses_phi=True)
    assert not decision and decision.reasons == ("phi_authorization_missing",)
    consents[("email", "marketing_phi")] = GRANTED
    assert decide(consents, "marketing", uses_phi=True).reasons == (
        "consent_granted",
        "phi_authorization_granted",
    )


def test_the_authorization_alone_is_not_a_marketing_grant():
    decision = decide({("email", "marketing_phi"): GRANTED}, "marketing", uses_phi=True)
    assert decision.reasons == ("consent_missing:marketing",)


def test_transactional_email_needs_no_opt_in_but_honours_a_revocation():
    assert decide({}, "transactional").reasons == ("transactional_needs_no_opt_in",)
    assert decide({}, "transactional", uses_phi=True)
    assert not decide({("email", "transactional"): REVOKED}, "transactional")


def test_transactional_text_needs_prior_consent():
    assert not decide({}, "transactional", channel="sms")
    assert decide({("sms", "transactional"): GRANTED}, "transactional", channel="sms")


def test_an_unsubscribe_stops_marketing_but_not_care_messages():
    consents = {("email", "marketing"): GRANTED}
    refused = decide(consents, "marketing", suppression=UNSUBSCRIBED)
    assert refused.reasons == ("suppressed_for_marketing:unsubscribe",)
    assert decide(consents, "transactional", suppression=UNSUBSCRIBED)


def test_a_hard_bounce_stops_everything():
    consents = {("email", "marketing"): GRANTED, ("email", "transactional"): GRANTED}
    for purpose in ("marketing", "transactional"):
        assert decide(consents, purpose, suppression=BOUNCED).reasons == ("suppressed:hard_bounce",)


def test_tenant_topics_need_their_own_grant():
    assert not decide({("email", "marketing"): GRANTED}, "flu-shots")
    assert decide({("email", "flu-shots"): GRANTED}, "flu-shots")
    assert not decide({("email", "flu-shots"): GRANTED}, "flu-shots", suppression=UNSUBSCRIBED)


def test_the_authorization_is_not_a_purpose_to_send_for():
    assert (
        "not_a_send_purpose"
        in decide({("email", "marketing_phi"): GRANTED}, "marketing_phi").reasons
    )


def test_an_unknown_channel_is_refused():
    assert "unknown_channel" in decide({}, "transactional", channel="fax").reasons


# --- every combination ------------------------------------------------------------------

CHANNELS = ("email", "sms")
PURPOSES = ("transactional", "marketing", "marketing_phi", "research", "flu-shots")
STATES = st.sampled_from([GRANTED, REVOKED, PENDING, EXPIRED, FUTURE])
consents_strategy = st.dictionaries(
    st.tuples(st.sampled_from(CHANNELS), st.sampled_from(PURPOSES)), STATES, max_size=10
)
suppressions = st.sampled_from([None, UNSUBSCRIBED, BOUNCED, SuppressionMatch("manual", "all")])


def _current(consents, channel, purpose) -> bool:
    state = consents.get((channel, purpose))
    return state is not None and state.granted_at(NOW)


def oracle(consents, suppression, channel, purpose, uses_phi) -> bool:
    """The rules as a compliance officer states them, written independently."""
    if purpose == "marketing_phi":
        return False
    if suppression is not None and suppression.scope == "all":
        return False
    if purpose == "transactional":
        if channel == "sms":
            return _current(consents, channel, purpose)
        state = consents.get((channel, purpose))
        return state is None or state.status != "revoked"
    if suppression is not None:
        return False
    if not _current(consents, channel, purpose):
        return False
    return not uses_phi or _current(consents, channel, "marketing_phi")


@given(
    consents=consents_strategy,
    suppression=suppressions,
    channel=st.sampled_from(CHANNELS),
    purpose=st.sampled_from(PURPOSES),
    uses_phi=st.booleans(),
)
def test_may_send_agrees_with_the_rules(consents, suppression, channel, purpose, uses_phi):
    decision = may_send(consents, suppression, channel, purpose, uses_phi, NOW)
    assert decision.allowed is oracle(consents, suppression, channel, purpose, uses_phi)
    assert decision.reasons, "every decision says why"
    assert bool(decision) is decision.allowed
    if not decision.allowed:
        # A refusal never carries a reason of approval.
        assert not any(
            r in ("consent_granted", "phi_authorization_granted") for r in decision.reasons
        )


@given(consents=consents_strategy, channel=st.sampled_from(CHANNELS), uses_phi=st.booleans())
def test_adding_a_suppression_never_allows_more(consents, channel, uses_phi):
    for purpose in PURPOSES:
        free = may_send(consents, None, channel, purpose, uses_phi, NOW).allowed
        for match in (UNSUBSCRIBED, BOUNCED):
            assert not may_send(consents, match, channel, purpose, uses_phi, NOW).allowed or free


@given(consents=consents_strategy, channel=st.sampled_from(CHANNELS))
def test_using_phi_never_allows_more(consents, channel):
    for purpose in PURPOSES:
        with_phi = may_send(consents, None, channel, purpose, True, NOW).allowed
        assert not with_phi or may_send(consents, None, channel, purpose, False, NOW).allowed


@given(consents=consents_strategy, channel=st.sampled_from(CHANNELS))
def test_revoking_never_allows_more(consents, channel):
    for purpose in PURPOSES:
        before = may_send(consents, None, channel, purpose, False, NOW).allowed
        revoked = dict(consents) | {(channel, purpose): REVOKED}
        assert not may_send(revoked, None, channel, purpose, False, NOW).allowed or before
