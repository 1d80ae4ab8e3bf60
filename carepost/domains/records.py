"""The DNS records a sending domain publishes, and a checker of what DNS holds.

Records (all TXT):

- DKIM, one per active or next key: ``<selector>._domainkey.<domain>`` with
  ``v=DKIM1; k=rsa|ed25519; p=…`` (RFC 6376 section 3.6.2, RFC 8463), in strings
  of at most 255 octets;
- SPF at the domain (RFC 7208): ``v=spf1`` authorizing carepost's sending servers
  (the ``include:`` and addresses an operator configures) and ending in ``~all``;
- DMARC at ``_dmarc.<domain>`` (RFC 7489): start with ``p=none`` and a report
  address, then tighten.

The checker asks DNS through a dnspython resolver the caller gives (the
configured name servers, or a loopback server in tests) and returns findings in
plain words: what was found, what is wrong and the record to publish instead.
It is a pure function of DNS answers: storing the result is the service's job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import dns.exception
import dns.resolver

from carepost.domains.keys import key_record_value, txt_strings

Level = Literal["ok", "warning", "error"]
ALGORITHM_NAMES = {"rsa-sha256": "RSA", "ed25519-sha256": "Ed25519"}
LEVELS: tuple[Level, ...] = ("ok", "warning", "error")


@dataclass(frozen=True)
class DnsRecord:
    """A record to publish, as an admin types it into a DNS console."""

    kind: Literal["dkim", "spf", "dmarc"]
    name: str
    value: str
    type: str = "TXT"
    selector: str | None = None
    key_state: str | None = None
    note: str = ""

    @property
    def strings(self) -> list[str]:
        return txt_strings(self.value)


@dataclass(frozen=True)
class SenderPolicy:
    """What the SPF record must authorize: carepost's servers (from the settings)."""

    spf_include: str | None = None
    spf_addresses: tuple[str, ...] = ()
    dmarc_report_address: str | None = None

    def spf_mechanisms(self) -> list[str]:
        mechanisms = [f"include:{self.spf_include}"] if self.spf_include else []
        for address in self.spf_addresses:
            network = ipaddress.ip_network(address, strict=False)
            kind = "ip4" if network.version == 4 else "ip6"
            mechanisms.append(f"{kind}:{address}")
        return mechanisms


@dataclass(frozen=True)
class KeyInfo:
    """The public half of a DKIM key, as the checker and the records need it."""

    selector: str
    algorithm: str
    public_key: str
    state: str


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


# --- the records to publish ---------------------------------------------------------


def spf_value(policy: SenderPolicy) -> str:
    mechanisms = policy.spf_mechanisms() or ["mx"]
    return " ".join(["v=spf1", *mechanisms, "~all"])


def dmarc_value(domain: str, policy: SenderPolicy) -> str:
    report = policy.dmarc_report_address or f"dmarc-reports@{domain}"
    return f"v=DMARC1; p=none; rua=mailto:{report}; adkim=r; aspf=r"


def records_to_publish(
    domain: str, keys: Iterable[KeyInfo], policy: SenderPolicy
) -> list[DnsRecord]:
    records = []
    for key in keys:
        if key.state == "retired":
            continue
        note = (
            "Signs your mail now."
            if key.state == "active"
            else "The next key: publish it now; it replaces the active one after rotation."
        )
        records.append(
            DnsRecord(
                kind="dkim",
                name=f"{key.selector}._domainkey.{domain}",
                value=key_record_value(key.algorithm, key.public_key),
                selector=key.selector,
                key_state=key.state,
                note=note,
            )
        )
    spf_note = (
        "Merge these mechanisms into your existing SPF record if you have one: "
        "a domain must have exactly one."
    )
    if not policy.spf_mechanisms():
        spf_note += (
            " carepost was not told which servers it sends from "
            "(CAREPOST_DOMAINS_SPF_INCLUDE, CAREPOST_DOMAINS_SPF_ADDRESSES): 'mx' is a guess."
        )
    records.append(DnsRecord(kind="spf", name=domain, value=spf_value(policy), note=spf_note))
    records.append(
        DnsRecord(
            kind="dmarc",
            name=f"_dmarc.{domain}",
            value=dmarc_value(domain, policy),
            note="Start with p=none; move to p=quarantine, then p=reject, once the reports "
            "show that all your mail passes.",
        )
    )
    return records


# --- the checker --------------------------------------------------------------------


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
