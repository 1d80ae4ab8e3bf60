"""The DLP routes: dictionaries and MRN patterns (stored encrypted, audited without
their terms), dry-run scans that never echo what they matched, and problem+json
errors naming the field."""

from __future__ import annotations

import base64
import json
import re

from sqlalchemy import text

from tests.canaries import phi_value
from tests.dlp.dlp_samples import docx_with_text, fresh_ssn, pdf_with_text

V1 = "/api/v1/dlp"


def _headers(tenant, make_api_key):
    return make_api_key(tenant)


def test_dictionary_lifecycle_is_audited_without_terms(
    client, runtime, tenant, make_api_key, audit_trail
):
    headers = make_api_key(tenant)
    term = phi_value("drug")
    body = {"name": "watchlist", "kind": "dictionary", "terms": [term, f"  {term.upper()} "]}
    created = client.post(f"{V1}/dictionaries", json=body, headers=headers)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["detector"] == "keyword:watchlist"
    assert rule["terms"] == [term.lower()]  # normalized and de-duplicated
    # Stored encrypted: the raw column holds no term.
    with runtime.database.session() as session:
        raw = session.execute(text("SELECT terms FROM dlp_rules WHERE name = 'watchlist'")).scalar()
    assert term.lower().encode() not in bytes(raw)

    changed = client.patch(
        f"{V1}/dictionaries/{rule['id']}", json={"severity": "high"}, headers=headers
    )
    assert changed.status_code == 200 and changed.json()["severity"] == "high"
    listed = client.get(f"{V1}/dictionaries", headers=headers).json()["items"]
    assert [item["name"] for item in listed] == ["watchlist"]
    assert client.delete(f"{V1}/dictionaries/{rule['id']}", headers=headers).status_code == 204
    events = [e for e in audit_trail(tenant) if e.action.startswith("dlp_rule.")]
    assert [e.action for e in events] == ["dlp_rule.create", "dlp_rule.update", "dlp_rule.delete"]
    assert events[0].details["terms"] == 1
    for event in events:
        assert term.lower() not in str(event.details).lower()


def test_mrn_patterns_are_checked_when_saved(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    bad = client.post(
        f"{V1}/dictionaries",
        json={"name": "slow", "kind": "mrn_pattern", "pattern": "(a|aa)+$"},
        headers=headers,
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["errors"][0]["pointer"] == "#/body/pattern"
    invalid = client.post(
        f"{V1}/dictionaries",
        json={"name": "broken", "kind": "mrn_pattern", "pattern": "MRN(\\d+"},
        headers=headers,
    )
    assert invalid.status_code == 422 and "position" in invalid.json()["detail"]
    good = client.post(
        f"{V1}/dictionaries",
        json={"name": "mrn", "kind": "mrn_pattern", "pattern": r"MRN[-: ]?\d{7}"},
        headers=headers,
    )
    assert good.status_code == 201
    duplicate = client.post(
        f"{V1}/dictionaries",
        json={"name": "mrn", "kind": "dictionary", "terms": ["x1"]},
        headers=headers,
    )
    assert duplicate.status_code == 409
    mixed = client.post(
        f"{V1}/dictionaries",
        json={"name": "mixed", "kind": "dictionary", "terms": ["ab"], "pattern": "x"},
        headers=headers,
    )
    assert mixed.status_code == 422 and mixed.json()["errors"][0]["pointer"] == "#/body/pattern"


def test_a_bad_term_is_named_by_index_never_quoted(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    long_term = phi_value("term") * 20
    response = client.post(
        f"{V1}/dictionaries",
        json={"name": "x", "kind": "dictionary", "terms": ["fine", long_term]},
        headers=headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/body/terms/1"
    assert long_term[:20] not in response.text


def test_dry_run_scan_reports_findings_without_the_matched_text(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    ssn = fresh_ssn()
    term = phi_value("drug")
    client.post(
        f"{V1}/dictionaries",
        json={"name": "drugs", "kind": "dictionary", "terms": [term]},
        headers=headers,
    )
    client.post(
        f"{V1}/dictionaries",
        json={"name": "mrn", "kind": "mrn_pattern", "pattern": r"MRN-\d{7}"},
        headers=headers,
    )
    mrn = "MRN-" + "".join(str(ord(c) % 10) for c in phi_value("mrn"))[:7]
    body = {
        "subject": f"Re: {term}",
        "text": f"SSN {ssn}, {mrn}",
        "html": f"<p>DOB: 03/14/1975 {ssn}</p>",
        "attachments": [
            {
                "name": f"{ssn}.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(pdf_with_text("SSN", ssn)).decode(),
            },
            {
                "name": "letter.docx",
                "content_type": "application/octet-stream",
                "content_base64": base64.b64encode(docx_with_text(f"about {term}")).decode(),
            },
        ],
    }
    response = client.post(f"{V1}/scan", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result = response.json()
    found = sorted((f["detector"], f["part"], f["attachment_index"]) for f in result["findings"])
    assert found == [
        ("date_of_birth", "html", None),
        ("keyword:drugs", "attachment", 1),
        ("keyword:drugs", "subject", None),
        ("mrn:mrn", "text", None),
        ("ssn", "attachment", 0),
        ("ssn", "attachment_name", 0),
        ("ssn", "html", None),
        ("ssn", "text", None),
    ]
    assert result["summary"]["highest_severity"] == "critical"
    assert result["summary"]["phi"] is True and result["summary"]["complete"] is True
    # The PHI canary test: nothing the scan matched comes back. Fingerprints are keyed
    # hashes in hex, which may hold "1975" by chance: the rest of the answer may not.
    assert all(re.fullmatch(r"[0-9a-f]{40}", f["fingerprint"]) for f in result["findings"])
    shown = json.dumps(
        result
        | {
            "findings": [
                {k: v for k, v in f.items() if k != "fingerprint"} for f in result["findings"]
            ]
        }
    )
    for value in (ssn, ssn.replace("-", ""), term, term.lower(), mrn, "1975"):
        assert value not in shown
    # The same SSN gives the same fingerprint in every part.
    ssn_prints = {f["fingerprint"] for f in result["findings"] if f["detector"] == "ssn"}
    assert len(ssn_prints) == 1


def test_scan_errors_name_the_field_and_quote_nothing(client, tenant, make_api_key):
    headers = make_api_key(tenant)
    ssn = fresh_ssn()
    response = client.post(
        f"{V1}/scan",
        json={"text": f"SSN {ssn}", "attachments": [{"name": "a", "content_base64": f"{ssn}!!"}]},
        headers=headers,
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/body/attachments/0/content_base64"
    assert ssn not in response.text
    unknown = client.post(f"{V1}/scan", json={"text": ssn, "extra": ssn}, headers=headers)
    assert unknown.status_code == 422 and ssn not in unknown.text


def test_another_tenants_dictionaries_do_not_apply(client, make_tenant, make_api_key):
    a, b = make_tenant(), make_tenant()
    term = phi_value("drug")
    client.post(
        f"{V1}/dictionaries",
        json={"name": "drugs", "kind": "dictionary", "terms": [term]},
        headers=make_api_key(b),
    )
    response = client.post(f"{V1}/scan", json={"text": term}, headers=make_api_key(a))
    assert response.json()["findings"] == []
