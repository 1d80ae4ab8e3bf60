"""The facts the protection decision reads of a message and its recipient, gathered
cheaply for a batch: the DLP summary (part by part, cached) and the recipients'
key states (one query)."""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session

from carepost.crypto.keyring import TenantKeys
from carepost.dlp.detectors import BUILTIN, Detector
from carepost.dlp.extraction import Attachment, MessageContent
from carepost.dlp.findings import Finding, ScanSummary, SkippedPart
from carepost.dlp.mime import content_from_mime
from carepost.dlp.scanner import TenantRules, scan_message
from carepost.dlp.service import tenant_rules
from carepost.e2ee.certificates import normalize_address
from carepost.e2ee.directory import INDEX_LABEL
from carepost.e2ee.models import RecipientKey
from carepost.messages.models import TEXT_FROM_HTML, Message
from carepost.policy.decision import KeyState, RecipientKeys
from carepost.policy.documents import PolicyDocument, ProtectionRules, RulesOverride, selects
from carepost.templates.plaintext import html_to_text

# Scans of message parts kept in memory, by tenant, rules and the part's digest.
SCAN_CACHE_SIZE = 4096
_scan_cache: OrderedDict[tuple[str, str, str], tuple[tuple[Finding, ...], tuple[SkippedPart, ...]]]
_scan_cache = OrderedDict()


def digest(*parts: bytes | str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    return hasher.hexdigest()


def rules_key(rules: TenantRules) -> str:
    """What identifies the tenant's rules for the cache (names, patterns, terms)."""
    return digest(
        repr([(r.name, r.pattern.pattern, int(r.severity)) for r in rules.mrn]),
        repr([(d.name, list(d.terms), int(d.severity), d.phi) for d in rules.dictionaries]),
    )


def used_detectors(policy: PolicyDocument) -> tuple[Detector, ...]:
    """The built-in detectors some rule of the policy reads (block, portal or PHI, in
    the defaults or an override): the others cannot change a decision, so a send-time
    scan skips them (``us_phone`` is the costly one, and no default rule reads it)."""
    selectors: set[str] = set()
    every: list[ProtectionRules | RulesOverride] = [policy.defaults]
    every += [*policy.domains.values(), *policy.templates.values()]
    for rules in every:
        for names in (rules.block_detectors, rules.portal_detectors, rules.phi_detectors):
            selectors.update(names or ())
    return tuple(d for d in BUILTIN if any(selects(s, d.name) for s in selectors))


@dataclass
class ContentScanner:
    """DLP over what messages carry, for one batch of one tenant."""

    session: Session
    keys: TenantKeys
    policy: PolicyDocument
    _rules: TenantRules | None = None
    _rules_key: str = ""
    _detectors: tuple[Detector, ...] = field(default=BUILTIN)

    def _tenant_rules(self) -> tuple[TenantRules, str]:
        if self._rules is None:
            self._rules = tenant_rules(self.session, self.keys.tenant_id)
            self._detectors = used_detectors(self.policy)
            self._rules_key = rules_key(self._rules) + ",".join(d.name for d in self._detectors)
        return self._rules, self._rules_key

    def scan(self, message: Message, built: EmailMessage | None = None) -> ScanSummary:
        """The DLP summary of what the message carries, part by part from the cache.

        The stored content is read (before link tracking, so copies of one content
        have one digest); a message stored without text or HTML (raw MIME relayed
        as it came) is read from the built message, whole, with its MIME parts."""
        body = message.body or {}
        if built is not None and body.get("text") is None and body.get("html") is None:
            parsed = content_from_mime(built)
            raw = digest("mime", built.as_bytes())
            return self._scan_chunks([(raw, parsed.content)], parsed.skipped)
        attachments = [
            Attachment(a["filename"], a["content_type"], base64.b64decode(a["content"]))
            for a in message.attachments or []
        ]
        text, html = body.get("text") or "", body.get("html") or ""
        chunks: list[tuple[str, MessageContent]] = [
            (digest("subject", message.subject), MessageContent(subject=message.subject)),
            (digest("text", text), MessageContent(text=text)),
        ]
        # The text part is usually made from the HTML: the same words need one scan.
        # Stored content says so (made when it was stored); older rows are compared.
        if html and not body.get(TEXT_FROM_HTML) and html_to_text(html).strip() != text.strip():
            chunks.append((digest("html", html), MessageContent(html=html)))
        if attachments:
            key = digest(
                "attachments", *(p for a in attachments for p in (a.name, a.content_type, a.data))
            )
            chunks.append((key, MessageContent(attachments=attachments)))
        return self._scan_chunks(chunks)

    def _scan_chunks(
        self, chunks: list[tuple[str, MessageContent]], skipped_before: Sequence[SkippedPart] = ()
    ) -> ScanSummary:
        rules, rules_key = self._tenant_rules()
        findings: list[Finding] = []
        skipped: list[SkippedPart] = list(skipped_before)
        tenant = str(self.keys.tenant_id)
        for digest, content in chunks:
            cache_key = (tenant, rules_key, digest)
            cached = _scan_cache.get(cache_key)
            if cached is None:
                result = scan_message(
                    content, keys=self.keys, rules=rules, detectors=self._detectors
                )
                cached = (result.findings, result.skipped)
                _scan_cache[cache_key] = cached
                if len(_scan_cache) > SCAN_CACHE_SIZE:
                    _scan_cache.popitem(last=False)
            else:
                _scan_cache.move_to_end(cache_key)
            findings.extend(cached[0])
            skipped.extend(cached[1])
        return ScanSummary.of(findings, skipped)


def address_key(address: str) -> str:
    return normalize_address(address)


def recipient_key_states(
    session: Session, keys: TenantKeys, addresses: Sequence[str], now: datetime
) -> dict[str, RecipientKeys]:
    """Each address's S/MIME and OpenPGP key state (valid, expired, revoked, none),
    one query for the batch; nothing is asked when the tenant holds no keys."""
    has_any = session.scalar(
        select(RecipientKey.id).where(RecipientKey.tenant_id == keys.tenant_id).limit(1)
    )
    if has_any is None or not addresses:
        return {}
    by_index = {keys.blind_index(INDEX_LABEL, address_key(a)): address_key(a) for a in addresses}
    rows = session.execute(
        select(
            RecipientKey.address_index,
            RecipientKey.kind,
            RecipientKey.revoked,
            RecipientKey.can_encrypt,
            RecipientKey.not_before,
            RecipientKey.not_after,
        ).where(
            RecipientKey.tenant_id == keys.tenant_id,
            RecipientKey.address_index.in_(sorted(by_index)),
        )
    ).all()
    found: dict[str, dict[str, set[KeyState]]] = defaultdict(lambda: defaultdict(set))
    for index, kind, revoked, can_encrypt, not_before, not_after in rows:
        state: KeyState
        if revoked:
            state = "revoked"
        elif not_after is not None and not_after <= now:
            state = "expired"
        elif can_encrypt and (not_before is None or not_before <= now):
            state = "valid"
        else:
            state = "none"
        found[by_index[index]][kind].add(state)
    result: dict[str, RecipientKeys] = {}
    for address, kinds in found.items():
        result[address] = RecipientKeys(
            smime=_best(kinds.get("smime", set())), openpgp=_best(kinds.get("openpgp", set()))
        )
    return result


def _best(states: set[KeyState]) -> KeyState:
    best: tuple[KeyState, ...] = ("valid", "revoked", "expired")
    for state in best:
        if state in states:
            return state
    return "none"
