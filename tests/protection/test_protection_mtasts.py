"""MTA-STS (RFC 8461): the TXT record and policy parsers, the mx pattern rules, and
the per-domain cache fed by a real DNS server and a real HTTPS policy host on
loopback (certificate from a test CA given as the CA bundle; never unverified)."""

from __future__ import annotations

import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.core.database import utcnow
from carepost.delivery import mtasts
from carepost.protection.domain_tls import DomainTlsLookup, domain_tls
from tests.delivery.smtp_peers import self_signed_certificate, server_tls_context
from tests.dns_server import dns_server

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.{d}\r\nmx: *.backup.{d}\r\nmax_age: 86400\r\n"


def test_a_policy_is_parsed_with_its_mx_patterns_and_max_age():
    policy = mtasts.parse_policy(POLICY.format(d="example.org"))
    assert policy == mtasts.StsPolicy("enforce", ("mx1.example.org", "*.backup.example.org"), 86400)
    assert mtasts.parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999\n").max_age == (
        mtasts.MAX_AGE_LIMIT
    )


@pytest.mark.parametrize(
    "text",
    [
        "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmax_age: 1\n",  # enforce names no mx
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: soon\n",
        "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
        "<html>not a policy</html>",
    ],
)
def test_bad_policies_are_refused(text):
    with pytest.raises(mtasts.PolicyError):
        mtasts.parse_policy(text)


@given(st.text(max_size=300))
def test_parsing_never_fails_otherwise_than_with_policy_error(text):
    with suppress(mtasts.PolicyError):
        mtasts.parse_policy(text)


def test_a_wildcard_matches_exactly_one_leftmost_label():
    assert mtasts.mx_matches("*.example.net", "mx1.example.net")
    assert mtasts.mx_matches("*.example.net", "MX1.Example.NET.")
    assert not mtasts.mx_matches("*.example.net", "a.b.example.net")
    assert not mtasts.mx_matches("*.example.net", "example.net")
    assert mtasts.mx_matches("mx.example.net", "mx.example.net")
    assert not mtasts.mx_matches("mx.example.net", "evil-mx.example.net")


def test_the_txt_record_gives_the_policy_id_only_when_there_is_exactly_one():
    assert mtasts.parse_txt(["v=STSv1; id=20261204T1;"]) == "20261204T1"
    assert mtasts.parse_txt(["v=spf1 -all", "v=STSv1; id=abc"]) == "abc"
    assert mtasts.parse_txt(["v=STSv1; id=a;", "v=STSv1; id=b;"]) is None
    assert mtasts.parse_txt(["v=STSv1; id=not-valid!;"]) is None
    assert mtasts.parse_txt([]) is None


@contextmanager
def policy_host(certificate: Path, bodies: list[bytes]) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS server answering with the last of ``bodies`` (an empty list: 404)."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(f"{self.headers['Host']}{self.path}")
            body = bodies[-1] if bodies else b""
            self.send_response(200 if bodies else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context: ssl.SSLContext = server_tls_context(certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def domain() -> str:
    return f"sts-{uuid.uuid4().hex[:8]}.example"


def test_policies_are_fetched_cached_and_refreshed_when_the_id_changes(
    runtime, settings, domain, tmp_path
):
    certificate = self_signed_certificate(tmp_path, names=(f"mta-sts.{domain}",))
    bodies = [POLICY.format(d=domain).encode()]
    with dns_server() as (zone, host, port), policy_host(certificate, bodies) as (https, asked):
        zone.txt(f"_mta-sts.{domain}", "v=STSv1; id=one;")
        lookup = DomainTlsLookup.from_settings(
            settings.model_copy(
                update={
                    "dns_nameserver": host, "dns_port": port, "mta_sts_address": "127.0.0.1",
                    "mta_sts_port": https, "mta_sts_ca_file": certificate, "mta_sts_timeout": 3,
                }
            )
        )  # fmt: skip
        now = utcnow()
        with runtime.database.session() as session:
            facts = domain_tls(session, domain, now=now, lookup=lookup)
            assert facts.tls.mta_sts == "enforce"
            assert facts.mx_patterns == (f"mx1.{domain}", f"*.backup.{domain}")
            assert asked == [f"mta-sts.{domain}/.well-known/mta-sts.txt"]

            # Within the re-check interval: the cache answers, nobody is asked.
            assert domain_tls(session, domain, now=now + timedelta(minutes=5), lookup=lookup)
            assert len(asked) == 1
            # Later, the same id: DNS is asked, the policy is not fetched again.
            later = now + timedelta(hours=2)
            assert domain_tls(session, domain, now=later, lookup=lookup).tls.mta_sts == "enforce"
            assert len(asked) == 1

            # A new id: the new policy is fetched.
            zone.clear()
            zone.txt(f"_mta-sts.{domain}", "v=STSv1; id=two;")
            bodies.append(POLICY.format(d=domain).replace("enforce", "testing").encode())
            again = now + timedelta(hours=4)
            assert domain_tls(session, domain, now=again, lookup=lookup).tls.mta_sts == "testing"
            assert len(asked) == 2

            # The TXT record and the policy host gone: the unexpired policy still holds.
            zone.clear()
            bodies.clear()
            gone = now + timedelta(hours=6)
            assert domain_tls(session, domain, now=gone, lookup=lookup).tls.mta_sts == "testing"
            # Past its max_age, nothing is known any more.
            expired = now + timedelta(days=2)
            assert domain_tls(session, domain, now=expired, lookup=lookup).tls.mta_sts == "none"


def test_a_policy_host_with_a_certificate_for_another_name_is_not_trusted(
    settings, domain, tmp_path
):
    certificate = self_signed_certificate(tmp_path, names=("someone-else.example",))
    with (
        dns_server() as (zone, host, port),
        policy_host(certificate, [POLICY.format(d=domain).encode()]) as (https, _asked),
    ):
        zone.txt(f"_mta-sts.{domain}", "v=STSv1; id=one;")
        options = mtasts.FetchOptions(
            timeout=3, address="127.0.0.1", port=https, ca_file=certificate
        )
        lookup = DomainTlsLookup.from_settings(
            settings.model_copy(update={"dns_nameserver": host, "dns_port": port})
        )
        assert mtasts.discover(lookup.resolver, domain, options) == ("one", None)


def test_a_domain_without_a_txt_record_has_no_policy(settings, domain):
    with dns_server() as (_zone, host, port):
        lookup = DomainTlsLookup.from_settings(
            settings.model_copy(update={"dns_nameserver": host, "dns_port": port})
        )
        assert mtasts.discover(lookup.resolver, domain) == (None, None)
