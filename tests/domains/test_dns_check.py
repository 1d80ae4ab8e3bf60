"""The SPF/DKIM/DMARC checker against a real DNS server on loopback: each kind of
mistake an admin makes gets a finding that says what to fix."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.domains.checks import check_domain, make_resolver
from carepost.domains.keys import generate_key, key_record_value, txt_strings, zone_text
from carepost.domains.records import KeyInfo, SenderPolicy, records_to_publish
from tests.dns_server import dns_server

DOMAIN = "clinic.example"
POLICY = SenderPolicy(spf_include="spf.carepost.example", spf_addresses=("192.0.2.10",))


@pytest.fixture(scope="module")
def keys() -> list[KeyInfo]:
    rsa = generate_key("rsa-sha256")
    ed = generate_key("ed25519-sha256")
    return [
        KeyInfo("cp-rsa-1", "rsa-sha256", rsa.public_key, "active"),
        KeyInfo("cp-ed-1", "ed25519-sha256", ed.public_key, "active"),
    ]


@pytest.fixture(scope="module")
def server():
    with dns_server() as running:
        yield running


@pytest.fixture
def dns(server):
    zone, host, port = server
    zone.clear()
    return zone, make_resolver([f"{host}:{port}"], timeout=3)


def publish_all(zone, keys, domain=DOMAIN):
    for record in records_to_publish(domain, keys, POLICY):
        zone.txt(record.name + ".", record.value)


def by_kind(check):
    return {(f.kind, f.name): f for f in check.findings}


def test_everything_published_passes_with_a_dmarc_warning(dns, keys):
    zone, resolver = dns
    publish_all(zone, keys)
    check = check_domain(resolver, DOMAIN, keys, POLICY)
    levels = {(f.kind, f.level) for f in check.findings}
    assert levels == {("spf", "ok"), ("dkim", "ok"), ("dmarc", "warning")}
    assert check.passed and check.level == "warning"
    dmarc = next(f for f in check.findings if f.kind == "dmarc")
    assert "p=quarantine" in dmarc.message


def test_nothing_published_says_what_to_publish(dns, keys):
    _zone, resolver = dns
    check = check_domain(resolver, DOMAIN, keys, POLICY)
    assert not check.passed
    assert all(f.level == "error" for f in check.findings)
    findings = by_kind(check)
    spf = findings[("spf", DOMAIN)]
    assert "no SPF record" in spf.message
    assert "include:spf.carepost.example ip4:192.0.2.10 ~all" in spf.message
    dkim = findings[("dkim", f"cp-rsa-1._domainkey.{DOMAIN}")]
    assert "Publish the TXT record" in dkim.message and dkim.expected.startswith("v=DKIM1; k=rsa;")
    assert "_dmarc.clinic.example" in findings[("dmarc", f"_dmarc.{DOMAIN}")].message


def test_two_spf_records_are_an_error(dns, keys):
    zone, resolver = dns
    publish_all(zone, keys)
    zone.txt(f"{DOMAIN}.", "v=spf1 mx -all")
    spf = check_domain(resolver, DOMAIN, keys, POLICY).findings[0]
    assert spf.level == "error" and "Merge them into one" in spf.message
    assert len(spf.found) == 2


def test_spf_without_carepost_servers_names_the_missing_mechanisms(dns, keys):
    zone, resolver = dns
    zone.txt(f"{DOMAIN}.", "v=spf1 mx ip4:192.0.2.0/24 -all")
    spf = check_domain(resolver, DOMAIN, keys, POLICY).findings[0]
    # The address is inside 192.0.2.0/24: only the include is missing.
    assert spf.level == "error"
    assert "add include:spf.carepost.example before" in spf.message


def test_spf_plus_all_is_an_error_and_no_all_a_warning(dns, keys):
    zone, resolver = dns
    zone.txt(f"{DOMAIN}.", "v=spf1 include:spf.carepost.example ip4:192.0.2.10 +all")
    spf = check_domain(resolver, DOMAIN, keys, POLICY).findings[0]
    assert spf.level == "error" and "lets anyone send" in spf.message
    zone.clear()
    zone.txt(f"{DOMAIN}.", "v=spf1 include:spf.carepost.example ip4:192.0.2.10")
    spf = check_domain(resolver, DOMAIN, keys, POLICY).findings[0]
    assert spf.level == "warning" and "~all" in spf.message


def test_a_wrong_or_truncated_dkim_key_is_an_error(dns, keys):
    zone, resolver = dns
    rsa = keys[0]
    # A key cut where a DNS console would split it (255 characters).
    zone.txt(
        f"{rsa.selector}._domainkey.{DOMAIN}.",
        txt_strings(key_record_value(rsa.algorithm, rsa.public_key))[0],
    )
    finding = by_kind(check_domain(resolver, DOMAIN, keys, POLICY))[
        ("dkim", f"{rsa.selector}._domainkey.{DOMAIN}")
    ]
    assert finding.level == "error" and "Replace the record" in finding.message


def test_a_split_record_joins_back_and_passes(dns, keys):
    zone, resolver = dns
    rsa = keys[0]
    value = key_record_value(rsa.algorithm, rsa.public_key)
    assert len(txt_strings(value)) == 2 and all(len(s) <= 255 for s in txt_strings(value))
    assert zone_text(value).count('" "') == 1
    zone.txt(f"{rsa.selector}._domainkey.{DOMAIN}.", value)
    finding = by_kind(check_domain(resolver, DOMAIN, keys, POLICY))[
        ("dkim", f"{rsa.selector}._domainkey.{DOMAIN}")
    ]
    assert finding.level == "ok"


def test_an_unpublished_next_key_is_a_warning_not_an_error(dns, keys):
    zone, resolver = dns
    publish_all(zone, keys)
    upcoming = KeyInfo(
        "cp-ed-2", "ed25519-sha256", generate_key("ed25519-sha256").public_key, "next"
    )
    retired = KeyInfo("cp-rsa-0", "rsa-sha256", "AAAA", "retired")
    check = check_domain(resolver, DOMAIN, [*keys, upcoming, retired], POLICY)
    findings = by_kind(check)
    assert findings[("dkim", f"cp-ed-2._domainkey.{DOMAIN}")].level == "warning"
    assert ("dkim", f"cp-rsa-0._domainkey.{DOMAIN}") not in findings
    assert check.passed


def test_dmarc_of_the_parent_domain_counts_for_a_subdomain(dns, keys):
    zone, resolver = dns
    publish_all(zone, keys, domain=f"news.{DOMAIN}")
    zone.clear()
    for record in records_to_publish(f"news.{DOMAIN}", keys, POLICY):
        if record.kind != "dmarc":
            zone.txt(record.name + ".", record.value)
    zone.txt(f"_dmarc.{DOMAIN}.", "v=DMARC1; p=reject")
    check = check_domain(resolver, f"news.{DOMAIN}", keys, POLICY)
    dmarc = next(f for f in check.findings if f.kind == "dmarc")
    assert dmarc.level == "ok" and dmarc.name == f"_dmarc.{DOMAIN}"
    assert check.level == "ok"


def test_dmarc_without_a_policy_is_an_error(dns, keys):
    zone, resolver = dns
    zone.txt(f"_dmarc.{DOMAIN}.", "v=DMARC1; rua=mailto:x@clinic.example")
    dmarc = check_domain(resolver, DOMAIN, keys, POLICY).findings[-1]
    assert dmarc.level == "error" and "no valid policy" in dmarc.message


def test_a_silent_name_server_is_reported_not_raised(keys):
    # A UDP socket that never answers: every lookup times out.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        resolver = make_resolver([f"127.0.0.1:{silent.getsockname()[1]}"], timeout=0.5)
        check = check_domain(resolver, DOMAIN, keys, POLICY)
    assert not check.passed
    assert all("did not answer" in f.message for f in check.findings)


def test_records_to_publish_without_configured_servers_say_so():
    records = records_to_publish(DOMAIN, [], SenderPolicy())
    spf = next(r for r in records if r.kind == "spf")
    assert spf.value == "v=spf1 mx ~all" and "CAREPOST_DOMAINS_SPF_INCLUDE" in spf.note
    dmarc = next(r for r in records if r.kind == "dmarc")
    assert dmarc.name == f"_dmarc.{DOMAIN}" and dmarc.value.startswith("v=DMARC1; p=none;")


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789+/=; ", max_size=1200))
def test_txt_strings_split_and_join_back(value):
    strings = txt_strings(value)
    assert "".join(strings) == value
    assert all(len(s) <= 255 for s in strings)
