"""Policy documents: defaults, and refusals that name the field at fault."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from carepost.policy.documents import PolicyDocument


def test_defaults_are_safe():
    rules = PolicyDocument().defaults
    assert rules.phi_without_tls == "portal"
    assert rules.phi_tls_minimum == "verified"
    assert rules.block_detectors == ["credit_card"]
    assert rules.incomplete_scan_is_phi is True


@pytest.mark.parametrize(
    ("document", "location"),
    [
        ({"defaults": {"phi_without_tls": "plaintext"}}, ("defaults", "phi_without_tls")),
        ({"defaults": {"block_detectors": ["nonsense"]}}, ("defaults", "block_detectors")),
        ({"defaults": {"e2e_preference": ["smime", "smime"]}}, ("defaults", "e2e_preference")),
        ({"defaults": {"min_confidence": 2}}, ("defaults", "min_confidence")),
        ({"defaults": {"surprise": True}}, ("defaults", "surprise")),
        ({"domains": {"not a domain": {}}}, ("domains",)),
        ({"domains": {"example.org": {"non_phi_tls": "never"}}}, ("domains", "example.org")),
        ({"templates": {"not-a-uuid": {}}}, ("templates",)),
        ({"version": 2}, ("version",)),
    ],
)
def test_invalid_documents_name_the_field(document, location):
    with pytest.raises(ValidationError) as caught:
        PolicyDocument.model_validate(document)
    assert caught.value.errors()[0]["loc"][: len(location)] == location


def test_tenant_detector_names_and_domain_normalization():
    document = PolicyDocument.model_validate(
        {
            "defaults": {"block_detectors": ["credit_card", "keyword:opioids", "mrn"]},
            "domains": {"Example.ORG.": {}, "*.example.net": {}},
        }
    )
    assert set(document.domains) == {"example.org", "*.example.net"}
    assert document.defaults.block_detectors == ["credit_card", "keyword:opioids", "mrn"]
