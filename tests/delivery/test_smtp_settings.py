"""The delivery settings: validated at start, the password hidden, and
``transport_from_settings`` building the transport they describe."""

from __future__ import annotations

from datetime import timedelta

import pytest

from carepost.cli.config import _shown
from carepost.core.config import load_settings
from carepost.core.errors import ConfigError
from carepost.delivery.smtp import SmtpTransport
from carepost.delivery.transport import transport_from_settings


def test_defaults_deliver_to_mx_with_opportunistic_tls_for_five_days():
    settings = load_settings()
    assert (settings.smtp_mode, settings.tls_policy) == ("mx", "opportunistic")
    assert settings.delivery_lifetime == timedelta(days=5)


def test_smarthost_mode_needs_a_host():
    with pytest.raises(ConfigError, match="smarthost_host"):
        load_settings(smtp_mode="smarthost")


def test_unknown_tls_policy_is_refused():
    with pytest.raises(ConfigError, match="CAREPOST_TLS_POLICY"):
        load_settings(tls_policy="sometimes")


def test_lifetime_takes_an_iso_duration():
    assert load_settings(delivery_lifetime="P2DT12H").delivery_lifetime == timedelta(hours=60)


def test_smarthost_password_is_a_hidden_secret():
    settings = load_settings(
        smtp_mode="smarthost", smarthost_host="relay.test", smarthost_password="pw-123"
    )
    assert "pw-123" not in repr(settings)
    assert _shown("smarthost_password", settings.smarthost_password) == "set (hidden)"


def test_transport_from_settings_builds_the_mode_asked():
    smarthost = transport_from_settings(
        load_settings(
            smtp_mode="smarthost",
            smarthost_host="relay.test",
            smarthost_port=465,
            smarthost_tls="implicit",
            smarthost_username="carepost",
            smarthost_password="pw-123",
            smtp_helo_name="out.clinic.test",
        )
    )
    assert isinstance(smarthost, SmtpTransport)
    assert smarthost.routing.smarthost is not None
    assert (smarthost.routing.smarthost.address, smarthost.routing.smarthost.port) == (
        "relay.test",
        465,
    )
    assert smarthost.options.tls == "implicit"
    assert (smarthost.options.username, smarthost.options.password) == ("carepost", "pw-123")
    assert smarthost.options.helo_name == "out.clinic.test"

    direct = transport_from_settings(load_settings(tls_policy="verify", dns_nameserver="10.0.0.53"))
    assert isinstance(direct, SmtpTransport)
    assert direct.routing.smarthost is None and direct.options.tls == "verify"
    assert direct.routing.resolver is not None
    assert direct.routing.resolver.nameservers == ["10.0.0.53"]
    assert direct.options.username is None
