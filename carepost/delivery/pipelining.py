"""SMTP command pipelining (RFC 2920) over aiosmtplib's connections.

aiosmtplib (5.x) writes one command and waits for its reply: its protocol keeps a
single reply waiter, parses one reply per read, and drops what arrives while no
command waits. A group of commands written at once would lose all replies but the
first. :class:`PipeliningProtocol` is aiosmtplib's protocol keeping every reply that
arrives, in order, so that a group of commands can be written in one go and the
replies then read one by one (:meth:`PipeliningProtocol.read_response`, once per
command, as aiosmtplib's own methods do). For one command at a time it behaves as
aiosmtplib's protocol; :func:`adopt` puts it under an open connection, whose
``SMTP`` object keeps working as before (EHLO, STARTTLS, AUTH, RSET, QUIT).

:func:`transaction_replies` sends MAIL, the RCPTs and DATA as one group and returns
their replies; the content and its final dot follow the 354 reply as another. A
transaction then takes two round trips instead of three plus one per recipient.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from aiosmtplib import SMTP, SMTPResponse, SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.protocol import (
    MAX_RESPONSE_LENGTH,
    PERIOD_REGEX,
    SMTPProtocol,
    normalize_message_line_endings,
)
from aiosmtplib.typing import SMTPStatus

Reply = SMTPResponse | SMTPResponseException


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol with a queue of the replies nobody has read yet.

    The oldest unread reply is either the result of the current waiter (set when a
    reader was already waiting) or the head of ``_replies``; every later one is in
    ``_replies``. A reply that does not parse is queued as its exception, in its place.
    """

    _replies: deque[Reply]

    def data_received(self, data: bytes) -> None:
        if self._response_waiter is None:
            return  # the connection is gone; nothing can read this any more
        self._buffer.extend(data)
        while True:
            try:
                reply = self._read_response_from_buffer()
            except SMTPResponseException as error:
                del self._buffer[:]
                self._deliver(error)
                return
            if reply is None:
                break
            self._deliver(reply)
        if len(self._buffer) > MAX_RESPONSE_LENGTH:  # a reply that never ends
            del self._buffer[:]
            self._deliver(
                SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long")
            )

    def _deliver(self, reply: Reply) -> None:
        waiter = self._response_waiter
        if self._replies or waiter is None or waiter.done():
            self._replies.append(reply)
        elif isinstance(reply, SMTPResponseException):
            self._set_response_exception(waiter, reply)
        else:
            waiter.set_result(reply)

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:
        waiter = self._response_waiter
        if self._replies and not (waiter is not None and waiter.done()):
            reply = self._replies.popleft()
            if isinstance(reply, SMTPResponseException):
                raise reply
            return reply
        return await super().read_response(timeout=timeout)


def adopt(smtp: SMTP) -> PipeliningProtocol:
    """Put a :class:`PipeliningProtocol` under ``smtp``'s open connection, in place
    of aiosmtplib's protocol and with its state (the transport, the command lock, the
    reply waiter, whatever is buffered). Call it between two commands."""
    current = smtp.protocol
    if isinstance(current, PipeliningProtocol):
        return current
    if current is None or current.transport is None:
        raise SMTPServerDisconnected("Server not connected")
    protocol = PipeliningProtocol.__new__(PipeliningProtocol)
    protocol.__dict__.update(current.__dict__)
    protocol._replies = deque()
    current.transport.set_protocol(protocol)
    smtp.protocol = protocol
    return protocol


def spoke_out_of_turn(smtp: SMTP) -> bool:
    """True when a reply arrived that no command asked for (a server about to close
    an idle session says 421 first): the connection is not to be used again."""
    protocol = smtp.protocol
    if not isinstance(protocol, PipeliningProtocol):
        return False
    waiter = protocol._response_waiter
    return bool(protocol._replies) or (waiter is not None and waiter.done())


def can_pipeline(smtp: SMTP) -> bool:
    """True when the server offers PIPELINING and the connection reads every reply."""
    return isinstance(smtp.protocol, PipeliningProtocol) and smtp.supports_extension("pipelining")


async def transaction_replies(
    smtp: SMTP, commands: Sequence[bytes], timeout: float | None
) -> list[SMTPResponse]:
    """Write ``commands`` (MAIL, the RCPTs, DATA; without line ends) in one group and
    return one reply per command, in order. Raises what aiosmtplib raises for a
    connection that is lost, a reply that is not SMTP, or a timeout."""
    protocol = smtp.protocol
    if not isinstance(protocol, PipeliningProtocol):
        raise SMTPServerDisconnected("Server not connected")
    protocol.write(b"".join(command + b"\r\n" for command in commands))
    return [await protocol.read_response(timeout=timeout) for _ in commands]


async def send_content(smtp: SMTP, data: bytes | None, timeout: float | None) -> SMTPResponse:
    """After a 354: the content (line ends made CRLF, leading dots doubled) and the
    final dot, or the final dot alone for ``None`` (a DATA the server should not have
    accepted, RFC 2920 section 3.1); returns the server's reply."""
    protocol = smtp.protocol
    if not isinstance(protocol, PipeliningProtocol):
        raise SMTPServerDisconnected("Server not connected")
    if data is None:
        protocol.write(b".\r\n")
    else:
        protocol.write(PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n")
    return await protocol.read_response(timeout=timeout)
