"""The SMTP gateway server (aiosmtpd): customers' mail servers relay through it.

Rules, in the order a session meets them:

1. STARTTLS first (``530``): nothing but EHLO/HELO/NOOP/QUIT/STARTTLS before
   TLS; AUTH (PLAIN, LOGIN) is offered only after it. A failed AUTH answers
   ``535 5.7.8`` and identifies nobody.
2. MAIL FROM identifies the client: by its AUTH credentials, else by its TLS client
   certificate (SHA-256 fingerprint), else by its source network. An unknown
   client gets ``530 5.7.0 Authentication required``; a MAIL FROM domain the client
   may not send for ``550 5.7.1``; a declared SIZE over its limit ``552 5.3.4``.
3. RCPT: at most the client's ``max_recipients`` (``452 4.5.3``).
4. DATA: over the limit ``552 5.3.4``; a bare LF or CR anywhere ``550 5.6.0``
   (SMTP smuggling, 2023: only ``<CRLF>.<CRLF>`` ends data, and nothing that
   another server could read as an end of data is accepted); MIME that does not
   parse cleanly, is nested too deeply or has too many parts ``550 5.6.0``; a header
   From not on the client's domains ``550 5.7.1``. Then one queued message per
   recipient is **committed before** ``250`` (concurrent sessions share a group
   commit, :class:`GroupWriter`); any failure to store answers
   ``451 4.3.0`` so the client retries: nothing accepted is lost.

Logs name the client id and counts only, never addresses or content.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.message import Message as MimeMessage
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from carepost.contacts.fields import normalize_email
from carepost.core.config import Settings
from carepost.core.errors import ValidationFailed
from carepost.core.logging import get_logger
from carepost.core.runtime import Runtime
from carepost.crypto.keyring import TenantKeys
from carepost.domains.senders import check_sender
from carepost.gateway import keys as gateway_keys
from carepost.gateway import service
from carepost.gateway.service import ClientView

log = get_logger(__name__)

MAX_DEPTH = 10
MAX_PARTS = 500
_BARE = re.compile(rb"(?<!\r)\n|\r(?!\n)")


class MessageRefused(Exception):
    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def _client_of(session: Session) -> ClientView | None:
    found = getattr(session, "gateway_client", None)
    return found if isinstance(found, ClientView) else None


def _peer_fingerprint(session: Session) -> str | None:
    extra = session.ssl
    if not extra:
        return None
    ssl_object = extra.get("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def parse_checked(data: bytes) -> MimeMessage:
    """The message parsed, or :class:`MessageRefused` when it is malformed."""
    if _BARE.search(data):
        raise MessageRefused("550 5.6.0 Bare LF or CR in message data refused (RFC 5321)")
    try:
        # compat32: the structure and its defects without parsing every header's
        # grammar (several times faster); the two headers used are decoded below.
        parsed = BytesParser(policy=policy.compat32).parsebytes(data)
    except Exception:  # noqa: BLE001 - whatever the parser trips on is a malformed message
        raise MessageRefused("550 5.6.0 Malformed message") from None
    parts = 0
    stack: list[tuple[Any, int]] = [(parsed, 0)]
    while stack:
        part, depth = stack.pop()
        parts += 1
        if depth > MAX_DEPTH:
            raise MessageRefused(f"550 5.6.0 MIME nested deeper than {MAX_DEPTH} levels refused")
        if parts > MAX_PARTS:
            raise MessageRefused(f"550 5.6.0 More than {MAX_PARTS} MIME parts refused")
        if part.defects:
            raise MessageRefused("550 5.6.0 Malformed MIME structure refused")
        if part.is_multipart():
            payload = part.get_payload()
            if not isinstance(payload, list):
                raise MessageRefused("550 5.6.0 Malformed MIME structure refused")
            stack.extend((child, depth + 1) for child in payload)
    return parsed


# The From header of nearly every message: ``Name <address>`` or a bare address, with
# no quotes, comments, groups or second address, which reads the same to any parser.
# Anything else goes through the email package's address parser.
_ATOMS = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_PLAIN_FROM = re.compile(rf'[^"<>,;:()\\@\[\]\r\n]*<({_ATOMS})>\s*|\s*({_ATOMS})\s*')


def _header_from(parsed: MimeMessage) -> str:
    values = parsed.get_all("From") or []
    if len(values) != 1:
        raise MessageRefused("550 5.6.0 The message must have exactly one From header")
    value = str(values[0])
    plain = _PLAIN_FROM.fullmatch(value)
    if plain is not None:
        addresses = [plain.group(1) or plain.group(2)]
    else:
        addresses = [a for _n, a in getaddresses([value]) if a]
    if len(addresses) != 1:
        raise MessageRefused("550 5.6.0 The From header must name exactly one address")
    try:
        return normalize_email(addresses[0])
    except ValidationFailed:
        raise MessageRefused("550 5.6.0 The From address is not valid") from None


def _subject(parsed: MimeMessage) -> str:
    raw = parsed.get("Subject")
    if raw is None:
        return ""
    if isinstance(raw, str) and "=?" not in raw:
        return raw[:998]  # no encoded words: decoding would give it back as it is
    try:
        return str(make_header(decode_header(str(raw))))[:998]
    except Exception:  # noqa: BLE001 - an undecodable subject is kept as it came
        return str(raw)[:998]


class GatewayHandler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.writer = GroupWriter(runtime)
        self.verified = service.VerifiedSecrets()
        self.discovering: set[asyncio.Future[int]] = set()

    # --- identification ----------------------------------------------------------

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username = auth_data.login.decode("utf-8", "replace")
        secret = auth_data.password.decode("utf-8", "replace")
        with self.runtime.database.session() as db:
            client = service.by_username(db, username, secret, self.verified)
        if client is None:
            log.warning("gateway.auth_failed", mechanism=mechanism)
            return AuthResult(success=False, handled=False)
        session.gateway_client = client  # type: ignore[attr-defined]
        log.info("gateway.auth", client=str(client.id))
        return AuthResult(success=True, auth_data=client.id)

    def _identify(self, session: Session) -> ClientView | None:
        with self.runtime.database.session() as db:
            fingerprint = _peer_fingerprint(session)
            if fingerprint:
                found = service.by_certificate(db, fingerprint)
                if found is not None:
                    return found
            peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
            return service.by_network(db, str(peer))

    # --- SMTP hooks ------------------------------------------------------------------

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # Who the client is cannot change within a session (its credentials, certificate
        # and address are the session's): identified once, at its first MAIL.
        client = _client_of(session)
        if client is None:
            client = await asyncio.get_running_loop().run_in_executor(None, self._identify, session)
        if client is None:
            log.warning("gateway.unknown_client")
            return "530 5.7.0 Authentication required"
        if not service.sender_allowed(client, address):
            log.warning("gateway.sender_refused", client=str(client.id))
            return "550 5.7.1 Sender domain not allowed for this client"
        for option in mail_options:
            name, _, value = option.partition("=")
            if name.upper() == "SIZE" and value.isdigit() and int(value) > client.max_message_bytes:
                return "552 5.3.4 Message size exceeds the limit"
        session.gateway_client = client  # type: ignore[attr-defined]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        client = _client_of(session)
        if client is None or envelope.mail_from is None:
            return "503 5.5.1 MAIL first"
        limit = min(client.max_recipients, self.settings.gateway_max_recipients)
        if len(envelope.rcpt_tos) >= limit:
            return "452 4.5.3 Too many recipients"
        try:
            normalize_email(address)
        except ValidationFailed:
            return "553 5.1.3 Recipient address not valid"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        client = _client_of(session)
        if client is None or envelope.mail_from is None:
            return "503 5.5.1 MAIL first"
        content = envelope.original_content or b""
        data = content if isinstance(content, bytes) else content.encode("utf-8", "replace")
        if len(data) > client.max_message_bytes:
            return "552 5.3.4 Message size exceeds the limit"
        try:
            parsed = parse_checked(data)
            header_from = _header_from(parsed)
            if not service.sender_allowed(client, header_from):
                raise MessageRefused("550 5.7.1 From header domain not allowed for this client")
        except MessageRefused as refused:
            log.warning("gateway.refused", client=str(client.id), reply=refused.reply[:12])
            return refused.reply
        subject = _subject(parsed)
        item = _Store(
            client, envelope.mail_from or "", header_from, list(envelope.rcpt_tos), subject, data
        )
        try:
            ids = await self.writer.store(item)
        except MessageRefused as refused:
            log.warning("gateway.refused", client=str(client.id), reply=refused.reply[:12])
            return refused.reply
        except Exception as exc:  # noqa: BLE001 - the client must retry, never lose mail
            log.error("gateway.store_failed", client=str(client.id), error=type(exc).__name__)
            return "451 4.3.0 Temporary failure, try again later"
        log.info("gateway.accepted", client=str(client.id), messages=len(ids), bytes=len(data))
        if gateway_keys.offers_keys(parsed):
            self._discover_later(client, data, parsed)
        return f"250 2.0.0 OK queued as {ids[0]}"

    # --- key discovery (after the commit, off the reply's path) --------------------------

    def _discover_later(self, client: ClientView, data: bytes, parsed: MimeMessage) -> None:
        future = asyncio.get_running_loop().run_in_executor(
            None, self._discover, client, data, parsed
        )
        self.discovering.add(future)
        future.add_done_callback(self.discovering.discard)

    def _discover(self, client: ClientView, data: bytes, parsed: MimeMessage) -> int:
        try:
            keys = self.writer._tenant_keys(client.tenant_id)
            with self.runtime.bound_session(keys) as db:
                return gateway_keys.discover(
                    db,
                    client.tenant_id,
                    data,
                    parsed,
                    actor=service.client_actor(client),
                    client_id=client.id,
                )
        except Exception as exc:  # noqa: BLE001 - the relay is done; only log why
            log.warning("gateway.keys_failed", client=str(client.id), error=type(exc).__name__)
            return 0

    async def discovery_done(self) -> None:
        """Wait for the key discoveries started so far (tests, shutdown)."""
        while self.discovering:
            await asyncio.gather(*list(self.discovering), return_exceptions=True)


@dataclass(eq=False)
class _Store:
    client: ClientView
    mail_from: str
    header_from: str
    recipients: list[str]
    subject: str
    data: bytes
    ids: list[uuid.UUID] | None = None
    error: BaseException | None = None


class GroupWriter:
    """Group commit of accepted messages.

    Each DATA hands in its message and waits until it is committed (or failed);
    one transaction per tenant writes every message waiting at that moment, in a
    worker thread, so fifty sessions cost a few commits, not fifty. No session hears
    250 before the transaction holding its message committed; if that transaction
    fails, every session in it hears 451 and retries."""

    KEYS_SECONDS = 60.0

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._waiting: list[_Store] = []
        self._lock: asyncio.Lock | None = None
        self._keys: dict[uuid.UUID, tuple[float, TenantKeys]] = {}

    async def store(self, item: _Store) -> list[uuid.UUID]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        self._waiting.append(item)
        async with self._lock:
            if item.ids is None and item.error is None:
                batch, self._waiting = self._waiting, []
                await asyncio.get_running_loop().run_in_executor(None, self._write, batch)
        if item.error is not None:
            raise item.error
        assert item.ids is not None
        return item.ids

    def _tenant_keys(self, tenant_id: uuid.UUID) -> TenantKeys:
        cached = self._keys.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < self.KEYS_SECONDS:
            return cached[1]
        with self.runtime.database.session() as db:
            keys = self.runtime.keyring.load(db, tenant_id)
        self._keys[tenant_id] = (time.monotonic(), keys)
        return keys

    def _write(self, batch: list[_Store]) -> None:
        by_tenant: dict[uuid.UUID, list[_Store]] = defaultdict(list)
        for item in batch:
            by_tenant[item.client.tenant_id].append(item)
        for tenant_id, items in by_tenant.items():
            try:
                keys = self._tenant_keys(tenant_id)
                with self.runtime.bound_session(keys) as db:
                    # The domain must still be a verified sending domain of the tenant
                    # (it may have been deleted since the client was configured).
                    accepted = []
                    # One check per From domain of the batch, not per message.
                    refusals: dict[str, str | None] = {}
                    for item in items:
                        domain = item.header_from.rpartition("@")[2]
                        if domain not in refusals:
                            refusals[domain] = check_sender(db, tenant_id, item.header_from)
                        if refusals[domain] is None:
                            accepted.append(item)
                        else:
                            item.error = MessageRefused(
                                "550 5.7.1 The sending domain is no longer verified"
                            )
                    relays = [
                        service.Relay(
                            item.client,
                            item.mail_from,
                            item.header_from,
                            item.recipients,
                            item.subject,
                            item.data,
                        )
                        for item in accepted
                    ]
                    found = service.store_many(db, keys, relays) if relays else []
                # Leaving the block committed: only now may the clients hear 250.
            except Exception as exc:  # noqa: BLE001 - every message of it is retried (451)
                for item in items:
                    if not isinstance(item.error, MessageRefused):
                        item.error = exc
                continue
            for item, ids in zip(accepted, found, strict=True):
                item.ids = ids


def tls_context(settings: Settings) -> ssl.SSLContext:
    if not settings.gateway_tls_cert_file or not settings.gateway_tls_key_file:
        raise ValueError(
            "the gateway needs CAREPOST_GATEWAY_TLS_CERT_FILE and CAREPOST_GATEWAY_TLS_KEY_FILE"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.gateway_tls_cert_file, settings.gateway_tls_key_file)
    # Ask for a client certificate (identification by fingerprint), never require one.
    context.verify_mode = ssl.CERT_OPTIONAL
    if settings.gateway_client_ca_file:
        context.load_verify_locations(cafile=str(settings.gateway_client_ca_file))
    else:
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return context


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with AUTH checked in a worker thread: an argon2 verification takes
    tens of milliseconds, and on the event loop it would stall every other session."""

    _pending: LoginPassword | None = None

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # Called by the built-in PLAIN/LOGIN parsers; the check itself follows, off the loop.
        self._pending = auth_data if isinstance(auth_data, LoginPassword) else None
        return AuthResult(success=False, handled=False)

    async def _checked(self, mechanism: str, parsed: AuthResult) -> AuthResult:
        pending, self._pending = self._pending, None
        if pending is None:
            return parsed
        handler = self.event_handler
        assert isinstance(handler, GatewayHandler)
        assert self.session is not None and self.envelope is not None
        session, envelope = self.session, self.envelope
        return await asyncio.get_running_loop().run_in_executor(
            None, handler.authenticate, self, session, envelope, mechanism, pending
        )

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked("PLAIN", await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked("LOGIN", await super().auth_LOGIN(_, args))


class GatewayController(Controller):
    def __init__(self, handler: GatewayHandler, *, hostname: str, port: int) -> None:
        settings = handler.settings
        self._gateway_settings = settings
        self._gateway_tls = tls_context(settings)
        super().__init__(
            handler,
            hostname=hostname,
            port=port,
            ready_timeout=10.0,
            data_size_limit=settings.gateway_max_message_bytes,
            ident="carepost gateway",
        )

    def factory(self) -> SMTP:
        handler = self.handler
        assert isinstance(handler, GatewayHandler)
        return GatewaySMTP(
            handler,
            data_size_limit=self._gateway_settings.gateway_max_message_bytes,
            hostname=self.hostname,
            ident="carepost gateway",
            tls_context=self._gateway_tls,
            require_starttls=True,
            auth_require_tls=True,
            auth_required=False,
            authenticator=handler.authenticate,
            timeout=120,
        )


def gateway_controller(
    runtime: Runtime, *, host: str | None = None, port: int | None = None
) -> GatewayController:
    """A controller running the gateway in a thread (``.start()`` / ``.stop()``)."""
    settings = runtime.settings
    return GatewayController(
        GatewayHandler(runtime),
        hostname=host or settings.gateway_host,
        port=port if port is not None else settings.gateway_port,
    )
