"""A checker of a sending domain's SPF, DKIM and DMARC records in DNS.

It asks DNS through a dnspython resolver the caller gives (the configured name
servers, or a loopback server in tests) and returns findings in plain words: what
was found, what is wrong and the record to publish instead (see
:mod:`carepost.domains.records`). It is a pure function of DNS answers: storing
the result is the service's job. A name server that does not answer is a finding
too, never an exception.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import dns.exception
import dns.resolver

from carepost.domains.keys import key_record_value
from carepost.domains.records import KeyInfo, SenderPolicy, dmarc_value, spf_value

Level = Literal["ok", "warning", "error"]
LEVELS: tuple[Level, ...] = ("ok", "warning", "error")
ALGORITHM_NAMES = {"rsa-sha256": "RSA", "ed25519-sha256": "Ed25519"}


@dataclass(frozen=True)
class Finding:
    kind: Literal["dkim", "spf", "dmarc"]
    name: str
    level: Level
    message: str
    found: list[str] = field(default_factory=list)
    expected: str | None = None


@dataclass(frozen=True)
class DomainCheck:
    domain: str
    findings: list[Finding]

    @property
    def level(self) -> Level:
        """The worst finding's level."""
        return LEVELS[max((LEVELS.index(f.level) for f in self.findings), default=0)]

    @property
    def passed(self) -> bool:
        return self.level != "error"

    def as_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "level": self.level,
            "findings": [asdict(f) for f in self.findings],
        }


class LookupFailed(Exception):
    """DNS did not answer (timeout, server failure): nothing can be said about the record."""


def make_resolver(
    nameservers: Sequence[str] = (), *, timeout: float = 5.0
) -> dns.resolver.Resolver:
    """A resolver asking ``nameservers`` ("host" or "host:port"), or the system's when empty."""
    if not nameservers:
        resolver = dns.resolver.Resolver()
    else:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = []
        ports: dict[str, int] = {}
        for entry in nameservers:
            host, port = _host_port(entry)
            resolver.nameservers.append(host)
            ports[host] = port
        resolver.nameserver_ports = ports
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


