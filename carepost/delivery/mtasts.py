"""SMTP MTA Strict Transport Security (RFC 8461): discovery, fetch and parsing of a
domain's policy, and the MX host check.

A domain announces a policy with a TXT record at ``_mta-sts.<domain>``
(``v=STSv1; id=<id>;``, section 3.1; several such records mean no policy) and serves
it at ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (section 3.3: HTTPS with a
certificate valid for that name, no redirects, 200 only, ``text/plain``, at most
64 KiB). The policy (section 3.2) has ``version: STSv1``, ``mode`` (enforce, testing,
none), one ``mx`` line per allowed MX pattern and ``max_age`` (seconds, at most
31557600). A pattern ``*.example.net`` matches exactly one left-most label
(``mx1.example.net``, not ``a.b.example.net`` nor ``example.net``).

The caller caches the policy for ``max_age`` and asks DNS again now and then: a new
TXT ``id`` means a new policy to fetch (section 5.1); a failed fetch keeps the cached
policy until it expires. Tests point the fetch at a loopback server with
``address``/``port`` and a CA bundle; verification is never turned off.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dns.exception
import dns.resolver
import httpx

from carepost.core.logging import get_logger

log = get_logger(__name__)

Mode = Literal["enforce", "testing", "none"]
MAX_POLICY_BYTES = 64 * 1024
MAX_AGE_LIMIT = 31_557_600
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_MAX_AGE = re.compile(r"^[0-9]{1,10}$")
_HOST_PATTERN = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


class PolicyError(ValueError):
    """A policy text or TXT record that does not follow RFC 8461."""


@dataclass(frozen=True)
class StsPolicy:
    mode: Mode
    mx: tuple[str, ...]
    max_age: int


def parse_txt(records: list[str]) -> str | None:
    """The policy id of the ``_mta-sts`` TXT records; None when there is no valid one
    (none, or several records that begin ``v=STSv1``)."""
    ours = [r for r in records if r.startswith("v=STSv1")]
    if len(ours) != 1:
        return None
    fields: dict[str, str] = {}
    for item in ours[0].split(";"):
        key, sep, value = item.strip().partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    if fields.get("v") != "STSv1":
        return None
    policy_id = fields.get("id", "")
    return policy_id if _ID.match(policy_id) else None


def parse_policy(text: str) -> StsPolicy:
    """Parse a policy body (section 3.2); raises :class:`PolicyError`."""
    fields: dict[str, str] = {}
    patterns: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError("a policy line is not 'key: value'")
        key, value = key.strip(), value.strip()
        if key == "mx":
            pattern = value.lower().rstrip(".")
            if not _HOST_PATTERN.match(pattern):
                raise PolicyError("an mx pattern is not a host name")
            patterns.append(pattern)
        else:
            fields.setdefault(key, value)  # the first of a repeated field counts
    if fields.get("version") != "STSv1":
        raise PolicyError("version is not STSv1")
    mode: Mode
    match fields.get("mode"):
        case "enforce":
            mode = "enforce"
        case "testing":
            mode = "testing"
        case "none":
            mode = "none"
        case _:
            raise PolicyError("mode is not enforce, testing or none")
    raw_age = fields.get("max_age", "")
    if not _MAX_AGE.match(raw_age):
        raise PolicyError("max_age is not a number of seconds")
    if mode != "none" and not patterns:
        raise PolicyError("a policy in enforce or testing mode names its mx hosts")
    return StsPolicy(mode, tuple(patterns), min(int(raw_age), MAX_AGE_LIMIT))


def mx_matches(pattern: str, host: str) -> bool:
    """Whether an MX host name matches a policy's ``mx`` pattern (section 4.1)."""
    host = host.lower().rstrip(".")
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


def mx_allowed(patterns: tuple[str, ...] | list[str], host: str) -> bool:
    return any(mx_matches(pattern, host) for pattern in patterns)


def lookup_policy_id(resolver: dns.resolver.Resolver, domain: str) -> str | None:
    """The id in ``_mta-sts.<domain>`` TXT; None when there is none. DNS trouble other
    than "no such record" raises ``dns.exception.DNSException``."""
    try:
        answer = resolver.resolve(f"_mta-sts.{domain}", "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    records = [b"".join(record.strings).decode("ascii", "replace") for record in answer]
    return parse_txt(records)


@dataclass(frozen=True)
class FetchOptions:
    """Where to fetch from: the real host by default; tests give a loopback address,
    a port and a CA bundle (verification always stays on)."""

    timeout: float = 10.0
    address: str | None = None
    port: int = 443
    ca_file: Path | None = None


def fetch_policy(domain: str, options: FetchOptions = FetchOptions()) -> StsPolicy:
    """Fetch and parse ``https://mta-sts.<domain>/.well-known/mta-sts.txt``; raises
    :class:`PolicyError` (or ``httpx.HTTPError``) when there is no valid policy."""
    host = f"mta-sts.{domain}"
    target = options.address or host
    netloc = target if options.port == 443 else f"{target}:{options.port}"
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(options.ca_file)) if options.ca_file else True
    )
    with (
        httpx.Client(
            verify=verify, timeout=options.timeout, follow_redirects=False, trust_env=False
        ) as client,
        client.stream(
            "GET",
            f"https://{netloc}/.well-known/mta-sts.txt",
            headers={"Host": host},
            # The certificate is checked against the policy host whatever we dial.
            extensions={"sni_hostname": host},
        ) as response,
    ):
        if response.status_code != 200:
            raise PolicyError(f"the policy host answered {response.status_code}")
        if response.headers.get("content-type", "").split(";")[0].strip() != "text/plain":
            raise PolicyError("the policy is not text/plain")
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_POLICY_BYTES:
                raise PolicyError("the policy is over 64 KiB")
    return parse_policy(body.decode("utf-8", "replace"))


def discover(
    resolver: dns.resolver.Resolver,
    domain: str,
    options: FetchOptions = FetchOptions(),
    *,
    known_id: str | None = None,
) -> tuple[str | None, StsPolicy | None]:
    """The TXT id and the policy it announces: (None, None) when the domain has none
    (or DNS failed); (id, None) when the policy could not be fetched, or when the id
    is ``known_id`` (the cached policy is current: section 5.1, not fetched again).
    Never raises for the network."""
    try:
        policy_id = lookup_policy_id(resolver, domain)
    except dns.exception.DNSException as error:
        log.info("mta_sts.dns_failed", domain=domain, error=type(error).__name__)
        return None, None
    if policy_id is None or policy_id == known_id:
        return policy_id, None
    try:
        return policy_id, fetch_policy(domain, options)
    except (PolicyError, httpx.HTTPError) as error:
        log.info("mta_sts.fetch_failed", domain=domain, error=type(error).__name__)
        return policy_id, None
