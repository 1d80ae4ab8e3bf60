"""Trust for S/MIME recipient certificates: chain validation against a trust store
and revocation (OCSP, then CRL).

- Chains are built and checked by ``cryptography``'s X.509 verification API
  (``PolicyBuilder`` / ``ClientVerifier``, the RFC 5280 / CA/B web PKI profile),
  with the extended key usage checked for ``emailProtection`` instead of the
  TLS client one. The store is the system CA bundle plus the organization's own
  trusted CAs; intermediates come from the uploaded chain or the received
  signature. No path building of our own.
- Revocation: OCSP first (the request made with ``OCSPRequestBuilder`` and
  POSTed to the certificate's AIA responder; the response's signature is
  checked against the issuer or a responder it delegated to, and its freshness
  against ``thisUpdate``/``nextUpdate``), then the CRL distribution points
  (fetched with a size and time limit, the CRL's signature checked against the
  issuer, cached until its ``nextUpdate``).
- A policy per organization decides what an unknown status means: ``hard``
  (not used) or ``soft`` (used, with the reason recorded). A revoked
  certificate is never used.

Reasons name the check that failed, never an address nor a subject (PHI).
"""

from __future__ import annotations

import ssl
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from carepost.e2ee.certificates import certificate_addresses, normalize_address
from carepost.e2ee.errors import KeyRejected

RevocationMode = Literal["hard", "soft"]
State = Literal["good", "revoked", "unknown"]

MAX_CRL_BYTES = 4 * 1024 * 1024
MAX_OCSP_BYTES = 64 * 1024
FETCH_TIMEOUT = 5.0  # seconds, per request: sending never waits longer on one responder
CLOCK_SKEW = timedelta(minutes=5)
OCSP_MAX_AGE = timedelta(days=7)  # a response without nextUpdate is stale after this
MAX_CHAIN_DEPTH = 8


# --- chain validation -----------------------------------------------------------------


@lru_cache(maxsize=1)
def system_ca_certificates() -> tuple[x509.Certificate, ...]:
    """The machine's CA bundle (OpenSSL's default file), parsed once."""
    path = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ()
    try:
        with warnings.catch_warnings():
            # Some old roots carry non-positive serials: still anchors, not worth a warning.
            warnings.simplefilter("ignore")
            return tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        return ()


def _email_protection(_policy: Policy, certificate: x509.Certificate, eku: object) -> None:
    if eku is None:
        return
    assert isinstance(eku, x509.ExtendedKeyUsage)
    if not {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(
        eku
    ):
        raise ValueError("extended key usage lacks emailProtection")


def _policy_builder(store: Store, now: datetime) -> PolicyBuilder:
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _email_protection
    )
    ca = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _email_protection
    )
    return (
        PolicyBuilder()
        .store(store)
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ca, ee_policy=ee)
    )


def _chain_reason(
    error: VerificationError, intermediates: Sequence[x509.Certificate], now: datetime
) -> str:
    text = str(error)
    for certificate in intermediates:
        if certificate.not_valid_after_utc < now:
            return "an intermediate certificate of the chain has expired"
        if certificate.not_valid_before_utc > now:
            return "an intermediate certificate of the chain is not valid yet"
    if "not valid at validation time" in text:
        return "a certificate of the chain is outside its validity period"
    if "emailProtection" in text:
        return "a certificate of the chain does not allow email protection"
    if "candidates exhausted" in text or "no valid chain" in text or "issuer" in text:
        return "the certificate does not chain to a trusted CA"
    return "the certificate chain is not valid"


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
    now: datetime,
    *,
    use_system_store: bool = True,
    field: str = "certificate",
) -> tuple[x509.Certificate, ...]:
    """The validated chain, leaf first and trust anchor last, or KeyRejected with
    the reason (unknown CA, expired intermediate, usage...)."""
    anchors = list(trusted) + (list(system_ca_certificates()) if use_system_store else [])
    if not anchors:
        raise KeyRejected("the trust store holds no CA certificate", field=field)
    verifier = _policy_builder(Store(anchors), now).build_client_verifier()
    try:
        verified = verifier.verify(leaf, list(intermediates))
    except VerificationError as error:
        raise KeyRejected(_chain_reason(error, intermediates, now), field=field) from None
    return tuple(verified.chain)


# --- revocation -----------------------------------------------------------------------


@dataclass(frozen=True)
class RevocationStatus:
    state: State
    source: str  # "ocsp", "crl", "manual" or "" when none answered
    reason: str  # why (for the audit entry); no PHI
    checked_at: datetime
    valid_until: datetime | None = None  # the answer's nextUpdate: cache it until then


