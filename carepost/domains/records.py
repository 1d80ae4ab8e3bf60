"""The DNS records a sending domain publishes (all TXT):

- DKIM, one per active or next key: ``<selector>._domainkey.<domain>`` with
  ``v=DKIM1; k=rsa|ed25519; p=…`` (RFC 6376 section 3.6.2, RFC 8463), in strings
  of at most 255 octets;
- SPF at the domain (RFC 7208): ``v=spf1`` authorizing carepost's sending servers
  (the ``include:`` and addresses an operator configures) and ending in ``~all``;
- DMARC at ``_dmarc.<domain>`` (RFC 7489): start with ``p=none`` and a report
  address, then tighten.

:mod:`carepost.domains.checks` compares what DNS holds against them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from carepost.domains.keys import key_record_value, txt_strings


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
