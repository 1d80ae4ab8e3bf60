"""The gateway's logs carry ids and counts only: no address, subject, content or
secret, whether a message is accepted, refused or fails to store."""

from __future__ import annotations

import smtplib

import pytest

from carepost.gateway import service
from tests.canaries import phi_value, secret_value
from tests.security.test_no_phi_in_logs import LogWindow


def test_gateway_logs_hold_no_phi_or_secret(
    gateway, make_client, make_tenant, log_file, monkeypatch
):
    window = LogWindow(log_file)
    tenant = make_tenant()
    creds = make_client(tenant)
    secret_value(creds.secret)
    recipient = f"{phi_value('mail').lower()}@example.org"
    subject = phi_value("subject")
    body = phi_value("diagnosis")
    data = (
        f"From: care@clinic.example\r\nTo: {recipient}\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    ).encode()
    with gateway.connect() as smtp:
        smtp.login(creds.username, creds.secret)
        assert smtp.sendmail("care@clinic.example", [recipient], data) == {}
        with pytest.raises(smtplib.SMTPDataError):  # refused: bare LF
            smtp.sendmail("care@clinic.example", [recipient], data.replace(b"\r\n\r\n", b"\r\n\n"))
        monkeypatch.setattr(service, "write_events", _broken)
        with pytest.raises(smtplib.SMTPDataError):  # failed to store: 451
            smtp.sendmail("care@clinic.example", [recipient], data)
    with pytest.raises(smtplib.SMTPAuthenticationError), gateway.connect() as smtp:
        smtp.login(creds.username, phi_value("password"))
    content = window.assert_clean(recipient, subject, body, creds.secret)
    for event in (
        "gateway.accepted",
        "gateway.refused",
        "gateway.store_failed",
        "gateway.auth_failed",
    ):
        assert event in content


def _broken(*args, **kwargs):
    raise OSError(phi_value("error"))