@dataclass
class CrlCache:
    """CRLs by URL, kept until their nextUpdate (process-local, thread-safe)."""

    entries: dict[str, x509.CertificateRevocationList] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, url: str, now: datetime) -> x509.CertificateRevocationList | None:
        with self.lock:
            crl = self.entries.get(url)
        if crl is None or crl.next_update_utc is None or crl.next_update_utc < now:
            return None
        return crl

    def put(self, url: str, crl: x509.CertificateRevocationList) -> None:
        with self.lock:
            self.entries[url] = crl


CRL_CACHE = CrlCache()


def _fetch(
    client: httpx.Client, method: str, url: str, limit: int, *, content: bytes | None = None
) -> bytes:
    headers = {"Content-Type": "application/ocsp-request"} if content is not None else {}
    with client.stream(
        method, url, content=content, headers=headers, timeout=FETCH_TIMEOUT
    ) as response:
        response.raise_for_status()
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise ValueError("response over the size limit")
            chunks.append(chunk)
    return b"".join(chunks)


def _verify_signature(
    public_key: object, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None
) -> None:
    if algorithm is None:
        raise InvalidSignature
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(algorithm))
    else:
        raise InvalidSignature


def _urls(leaf: x509.Certificate) -> tuple[list[str], list[str]]:
    ocsp_urls: list[str] = []
    crl_urls: list[str] = []
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ocsp_urls = [
            str(description.access_location.value)
            for description in aia
            if description.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(description.access_location, x509.UniformResourceIdentifier)
        ]
    except x509.ExtensionNotFound:
        pass
    try:
        points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        for point in points:
            for name in point.full_name or []:
                if isinstance(name, x509.UniformResourceIdentifier):
                    crl_urls.append(str(name.value))
    except x509.ExtensionNotFound:
        pass
    http = ("http://", "https://")
    return (
        [url for url in ocsp_urls if url.startswith(http)],
        [url for url in crl_urls if url.startswith(http)],
    )


def _ocsp_status(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    url: str,
    client: httpx.Client,
    now: datetime,
) -> RevocationStatus:
    # CertID hashes: SHA-1 is what RFC 5019 responders are required to understand
    # (an identifier, not a signature).
    certid_hash = hashes.SHA1()  # noqa: S303
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, certid_hash).build()
    data = _fetch(
        client,
        "POST",
        url,
        MAX_OCSP_BYTES,
        content=request.public_bytes(serialization.Encoding.DER),
    )
    response = ocsp.load_der_ocsp_response(data)
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise ValueError("the OCSP responder did not answer successfully")
    if response.serial_number != leaf.serial_number or (
        response.issuer_key_hash != request.issuer_key_hash
    ):
        raise ValueError("the OCSP response is for another certificate")
    signer = issuer
    if response.responder_name != issuer.subject and response.certificates:
        # A delegated responder: issued directly by the issuer, with the OCSPSigning EKU.
        signer = response.certificates[0]
        signer.verify_directly_issued_by(issuer)
        eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise ValueError("the OCSP responder is not authorized")
    _verify_signature(
        signer.public_key(),
        response.signature,
        response.tbs_response_bytes,
        response.signature_hash_algorithm,
    )
    this_update = response.this_update_utc
    next_update = response.next_update_utc
    if this_update > now + CLOCK_SKEW:
        raise ValueError("the OCSP response is from the future")
    if (next_update is not None and next_update < now - CLOCK_SKEW) or (
        next_update is None and this_update < now - OCSP_MAX_AGE
    ):
        raise ValueError("the OCSP response is stale")
    if response.certificate_status == ocsp.OCSPCertStatus.REVOKED:
        return RevocationStatus("revoked", "ocsp", "revoked (OCSP)", now, next_update)
    if response.certificate_status == ocsp.OCSPCertStatus.GOOD:
        return RevocationStatus("good", "ocsp", "not revoked (OCSP)", now, next_update)
    raise ValueError("the OCSP responder does not know the certificate")


def _crl_status(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    url: str,
    client: httpx.Client,
    now: datetime,
    cache: CrlCache,
) -> RevocationStatus:
    crl = cache.get(url, now)
    if crl is None:
        data = _fetch(client, "GET", url, MAX_CRL_BYTES)
        if b"-----BEGIN" in data:
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        issuer_key = issuer.public_key()
        signed = isinstance(issuer_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) and (
            crl.is_signature_valid(issuer_key)
        )
        if crl.issuer != issuer.subject or not signed:
            raise ValueError("the CRL is not signed by the certificate's issuer")
        if crl.next_update_utc is None or crl.next_update_utc < now - CLOCK_SKEW:
            raise ValueError("the CRL is stale")
        if crl.last_update_utc > now + CLOCK_SKEW:
            raise ValueError("the CRL is from the future")
        cache.put(url, crl)
    if crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None:
        return RevocationStatus("revoked", "crl", "revoked (CRL)", now, crl.next_update_utc)
    return RevocationStatus("good", "crl", "not revoked (CRL)", now, crl.next_update_utc)


