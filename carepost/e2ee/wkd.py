"""OpenPGP Web Key Directory lookup (draft-koch-openpgp-webkey-service, section 3.1).

The key of ``local@domain`` is at, in this order:

- advanced: ``https://openpgpkey.<domain>/.well-known/openpgpkey/<domain>/hu/<hash>?l=<local>``
- direct:   ``https://<domain>/.well-known/openpgpkey/hu/<hash>?l=<local>``

where ``<hash>`` is the z-base-32 encoding (RFC 6189 section 5.1.6) of the SHA-1
of the lower-cased local part. The direct method is tried only when the advanced
host does not answer (no DNS name, refused connection, TLS failure): a host that
answers, even 404, is the domain's WKD (section 3.1), and a 404 means "no key".
A response is binary key data (one or more certificates); only those with a User
ID for the address are kept by the caller.

``origins`` maps a host name to the origin to ask instead (``http://127.0.0.1:8080``):
for tests and split-horizon set-ups; production leaves it empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import httpx

from carepost.core.logging import get_logger

ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
MAX_KEY_BYTES = 512 * 1024
log = get_logger(__name__)


def zbase32(data: bytes) -> str:
    """z-base-32 of ``data`` (5 bits per character, most significant first)."""
    bits = int.from_bytes(data, "big")
    length = len(data) * 8
    count = -(-length // 5)
    bits <<= count * 5 - length
    return "".join(ZBASE32[(bits >> (5 * (count - 1 - i))) & 31] for i in range(count))


def wkd_hash(local_part: str) -> str:
    # SHA-1 is what the WKD draft names for the mailbox hash: an identifier, not a signature.
    digest = hashlib.sha1(local_part.lower().encode("utf-8"), usedforsecurity=False).digest()
    return zbase32(digest)


def wkd_urls(address: str) -> list[tuple[str, str]]:
    """(host, path and query) of the advanced then the direct method."""
    local, _, domain = address.strip().rpartition("@")
    domain = domain.lower()
    digest = wkd_hash(local)
    query = httpx.QueryParams({"l": local})
    return [
        (f"openpgpkey.{domain}", f"/.well-known/openpgpkey/{domain}/hu/{digest}?{query}"),
        (domain, f"/.well-known/openpgpkey/hu/{digest}?{query}"),
    ]


def fetch_wkd(
    address: str, client: httpx.Client, *, origins: Mapping[str, str] | None = None
) -> bytes | None:
    """The key data the address's WKD serves, or None when it has none.

    Never logs the address (PHI): the domain and the method only.
    """
    for method, (host, path) in zip(("advanced", "direct"), wkd_urls(address), strict=True):
        origin = (origins or {}).get(host, f"https://{host}")
        try:
            response = client.get(origin + path, headers={"Accept": "application/octet-stream"})
        except httpx.HTTPError as error:
            log.info("wkd.unavailable", method=method, error=type(error).__name__)
            continue
        if response.status_code == 200 and 0 < len(response.content) <= MAX_KEY_BYTES:
            return response.content
        log.info("wkd.no_key", method=method, status=response.status_code)
        return None
    return None
