"""SMTP client sessions with aiosmtplib: connect, TLS, AUTH and one mail transaction
(RFC 5321, STARTTLS RFC 3207, SMTP AUTH RFC 4954, SIZE RFC 1870, 8BITMIME RFC 6152,
SMTPUTF8 RFC 6531, enhanced status codes RFC 3463), and the pool of open sessions per
destination. :mod:`carepost.delivery.smtp` drives them.

Replies map to outcomes per recipient: 2xx delivered, 5xx bounced, everything else
deferred: 4xx, timeouts, refused or reset connections, TLS failures the policy does
not allow to fall back from, a connection dropped in the middle of DATA, a reply that
is not SMTP at all. A 550 to one RCPT bounces that recipient only; the others go on.

Connections are kept open per destination (:class:`ConnectionPool`) and carry one
transaction after the other. Between two successful transactions no RSET is sent: a
transaction that ended with the reply to DATA has already reset the server's state
(RFC 5321 section 4.1.1.4), so RSET would only cost a round trip per message. After a
transaction that did not complete, RSET clears the envelope before the connection is
used again. A pooled connection the server closed in the meantime is noticed when it
fails before any data was sent, and the message is sent again on a fresh connection.

With a server that offers PIPELINING (RFC 2920), MAIL, the RCPTs and DATA go out as
one group and the content as a second: two round trips a transaction. aiosmtplib
(5.x) reads one reply per command, so every connection runs on
:class:`~carepost.delivery.pipelining.PipeliningProtocol`, which keeps the replies of
a group. Every reply of the group is checked, in order; a DATA the server accepted
although no recipient was is ended with a lone dot and the transaction reset (RFC 2920
section 3.1). A server without PIPELINING gets one command at a time.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import aiosmtplib
from aiosmtplib import (
    SMTP,
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPStatus,
)
from aiosmtplib.email import quote_address

from carepost.core.emails import is_plain_email
from carepost.core.errors import CarepostError
from carepost.core.logging import get_logger
from carepost.delivery import dane
from carepost.delivery.pipelining import (
    adopt,
    can_pipeline,
    send_content,
    spoke_out_of_turn,
    transaction_replies,
)
from carepost.delivery.transport import (
    Envelope,
    OutcomeStatus,
    RecipientOutcome,
)

log = get_logger(__name__)

TlsMode = Literal["implicit", "verify", "encrypt", "opportunistic", "none"]
ENHANCED_CODE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")
MAX_REPLY_TEXT = 500
# Network and protocol trouble that defers a delivery instead of escaping ``deliver``.
# ValueError covers what ssl raises for a certificate that does not match its host.
NETWORK_ERRORS = (SMTPException, OSError, EOFError, ssl.SSLError)


def status_of(code: int | None) -> OutcomeStatus:
    """2xx delivered, 5xx bounced, anything else (4xx, no reply, garbage) deferred."""
    if code is not None and 200 <= code < 300:
        return "delivered"
    if code is not None and 500 <= code < 600:
        return "bounced"
    return "deferred"


def reply_parts(code: int, message: str) -> tuple[int | None, str | None, str]:
    """The reply code (None when it is not a valid one), the RFC 3463 enhanced status
    code when the text starts with one, and the text."""
    text = " ".join(message.split())[:MAX_REPLY_TEXT]
    valid = code if 200 <= code < 600 else None
    match = ENHANCED_CODE.match(text)
    enhanced = match.group(1) if match and valid and match.group(1)[0] == str(valid)[0] else None
    return valid, enhanced, text


class SessionFailure(CarepostError):
    """An SMTP session broke off: no reply, a bad reply, or a refusal before any
    recipient could be considered. ``data_sent`` is True once the message content may
    have reached the server (retrying elsewhere could then deliver it twice)."""

    code = "smtp-session-failed"
    status = 502
    title = "SMTP session failed"

    def __init__(
        self,
        text: str,
        *,
        reply_code: int | None = None,
        enhanced: str | None = None,
        outcome: OutcomeStatus = "deferred",
        data_sent: bool = False,
        tls_failed: bool = False,
    ) -> None:
        super().__init__(text)
        self.text = text[:MAX_REPLY_TEXT]
        self.reply_code = reply_code
        self.enhanced = enhanced
        self.outcome: OutcomeStatus = outcome
        self.data_sent = data_sent
        self.tls_failed = tls_failed
        # Recipients the server already answered for for good before the session broke.
        self.settled: dict[str, RecipientOutcome] = {}

    @classmethod
    def from_error(cls, error: BaseException, *, data_sent: bool = False) -> SessionFailure:
        if isinstance(error, SMTPResponseException):
            reply_code, enhanced, text = reply_parts(error.code, error.message)
            outcome = status_of(reply_code)
            return cls(
                text or "no reply text",
                reply_code=reply_code,
                enhanced=enhanced,
                outcome="deferred" if outcome == "delivered" else outcome,
                data_sent=data_sent,
            )
        # Our words, not the exception's: OS errors can quote the address we dialled.
        return cls(f"{_describe(error)}", data_sent=data_sent)

    def outcome_for(self, recipient: str) -> RecipientOutcome:
        if recipient in self.settled:
            return self.settled[recipient]
        return RecipientOutcome(
            recipient=recipient,
            status=self.outcome,
            code=self.reply_code,
            enhanced=self.enhanced,
            text=self.text,
        )


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out waiting for the server"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return "TLS handshake failed"
    if isinstance(error, aiosmtplib.SMTPConnectError) and error.__cause__ is not None:
        return _describe(error.__cause__)
    if isinstance(error, aiosmtplib.SMTPServerDisconnected | ConnectionError | EOFError):
        return "connection lost"
    return f"network error ({type(error).__name__})"


@dataclass(frozen=True)
class Destination:
    """A host to connect to: ``name`` is what TLS verifies and reports show, ``address``
    what is dialled (an IP address from the MX lookup, or the smarthost's name)."""

    name: str
    address: str
    port: int


@dataclass(frozen=True)
class SessionOptions:
    helo_name: str | None
    connect_timeout: float
    command_timeout: float
    data_timeout: float
    tls: TlsMode
    tls_context: ssl.SSLContext | None
    username: str | None = None
    password: str | None = None
    max_messages: int = 1000
    idle_seconds: float = 30.0
    # DANE TLSA records the server's certificate must match (RFC 7672), checked
    # after STARTTLS in place of PKIX (the context then does not verify).
    tlsa: tuple[dane.Tlsa, ...] = ()


def tls_context_for(mode: TlsMode, ca_file: str | None) -> ssl.SSLContext | None:
    """A verifying context for ``verify`` and ``implicit``; one that encrypts without
    checking the certificate for ``encrypt`` and ``opportunistic`` (most MX hosts have
    certificates no public CA signed, RFC 7435); none for ``none``."""
    if mode == "none":
        return None
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    if mode in ("encrypt", "opportunistic"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Connection:
    """An open SMTP session after EHLO (and STARTTLS and AUTH when asked)."""

    smtp: SMTP
    destination: Destination
    tls: bool
    data_timeout: float
    messages: int = 0
    reused: bool = False
    idle_since: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.smtp.is_connected and not spoke_out_of_turn(self.smtp)

    def close(self) -> None:
        self.smtp.close()

    async def quit(self) -> None:
        try:
            await self.smtp.quit(timeout=5)
        except NETWORK_ERRORS:
            self.close()


async def _greet(smtp: SMTP) -> None:
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:
        await smtp.helo()  # RFC 5321 section 3.2: fall back to HELO for old servers


async def _start_tls(smtp: SMTP, destination: Destination, options: SessionOptions) -> bool:
    """STARTTLS as the mode asks; True when the session is now encrypted."""
    if not smtp.supports_extension("starttls"):
        if options.tls == "opportunistic":
            return False
        raise SessionFailure(
            "the server does not offer STARTTLS, which the TLS policy requires", tls_failed=True
        )
    try:
        await smtp.starttls(tls_context=options.tls_context, server_hostname=destination.name)
    except SMTPResponseException as error:
        if options.tls == "opportunistic" and smtp.is_connected:
            return False  # 454 and the like: the session goes on in the clear
        raise SessionFailure.from_error(error) from None
    except NETWORK_ERRORS as error:
        raise SessionFailure(f"{_describe(error)} during STARTTLS", tls_failed=True) from None
    if options.tlsa:
        ssl_object = smtp.get_transport_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der or not dane.verify(options.tlsa, [der]):
            raise SessionFailure(
                "the server's certificate does not match its DANE TLSA records", tls_failed=True
            )
    await _greet(smtp)  # RFC 3207 section 4.2: forget the pre-TLS EHLO
    return True


async def open_connection(destination: Destination, options: SessionOptions) -> Connection:
    """Connect, greet, secure and authenticate; raises :class:`SessionFailure`. Under
    the opportunistic policy a failed TLS handshake is followed by a second connection
    in the clear (the policy prefers delivery to waiting)."""
    try:
        return await _open(destination, options)
    except SessionFailure as failure:
        if not (failure.tls_failed and options.tls == "opportunistic"):
            raise
        log.info("delivery.smtp.tls_fallback", host=destination.name)
        return await _open(destination, replace(options, tls="none"))


async def _open(destination: Destination, options: SessionOptions) -> Connection:
    implicit = options.tls == "implicit"
    smtp = SMTP(
        hostname=destination.address,
        port=destination.port,
        local_hostname=options.helo_name,
        timeout=options.command_timeout,
        use_tls=implicit,
        start_tls=False,
        tls_context=options.tls_context if implicit else None,
    )
    try:
        await smtp.connect(timeout=options.connect_timeout)
        adopt(smtp)
        await _greet(smtp)
        tls = implicit
        if options.tls in ("verify", "encrypt", "opportunistic"):
            tls = await _start_tls(smtp, destination, options)
        if options.username is not None:
            await _authenticate(smtp, options.username, options.password or "")
    except (SessionFailure, *NETWORK_ERRORS, ValueError) as error:
        smtp.close()
        # Before MAIL nothing is about a recipient: a 5xx greeting, a refused STARTTLS
        # or login says "not from you, not now" (our address or configuration), so it
        # defers like Postfix's smtp_skip_5xx_greeting rather than bouncing the message.
        failure = error if isinstance(error, SessionFailure) else SessionFailure.from_error(error)
        failure.outcome = "deferred"
        raise failure from None
    return Connection(
        smtp=smtp, destination=destination, tls=tls, data_timeout=options.data_timeout
    )


async def _authenticate(smtp: SMTP, username: str, password: str) -> None:
    """SMTP AUTH (RFC 4954) with one mechanism: PLAIN, else LOGIN, else CRAM-MD5.
    Trying the next one after a refusal (as aiosmtplib's ``login`` does) only hides the
    server's answer to the first; a wrong password is wrong in every mechanism."""
    offered = smtp.supported_auth_methods
    if "plain" in offered:
        await smtp.auth_plain(username, password)
    elif "login" in offered:
        await smtp.auth_login(username, password)
    elif "cram-md5" in offered:
        await smtp.auth_crammd5(username, password)
    else:
        raise SessionFailure("the server offers no AUTH mechanism carepost knows")


def _outcome(recipient: str, code: int, message: str) -> RecipientOutcome:
    reply_code, enhanced, text = reply_parts(code, message)
    return RecipientOutcome(recipient, status_of(reply_code), reply_code, enhanced, text)


def _refused(recipients: Sequence[str], text: str, enhanced: str) -> list[RecipientOutcome]:
    return [RecipientOutcome(r, "bounced", None, enhanced, text) for r in recipients]


async def _reset(connection: Connection) -> None:
    """RSET after a transaction that did not complete; a connection that cannot take
    it is closed rather than reused."""
    try:
        response = await connection.smtp.rset()
    except NETWORK_ERRORS:
        connection.close()
        return
    if response.code != 250:
        connection.close()


def _fatal(code: int) -> bool:
    """A reply after which the session is over: 421 (closing) or not SMTP at all."""
    return code == 421 or not 200 <= code < 600


def _failure(reply: SMTPResponse, *, data_sent: bool = False) -> SessionFailure:
    error = SMTPResponseException(reply.code, reply.message)
    return SessionFailure.from_error(error, data_sent=data_sent)


def sendable(address: str) -> bool:
    """True when ``address`` goes into MAIL FROM/RCPT TO exactly as given: a bare
    mailbox without control characters or spaces. aiosmtplib parses addresses
    leniently ("Name <a@b>" becomes <a@b>, and it drops what follows a line break), so
    anything it would rewrite is refused here rather than sent somewhere else."""
    # A dot-atom at a host name is quoted as it is, without parsing it.
    return is_plain_email(address) or quoted_as_given(address)


def quoted_as_given(address: str) -> bool:
    """:func:`sendable` by aiosmtplib's own parser, for any address."""
    if not address or any(ord(c) <= 32 or ord(c) == 127 for c in address):
        return False
    try:
        return quote_address(address) == f"<{address}>"
    except ValueError:
        return False


# MAIL and RCPT as aiosmtplib's ``mail`` and ``rcpt`` send them, without parsing the
# address again (its ``quote_address`` goes through email.utils.parseaddr, a fifth of
# a millisecond a message): :func:`sendable` has checked that it goes as ``<address>``,
# and every connection greeted the server when it opened (``_open``).


def _mail_command(address: str, options: Sequence[str], encoding: str) -> tuple[bytes, ...]:
    extra = [option.encode("ascii") for option in options]
    return (b"MAIL", b"FROM:<" + address.encode(encoding) + b">", *extra)


def _rcpt_command(address: str, encoding: str) -> tuple[bytes, ...]:
    return (b"RCPT", b"TO:<" + address.encode(encoding) + b">")


RCPT_ACCEPTED = (SMTPStatus.completed, SMTPStatus.will_forward)


async def _mail(smtp: SMTP, address: str, options: Sequence[str], encoding: str) -> None:
    response = await smtp.execute_command(*_mail_command(address, options, encoding))
    if response.code != SMTPStatus.completed:
        raise SMTPSenderRefused(response.code, response.message, address)


async def _rcpt(smtp: SMTP, address: str, encoding: str) -> None:
    response = await smtp.execute_command(*_rcpt_command(address, encoding))
    if response.code not in RCPT_ACCEPTED:
        raise SMTPRecipientRefused(response.code, response.message, address)


async def send_transaction(connection: Connection, envelope: Envelope) -> list[RecipientOutcome]:
    """One MAIL/RCPT/DATA transaction; returns the outcome of each recipient in order,
    or raises :class:`SessionFailure` when the session broke off (with the recipients
    refused for good so far in ``settled``)."""
    if not sendable(envelope.mail_from):
        return _refused(envelope.recipients, "the sender address cannot be sent over SMTP", "5.1.7")
    outcomes: dict[str, RecipientOutcome] = {
        r: _refused([r], "the recipient address cannot be sent over SMTP", "5.1.3")[0]
        for r in envelope.recipients
        if not sendable(r)
    }
    try:
        return await _transaction(connection, envelope, outcomes)
    except SessionFailure as failure:
        failure.settled = {r: o for r, o in outcomes.items() if o.status == "bounced"}
        raise


async def _transaction(
    connection: Connection, envelope: Envelope, outcomes: dict[str, RecipientOutcome]
) -> list[RecipientOutcome]:
    smtp = connection.smtp
    recipients = tuple(r for r in envelope.recipients if r not in outcomes)
    if not recipients:
        return [outcomes[r] for r in envelope.recipients]
    utf8 = not (envelope.mail_from.isascii() and all(r.isascii() for r in recipients))
    options: list[str] = []
    if utf8:
        if not smtp.supports_extension("smtputf8"):
            # RFC 6531 section 3.2: no downgrade of the addresses; the message bounces.
            text = "the receiving server does not take SMTPUTF8"
            return [outcomes.get(r) or _refused([r], text, "5.6.7")[0] for r in envelope.recipients]
        options.append("SMTPUTF8")
    if smtp.supports_extension("size"):
        options.append(f"SIZE={len(envelope.data)}")
    if not envelope.data.isascii() and smtp.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    encoding = "utf-8" if utf8 else "ascii"
    if can_pipeline(smtp):
        return await _pipelined(connection, envelope, recipients, options, encoding, outcomes)

    try:
        await _mail(smtp, envelope.mail_from, options, encoding)
    except SMTPResponseException as error:
        if _fatal(error.code):
            raise SessionFailure.from_error(error) from None
        await _reset(connection)
        for recipient in recipients:
            outcomes[recipient] = _outcome(recipient, error.code, error.message)
        return [outcomes[r] for r in envelope.recipients]
    except NETWORK_ERRORS as error:
        raise SessionFailure.from_error(error) from None

    accepted: list[str] = []
    for recipient in recipients:
        try:
            await _rcpt(smtp, recipient, encoding)
        except SMTPResponseException as error:
            if _fatal(error.code):
                raise SessionFailure.from_error(error) from None
            outcomes[recipient] = _outcome(recipient, error.code, error.message)
            continue
        except NETWORK_ERRORS as error:
            raise SessionFailure.from_error(error) from None
        accepted.append(recipient)

    if not accepted:
        await _reset(connection)
        return [outcomes[r] for r in envelope.recipients]

    try:
        response = await smtp.data(envelope.data, timeout=connection.data_timeout)
    except SMTPResponseException as error:
        if _fatal(error.code):
            raise SessionFailure.from_error(error, data_sent=True) from None
        await _reset(connection)
        for recipient in accepted:
            outcomes[recipient] = _outcome(recipient, error.code, error.message)
        return [outcomes[r] for r in envelope.recipients]
    except NETWORK_ERRORS as error:
        raise SessionFailure.from_error(error, data_sent=True) from None

    connection.messages += 1
    for recipient in accepted:
        outcomes[recipient] = _outcome(recipient, response.code, response.message)
    return [outcomes[r] for r in envelope.recipients]


async def _pipelined(
    connection: Connection,
    envelope: Envelope,
    recipients: Sequence[str],
    options: Sequence[str],
    encoding: str,
    outcomes: dict[str, RecipientOutcome],
) -> list[RecipientOutcome]:
    """The transaction of :func:`_transaction` in two groups (RFC 2920): MAIL, the
    RCPTs and DATA, then the content once DATA has its 354. Each reply means what it
    means one command at a time, and the session ends on the same ones."""
    smtp = connection.smtp
    commands = [
        b" ".join(_mail_command(envelope.mail_from, options, encoding)),
        *(b" ".join(_rcpt_command(recipient, encoding)) for recipient in recipients),
        b"DATA",
    ]
    try:
        replies = await transaction_replies(smtp, commands, smtp.timeout)
    except NETWORK_ERRORS as error:
        raise SessionFailure.from_error(error) from None
    mail, data = replies[0], replies[-1]

    def answered() -> list[RecipientOutcome]:
        return [outcomes[r] for r in envelope.recipients]

    if mail.code != SMTPStatus.completed:
        if _fatal(mail.code):
            raise _failure(mail)
        for recipient in recipients:
            outcomes[recipient] = _outcome(recipient, mail.code, mail.message)
        await _abandon(connection, data)
        return answered()

    accepted: list[str] = []
    for recipient, reply in zip(recipients, replies[1:-1], strict=True):
        if reply.code in RCPT_ACCEPTED:
            accepted.append(recipient)
        elif _fatal(reply.code):
            raise _failure(reply)
        else:
            outcomes[recipient] = _outcome(recipient, reply.code, reply.message)
    if not accepted:
        await _abandon(connection, data)
        return answered()

    if data.code != SMTPStatus.start_input:
        if _fatal(data.code):
            raise _failure(data)
        for recipient in accepted:
            outcomes[recipient] = _outcome(recipient, data.code, data.message)
        await _reset(connection)
        return answered()

    try:
        final = await send_content(smtp, envelope.data, connection.data_timeout)
    except NETWORK_ERRORS as error:
        raise SessionFailure.from_error(error, data_sent=True) from None
    if final.code != SMTPStatus.completed:
        if _fatal(final.code):
            raise _failure(final, data_sent=True)
        await _reset(connection)
    else:
        connection.messages += 1
    for recipient in accepted:
        outcomes[recipient] = _outcome(recipient, final.code, final.message)
    return answered()


async def _abandon(connection: Connection, data: SMTPResponse) -> None:
    """End a pipelined transaction no recipient is left in: a DATA the server
    accepted all the same gets a lone dot (RFC 2920 section 3.1), then RSET."""
    if data.code == SMTPStatus.start_input:
        try:
            await send_content(connection.smtp, None, connection.smtp.timeout)
        except NETWORK_ERRORS:
            connection.close()
            return
    await _reset(connection)


class ConnectionPool:
    """Open connections to one destination, reused one transaction after the other.

    The most recently used idle connection is taken first (the likeliest to be alive);
    one idle longer than ``idle_seconds``, closed by the server, or past
    ``max_messages`` is closed instead of reused. Every connection acquired goes back
    through :meth:`release` (reusable) or :meth:`discard` (broken).
    """

    def __init__(self, destination: Destination, options: SessionOptions) -> None:
        self.destination = destination
        self.options = options
        self.idle: list[Connection] = []
        self.in_use = 0

    def _fresh_enough(self, connection: Connection, now: float) -> bool:
        return connection.alive and now - connection.idle_since < self.options.idle_seconds

    async def acquire(self, *, fresh: bool = False) -> Connection:
        now = time.monotonic()
        while self.idle and not fresh:
            connection = self.idle.pop()
            if self._fresh_enough(connection, now):
                connection.reused = True
                self.in_use += 1
                return connection
            connection.close()
        connection = await open_connection(self.destination, self.options)
        self.in_use += 1
        return connection

    async def release(self, connection: Connection) -> None:
        self.in_use -= 1
        if not connection.alive:
            return
        if connection.messages >= self.options.max_messages:
            await connection.quit()
            return
        connection.idle_since = time.monotonic()
        self.idle.append(connection)

    def discard(self, connection: Connection) -> None:
        self.in_use -= 1
        connection.close()

    def sweep(self, now: float) -> bool:
        """Close idle connections past their time; True when nothing is left open."""
        keep = []
        for connection in self.idle:
            if self._fresh_enough(connection, now):
                keep.append(connection)
            else:
                connection.close()
        self.idle = keep
        return not self.idle and self.in_use == 0

    async def aclose(self) -> None:
        idle, self.idle = self.idle, []
        await asyncio.gather(*(connection.quit() for connection in idle))
