"""Telling machine opens and clicks from people's: a pure decision with its reason.

Mail privacy proxies and security scanners fetch pixels and follow links that no
person looked at. Such an event is still recorded, with ``machine: true`` and the
reason, and never counted as a human open or click. Signals, in order:

* **Apple Mail Privacy Protection** -- Apple prefetches every image of every message
  through its proxies (``17.0.0.0/8``, the Apple network) with the bare user agent
  ``Mozilla/5.0``.
* **Known scanners by user agent** -- link checkers of mail security gateways
  (Barracuda, Mimecast, Proofpoint, Microsoft Safe Links ...), crawlers, headless
  browsers and HTTP libraries.
* **Known scanner networks** -- Microsoft Exchange Online Protection, Proofpoint,
  Mimecast, Barracuda and Googlebot address ranges (a curated list, see
  :data:`SCANNER_NETWORKS`; refresh it as providers publish changes).
* **Too fast** -- a click within :data:`MIN_HUMAN_CLICK_SECONDS` of the message
  leaving carepost: gateways follow links on arrival, people do not.

Gmail's image proxy (``GoogleImageProxy``) fetches when the person opens the mail,
so it counts as a human open.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime

MIN_HUMAN_CLICK_SECONDS = 10.0
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
APPLE_PROXY_AGENT = "Mozilla/5.0"
SCANNER_AGENTS = re.compile(
    r"bot\b|crawler|spider|scanner|barracuda|mimecast|proofpoint|safelinks|symantec"
    r"|trendmicro|forcepoint|fireeye|ironport|sophos|zscaler|headlesschrome|phantomjs"
    r"|python-requests|python-urllib|aiohttp|httpx|go-http-client|curl/|wget/|java/|okhttp"
    r"|libwww-perl|microsoft office|ms-office|skypeuripreview|slackbot|facebookexternalhit",
    re.IGNORECASE,
)
SCANNER_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "40.92.0.0/15",  # Microsoft Exchange Online Protection
        "40.107.0.0/16",
        "52.100.0.0/14",
        "104.47.0.0/17",
        "67.231.144.0/20",  # Proofpoint
        "148.163.128.0/19",
        "205.139.110.0/24",  # Mimecast
        "207.211.30.0/24",
        "64.235.144.0/20",  # Barracuda
        "66.249.64.0/19",  # Googlebot
    )
)


def machine_reason(
    *,
    kind: str,
    user_agent: str | None,
    client_ip: str | None,
    sent_at: datetime | None,
    now: datetime,
) -> str | None:
    """Why an ``opened``/``clicked`` event looks automated, or None for a person."""
    agent = (user_agent or "").strip()
    address = None
    if client_ip:
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            address = None
    if address is not None and address in APPLE_NETWORK:
        return "apple-privacy-proxy"
    if kind == "opened" and agent == APPLE_PROXY_AGENT:
        return "apple-privacy-proxy"
    if not agent:
        return "no-user-agent"
    if SCANNER_AGENTS.search(agent):
        return "scanner-user-agent"
    if address is not None and any(address in network for network in SCANNER_NETWORKS):
        return "scanner-network"
    if (
        kind == "clicked"
        and sent_at is not None
        and (now - sent_at).total_seconds() < MIN_HUMAN_CLICK_SECONDS
    ):
        return "too-fast"
    return None
