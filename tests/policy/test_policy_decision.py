"""decide_protection: the decision table, overrides, and the properties that must hold
whatever the inputs (PHI never opportunistic or in plaintext, bad keys never used)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.dlp.findings import ScanSummary
from carepost.policy.decision import (
    DomainTls,
    MessageFacts,
    RecipientKeys,
    SenderSettings,
    decide_protection,
)
from carepost.policy.documents import PolicyDocument

VERIFIED = DomainTls(mta_sts="enforce", starttls_seen=True)
DANE = DomainTls(dane_usable=True, starttls_seen=True)
STARTTLS_ONLY = DomainTls(mta_sts="testing", starttls_seen=True)
NO_TLS = DomainTls()
OPP = "opportunistic"


def summary(*detectors: str, confidence: float = 0.9, complete: bool = True) -> ScanSummary:
    return ScanSummary(
        counts={name: 1 for name in detectors},
        max_confidence={name: confidence for name in detectors},
        phi=bool(detectors),
        complete=complete,
    )


def decide(dlp=None, *, template_phi=False, keys=RecipientKeys(), tls=NO_TLS, policy=None,
           sender=SenderSettings(), domain="example.org", template_id=None):  # fmt: skip
    return decide_protection(
        recipient_domain=domain,
        message=MessageFacts(dlp or ScanSummary(), template_phi, template_id),
        keys=keys,
        tls=tls,
        sender=sender,
        policy=policy or PolicyDocument(),
    )


@pytest.mark.parametrize(
    ("dlp", "template_phi", "keys", "tls", "method", "transport"),
    [
        # No PHI: TLS when offered; a valid key is still used (e2e_for_all).
        (None, False, RecipientKeys(), NO_TLS, "tls_opportunistic", "opportunistic"),
        (None, False, RecipientKeys(smime="valid"), NO_TLS, "smime", "opportunistic"),
        # PHI with guaranteed TLS: required, verified.
        (summary("ssn"), False, RecipientKeys(), VERIFIED, "tls_required", "verified"),
        (None, True, RecipientKeys(), DANE, "tls_required", "verified"),
        # PHI without guaranteed TLS: portal (a STARTTLS seen is not a guarantee).
        (summary("ssn"), False, RecipientKeys(), STARTTLS_ONLY, "portal", "opportunistic"),
        (None, True, RecipientKeys(), NO_TLS, "portal", "opportunistic"),
        # Keys: preferred over TLS, in the tenant's order; bad keys skipped.
        (None, True, RecipientKeys(smime="valid", openpgp="valid"), VERIFIED, "smime", "verified"),
        (None, True, RecipientKeys(smime="expired", openpgp="valid"), NO_TLS, "openpgp", OPP),
        (None, True, RecipientKeys(smime="revoked", openpgp="expired"), NO_TLS, "portal", OPP),
        # Block detectors win over everything.
        (summary("credit_card"), False, RecipientKeys(smime="valid"), VERIFIED, "block", "none"),
    ],
)  # fmt: skip
def test_the_decision_table(dlp, template_phi, keys, tls, method, transport):
    decision = decide(dlp, template_phi=template_phi, keys=keys, tls=tls)
    assert (decision.method, decision.tls) == (method, transport)


def test_reasons_say_why():
    decision = decide(summary("ssn"), keys=RecipientKeys(smime="expired"), tls=STARTTLS_ONLY)
    assert decision.reasons == (
        "phi.dlp:ssn",
        "e2e.smime:expired",
        "tls.mta_sts:testing",
        "tls.starttls_seen",
        "tls.not_guaranteed",
        "fallback.portal",
    )
    assert decide(summary("credit_card")).reasons == ("dlp.block:credit_card",)


def test_low_confidence_findings_do_not_count():
    assert decide(summary("ssn", confidence=0.35)).method == "tls_opportunistic"
    assert decide(summary("credit_card", confidence=0.2)).method == "tls_opportunistic"


def test_an_incomplete_scan_counts_as_phi_unless_the_policy_says_not():
    assert decide(summary(complete=False)).method == "portal"
    policy = PolicyDocument.model_validate({"defaults": {"incomplete_scan_is_phi": False}})
    assert decide(summary(complete=False), policy=policy).method == "tls_opportunistic"


def test_policy_fallback_block_and_starttls_minimum():
    block = PolicyDocument.model_validate({"defaults": {"phi_without_tls": "block"}})
    assert decide(template_phi=True, policy=block).method == "block"
    starttls = PolicyDocument.model_validate({"defaults": {"phi_tls_minimum": "starttls"}})
    decision = decide(template_phi=True, tls=STARTTLS_ONLY, policy=starttls)
    assert (decision.method, decision.tls) == ("tls_required", "starttls")
    assert decide(template_phi=True, tls=NO_TLS, policy=starttls).method == "portal"


def test_phi_requires_e2e_and_portal_detectors_never_settle_for_tls():
    e2e = PolicyDocument.model_validate({"defaults": {"phi_requires_e2e": True}})
    assert decide(template_phi=True, tls=VERIFIED, policy=e2e).method == "portal"
    portal = PolicyDocument.model_validate({"defaults": {"portal_detectors": ["keyword"]}})
    assert decide(summary("keyword:hiv"), tls=VERIFIED, policy=portal).method == "portal"
    assert decide(summary("keyword:hiv"), tls=VERIFIED).method == "tls_required"


def test_non_phi_tls_required_by_policy():
    policy = PolicyDocument.model_validate({"defaults": {"non_phi_tls": "required"}})
    assert decide(tls=VERIFIED, policy=policy).tls == "verified"
    assert decide(tls=NO_TLS, policy=policy).tls == "starttls"


def test_sender_settings():
    assert decide(sender=SenderSettings(force_portal=True), tls=VERIFIED).method == "portal"
    assert decide(sender=SenderSettings(treat_as_phi=True), tls=NO_TLS).method == "portal"


def test_domain_and_template_overrides_apply_most_specific_last():
    template = str(uuid.uuid4())
    policy = PolicyDocument.model_validate(
        {
            "defaults": {"e2e_preference": ["smime", "openpgp"]},
            "domains": {
                "*.example.org": {"e2e_preference": ["openpgp", "smime"]},
                "partner.example.org": {"phi_without_tls": "block"},
            },
            "templates": {template: {"block_detectors": []}},
        }
    )
    both = RecipientKeys(smime="valid", openpgp="valid")
    wildcard = decide(template_phi=True, keys=both, policy=policy, domain="mail.example.org")
    assert wildcard.method == "openpgp"
    assert "override.domain:*.example.org" in wildcard.reasons
    exact = decide(template_phi=True, policy=policy, domain="Partner.Example.org.")
    assert exact.method == "block" and "override.domain:partner.example.org" in exact.reasons
    card = summary("credit_card")
    assert decide(card, policy=policy).method == "block"
    unblocked = decide(card, policy=policy, template_id=template)
    assert unblocked.method == "tls_opportunistic"
    assert f"override.template:{template}" in unblocked.reasons


KEY_STATES = st.sampled_from(["none", "valid", "expired", "revoked"])
DETECTORS = st.sampled_from(
    ["ssn", "mbi", "icd10", "date_of_birth", "credit_card", "npi", "us_phone", "keyword:x", "mrn:y"]
)
TLS = st.builds(
    DomainTls,
    mta_sts=st.sampled_from(["enforce", "testing", "none"]),
    dane_usable=st.booleans(),
    starttls_seen=st.booleans(),
)
RULES = st.fixed_dictionaries(
    {},
    optional={
        "e2e_preference": st.sampled_from([["smime"], ["openpgp"], ["openpgp", "smime"], []]),
        "e2e_for_all": st.booleans(),
        "phi_tls_minimum": st.sampled_from(["verified", "starttls"]),
        "phi_without_tls": st.sampled_from(["portal", "block"]),
        "phi_requires_e2e": st.booleans(),
        "non_phi_tls": st.sampled_from(["required", "opportunistic"]),
        "block_detectors": st.lists(DETECTORS, max_size=2),
        "portal_detectors": st.lists(DETECTORS, max_size=2),
        "min_confidence": st.floats(0, 1),
        "incomplete_scan_is_phi": st.booleans(),
    },
)
INPUTS = st.fixed_dictionaries(
    {
        "findings": st.dictionaries(DETECTORS, st.floats(0.01, 1), max_size=4),
        "complete": st.booleans(),
        "template_phi": st.booleans(),
        "keys": st.builds(RecipientKeys, smime=KEY_STATES, openpgp=KEY_STATES),
        "tls": TLS,
        "rules": RULES,
        "domain_rules": st.one_of(st.none(), RULES),
        "sender": st.builds(SenderSettings, force_portal=st.booleans(), treat_as_phi=st.booleans()),
    }
)


def _run(inputs):
    policy = PolicyDocument.model_validate(
        {
            "defaults": inputs["rules"],
            "domains": {"example.org": inputs["domain_rules"]} if inputs["domain_rules"] else {},
        }
    )
    dlp = ScanSummary(
        counts={name: 1 for name in inputs["findings"]},
        max_confidence=inputs["findings"],
        complete=inputs["complete"],
    )
    decision = decide(
        dlp,
        template_phi=inputs["template_phi"],
        keys=inputs["keys"],
        tls=inputs["tls"],
        policy=policy,
        sender=inputs["sender"],
    )
    return decision, dlp


@given(INPUTS)
def test_a_message_with_phi_is_never_decided_tls_opportunistic(inputs):
    decision, _ = _run(inputs)
    if decision.phi:
        assert decision.method != "tls_opportunistic"
        assert decision.tls != "none" or decision.method == "block"


@given(INPUTS)
def test_phi_by_tls_alone_only_over_guaranteed_tls(inputs):
    decision, _ = _run(inputs)
    tls = inputs["tls"]
    if decision.phi and decision.method == "tls_required":
        assert tls.verified or tls.starttls_seen
        assert decision.tls in ("verified", "starttls")


@given(INPUTS)
def test_template_phi_always_makes_the_decision_phi(inputs):
    decision, _ = _run(inputs)
    if inputs["template_phi"]:
        assert decision.phi or decision.method == "block"


@given(INPUTS)
def test_expired_or_revoked_keys_are_never_used(inputs):
    decision, _ = _run(inputs)
    if decision.method in ("smime", "openpgp"):
        assert inputs["keys"].state(decision.method) == "valid"


@given(INPUTS)
def test_block_detectors_found_always_block(inputs):
    decision, dlp = _run(inputs)
    from carepost.policy.decision import rules_for
    from carepost.policy.documents import selects

    domain = {"example.org": inputs["domain_rules"]} if inputs["domain_rules"] else {}
    policy = PolicyDocument.model_validate({"defaults": inputs["rules"], "domains": domain})
    rules, _ = rules_for(policy, "example.org", None)
    found = dlp.detectors_at(rules.min_confidence)
    if any(selects(s, d) for s in rules.block_detectors for d in found):
        assert decision.method == "block"
        assert decision.tls == "none"


@given(INPUTS)
def test_every_decision_has_reasons_and_is_deterministic(inputs):
    first, _ = _run(inputs)
    second, _ = _run(inputs)
    assert first == second
    assert first.reasons
    assert all(isinstance(reason, str) and reason for reason in first.reasons)