def _host_port(entry: str) -> tuple[str, int]:
    if entry.startswith("["):  # [v6]:port
        host, _, port = entry[1:].partition("]:")
        return host, int(port or 53)
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, 53


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """Every TXT record at ``name``, each with its strings joined; [] when none exists."""
    try:
        answer = resolver.resolve(name, "TXT", raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as exc:
        raise LookupFailed(type(exc).__name__) from None
    if answer.rrset is None:
        return []
    return [b"".join(rdata.strings).decode("utf-8", errors="replace") for rdata in answer.rrset]


def _tags(value: str) -> dict[str, str]:
    """Tag=value pairs (DKIM and DMARC syntax), names lower-cased, blanks removed."""
    tags = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = "".join(tag_value.split())
    return tags


def _unreachable(kind: Literal["dkim", "spf", "dmarc"], name: str) -> Finding:
    return Finding(
        kind,
        name,
        "error",
        f"DNS did not answer for {name} in time: nothing could be checked. Try again; "
        "if it keeps failing, check that the domain's name servers answer.",
    )


def check_spf(resolver: dns.resolver.Resolver, domain: str, policy: SenderPolicy) -> Finding:
    expected = spf_value(policy)
    try:
        found = [r for r in txt_records(resolver, domain) if r.lower().startswith("v=spf1")]
    except LookupFailed:
        return _unreachable("spf", domain)

    def finding(level: Level, message: str) -> Finding:
        return Finding("spf", domain, level, message, found, expected)

    if not found:
        return finding(
            "error", f"{domain} has no SPF record. Publish a TXT record at {domain}: {expected}"
        )
    if len(found) > 1:
        return finding(
            "error",
            f"{domain} has {len(found)} SPF records; receivers then treat SPF as broken "
            "(RFC 7208 section 4.5). Merge them into one record.",
        )
    terms = found[0].split()[1:]
    lowered = [term.lower() for term in terms]
    missing = [m for m in policy.spf_mechanisms() if not _authorizes(lowered, m.lower())]
    if missing:
        return finding(
            "error",
            f"The SPF record of {domain} does not authorize carepost's servers: add "
            f"{' '.join(missing)} before the 'all' term.",
        )
    if "all" in lowered or "+all" in lowered:
        return finding(
            "error",
            "The SPF record ends in '+all', which lets anyone send as your domain. "
            "End it with '~all' (or '-all' once you are sure of every sender).",
        )
    if not any(term.endswith("all") and term[:1] in "-~" for term in lowered):
        return finding(
            "warning",
            "The SPF record does not end with '~all' or '-all', so it does not say that "
            "other servers may not send as your domain. Add '~all' at the end.",
        )
    return finding("ok", "SPF is published and authorizes carepost's servers.")


def _authorizes(terms: list[str], mechanism: str) -> bool:
    if mechanism in terms or f"+{mechanism}" in terms:
        return True
    kind, _, address = mechanism.partition(":")
    if kind not in ("ip4", "ip6"):
        return False
    wanted = ipaddress.ip_network(address, strict=False)
    for term in terms:
        term_kind, _, value = term.lstrip("+").partition(":")
        if term_kind != kind:
            continue
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            continue
        if wanted.version == network.version and wanted.subnet_of(network):  # type: ignore[arg-type]
            return True
    return False


def check_dkim(resolver: dns.resolver.Resolver, domain: str, key: KeyInfo) -> Finding:
    name = f"{key.selector}._domainkey.{domain}"
    expected = key_record_value(key.algorithm, key.public_key)
    try:
        found = [r for r in txt_records(resolver, name) if "p=" in r]
    except LookupFailed:
        return _unreachable("dkim", name)

    def finding(level: Level, message: str) -> Finding:
        return Finding("dkim", name, level, message, found, expected)

    # A next key not yet published is expected: publishing it is the next step.
    missing_level: Level = "error" if key.state == "active" else "warning"
    if not found:
        what = "Mail is signed with" if key.state == "active" else "The next key uses"
        return finding(
            missing_level,
            f"{what} selector {key.selector}, but DNS has no key at {name}. "
            "Publish the TXT record shown for it.",
        )
    if len(found) > 1:
        return finding("error", f"{name} has {len(found)} key records; keep only the one shown.")
    tags = _tags(found[0])
    if tags.get("p") != key.public_key:
        return finding(
            "error",
            f"The key at {name} is not carepost's key for this selector (an old or mistyped "
            "value, or a line break lost in copying). Replace the record with the one shown.",
        )
    if tags.get("k", "rsa") != expected.split("k=")[1].split(";")[0]:
        return finding("error", f"The record at {name} names the wrong key type (k=). Replace it.")
    if "y" in tags.get("t", "").split(":"):
        return finding(
            "warning",
            f"The record at {name} is in test mode (t=y): receivers may ignore "
            "its result. Remove t=y once mail passes.",
        )
    return finding(
        "ok",
        f"The {ALGORITHM_NAMES.get(key.algorithm, key.algorithm)} key {key.selector} is published.",
    )


def _dmarc_records(resolver: dns.resolver.Resolver, domain: str) -> tuple[str, list[str]]:
    """The DMARC records of the domain, or of its parent when it has none (a receiver
    falls back to the organizational domain, RFC 7489 section 6.6.3)."""
    name = f"_dmarc.{domain}"
    found = [r for r in txt_records(resolver, name) if r.lower().startswith("v=dmarc1")]
    labels = domain.split(".")
    if not found and len(labels) > 2:
        parent = f"_dmarc.{'.'.join(labels[1:])}"
        inherited = [r for r in txt_records(resolver, parent) if r.lower().startswith("v=dmarc1")]
        if inherited:
            return parent, inherited
    return name, found


def check_dmarc(resolver: dns.resolver.Resolver, domain: str, policy: SenderPolicy) -> Finding:
    expected = dmarc_value(domain, policy)
    try:
        name, found = _dmarc_records(resolver, domain)
    except LookupFailed:
        return _unreachable("dmarc", f"_dmarc.{domain}")

    def finding(level: Level, message: str) -> Finding:
        return Finding("dmarc", name, level, message, found, expected)

    if not found:
        return finding(
            "error",
            f"{domain} has no DMARC record; large mailbox providers require one of bulk "
            f"senders. Publish a TXT record at _dmarc.{domain}: {expected}",
        )
    if len(found) > 1:
        return finding(
            "error",
            f"{name} has {len(found)} DMARC records; receivers then ignore all of them. Keep one.",
        )
    tags = _tags(found[0])
    if tags.get("p", "").lower() not in ("none", "quarantine", "reject"):
        return finding(
            "error",
            f"The DMARC record at {name} has no valid policy (p=none, quarantine or reject).",
        )
    if tags["p"].lower() == "none":
        return finding(
            "warning",
            "DMARC is published in monitoring mode (p=none): it reports but protects nothing. "
            "Once the reports show all your mail passes, move to p=quarantine, then p=reject.",
        )
    return finding("ok", f"DMARC is published with p={tags['p'].lower()}.")


def check_domain(
    resolver: dns.resolver.Resolver, domain: str, keys: Iterable[KeyInfo], policy: SenderPolicy
) -> DomainCheck:
    """SPF, every active or next DKIM key, and DMARC of ``domain``, each with what to fix."""
    findings = [check_spf(resolver, domain, policy)]
    findings += [check_dkim(resolver, domain, key) for key in keys if key.state != "retired"]
    findings.append(check_dmarc(resolver, domain, policy))
    return DomainCheck(domain, findings)