def check_revocation(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime,
    *,
    client: httpx.Client,
    cache: CrlCache | None = None,
) -> RevocationStatus:
    """The leaf's revocation status: OCSP first, then each CRL distribution point;
    ``unknown`` with the reasons when none could establish it."""
    ocsp_urls, crl_urls = _urls(leaf)
    failures: list[str] = []
    for url in ocsp_urls:
        try:
            return _ocsp_status(leaf, issuer, url, client, now)
        except (httpx.HTTPError, ValueError, InvalidSignature, x509.ExtensionNotFound) as error:
            failures.append(f"OCSP: {_failure(error)}")
    for url in crl_urls:
        try:
            return _crl_status(leaf, issuer, url, client, now, cache or CRL_CACHE)
        except (httpx.HTTPError, ValueError, InvalidSignature) as error:
            failures.append(f"CRL: {_failure(error)}")
    if not ocsp_urls and not crl_urls:
        failures.append("the certificate names no OCSP responder nor CRL")
    return RevocationStatus("unknown", "", "; ".join(failures), now)


def _failure(error: Exception) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "the server did not answer in time"
    if isinstance(error, httpx.HTTPStatusError):
        return f"the server answered {error.response.status_code}"
    if isinstance(error, httpx.HTTPError):
        return "the server could not be reached"
    if isinstance(error, InvalidSignature):
        return "the signature does not verify"
    return str(error) or type(error).__name__


# --- the decision ---------------------------------------------------------------------


@dataclass(frozen=True)
class TrustDecision:
    usable: bool
    reason: str  # for the audit entry of the delivery decision; no PHI
    chain: tuple[x509.Certificate, ...] = ()
    revocation: RevocationStatus | None = None


def evaluate(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trusted: Sequence[x509.Certificate],
    now: datetime,
    *,
    client: httpx.Client,
    require_chain: bool = True,
    revocation_mode: RevocationMode = "hard",
    use_system_store: bool = True,
    cache: CrlCache | None = None,
) -> TrustDecision:
    """Whether a recipient certificate may be used to encrypt now, and why.

    ``require_chain`` False is the administrator-vouched case: a certificate that
    does not chain is used (the reason says so), and revocation is checked when
    an issuer is known among ``intermediates``/``trusted``."""
    try:
        chain = verify_chain(leaf, intermediates, trusted, now, use_system_store=use_system_store)
    except KeyRejected as error:
        if require_chain:
            return TrustDecision(False, error.detail)
        issuer = _issuer_among(leaf, [*intermediates, *trusted])
        if issuer is None:
            return TrustDecision(True, "no valid chain; vouched for by an administrator")
        chain = (leaf, issuer)
    issuer = chain[1] if len(chain) > 1 else leaf
    status = check_revocation(leaf, issuer, now, client=client, cache=cache)
    if status.state == "revoked":
        return TrustDecision(False, f"the certificate is {status.reason}", chain, status)
    if status.state == "unknown":
        reason = f"revocation status unknown: {status.reason}"
        if revocation_mode == "hard":
            return TrustDecision(False, reason, chain, status)
        return TrustDecision(True, f"{reason} (soft-fail)", chain, status)
    return TrustDecision(True, status.reason, chain, status)


def leaf_and_intermediates(
    certificates: Sequence[x509.Certificate], address: str
) -> tuple[x509.Certificate, list[x509.Certificate]] | None:
    """From the certificates a received signature carries (in any order): the one
    for ``address`` (a non-CA certificate naming it as an rfc822Name), and the
    others as candidate intermediates; None when none names the address."""
    wanted = normalize_address(address)
    for index, certificate in enumerate(certificates):
        if wanted in certificate_addresses(certificate) and not _is_ca(certificate):
            return certificate, [c for i, c in enumerate(certificates) if i != index]
    return None


def is_ca_certificate(certificate: x509.Certificate) -> bool:
    """basicConstraints CA set (a certificate that may issue others)."""
    return _is_ca(certificate)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _issuer_among(
    leaf: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        try:
            leaf.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- the organization's settings, applied at send time --------------------------------


def check_trusted_ca(pem: str, *, check_dates: bool = True) -> str:
    """A trusted CA certificate as an organization uploads it (one PEM certificate of a
    CA, within its dates), normalized; ValueError in words otherwise (the policy
    document's validator turns it into a 422 on ``smime_trust/trusted_cas/N``).
    ``check_dates`` False for a stored policy: a CA that expired since it was saved
    must not make the policy unreadable (chain validation refuses it at send time)."""
    if len(pem) > 20_000:
        raise ValueError("a certificate is at most 20,000 characters of PEM")
    try:
        certificate = x509.load_pem_x509_certificate(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ValueError("not a PEM X.509 certificate") from None
    if not _is_ca(certificate):
        raise ValueError("not a CA certificate (basicConstraints CA is not set)")
    if check_dates and certificate.not_valid_after_utc <= utc_now():
        raise ValueError("the CA certificate has expired")
    if check_dates and certificate.not_valid_before_utc > utc_now():
        raise ValueError("the CA certificate is not valid yet")
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def reason_code(decision: TrustDecision) -> str:
    """A short code for the delivery decision's reasons (``e2e.smime:<code>``)."""
    if decision.usable:
        return "trusted"
    if decision.revocation is not None and decision.revocation.state == "revoked":
        return "revoked"
    if decision.revocation is not None and decision.revocation.state == "unknown":
        return "revocation_unknown"
    return "untrusted"


# A decision is kept this long per (organization settings, certificate): sending does
# not ask an OCSP responder or fetch a CRL per message. "Unknown" is asked again
# sooner, a good status at most as long as the OCSP answer or CRL says it holds.
GOOD_FOR = timedelta(hours=1)
UNKNOWN_FOR = timedelta(minutes=10)
BAD_FOR = timedelta(hours=6)
FETCH_TIMEOUT = 5.0
_DECISIONS_MAX = 10_000


@dataclass
class TrustChecker:
    """Applies an organization's S/MIME trust settings to recipient certificates, with
    a per-process cache of decisions (keyed by the settings and the certificate's
    fingerprint; never an address) and the shared CRL cache."""

    require_chain: bool
    revocation: RevocationMode | Literal["off"]
    use_system_store: bool
    trusted: tuple[x509.Certificate, ...]
    key: str

    def check(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        now: datetime,
    ) -> TrustDecision:
        fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
        cached = _DECISIONS.get((self.key, fingerprint))
        if cached is not None and cached[0] > now:
            return cached[1]
        decision = self._evaluate(leaf, intermediates, now)
        if decision.usable and "unknown" not in decision.reason:
            until = now + GOOD_FOR
            if decision.revocation is not None and decision.revocation.valid_until is not None:
                until = min(until, decision.revocation.valid_until)
        elif decision.revocation is not None and decision.revocation.state == "unknown":
            until = now + UNKNOWN_FOR
        else:
            until = now + BAD_FOR
        with _DECISIONS_LOCK:
            if len(_DECISIONS) >= _DECISIONS_MAX:
                _DECISIONS.clear()
            _DECISIONS[(self.key, fingerprint)] = (until, decision)
        return decision

    def _evaluate(
        self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], now: datetime
    ) -> TrustDecision:
        if self.revocation == "off":
            try:
                chain = verify_chain(
                    leaf, intermediates, self.trusted, now, use_system_store=self.use_system_store
                )
            except KeyRejected as error:
                return TrustDecision(False, error.detail)
            return TrustDecision(True, "chain verified; revocation not checked", chain)
        with httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False) as client:
            return evaluate(
                leaf,
                intermediates,
                self.trusted,
                now,
                client=client,
                require_chain=self.require_chain,
                revocation_mode=self.revocation,
                use_system_store=self.use_system_store,
                cache=CRL_CACHE,
            )


_DECISIONS: dict[tuple[str, str], tuple[datetime, TrustDecision]] = {}
_DECISIONS_LOCK = threading.Lock()


def checker_for(
    *, require_chain: bool, revocation: str, use_system_store: bool, trusted_cas: Sequence[str]
) -> TrustChecker | None:
    """The checker for an organization's settings, or None when they check nothing
    (no chain required, revocation off: the certificate's own dates and use only)."""
    if not require_chain and revocation == "off":
        return None
    trusted = tuple(x509.load_pem_x509_certificate(p.encode("ascii")) for p in trusted_cas)
    digest = hashes.Hash(hashes.SHA256())
    for part in (str(require_chain), revocation, str(use_system_store), *trusted_cas):
        digest.update(part.encode("ascii") + b"\0")
    return TrustChecker(
        require_chain,
        revocation,  # type: ignore[arg-type]
        use_system_store,
        trusted,
        digest.finalize().hex(),
    )


def forget_decisions() -> None:
    """Drop the cached decisions (tests; an operator's refresh)."""
    with _DECISIONS_LOCK:
        _DECISIONS.clear()
