"""``carepost domains``: add, list, records, check (against a loopback DNS server),
rotate and promote, driven through the environment as an operator would."""

from __future__ import annotations

import os
import re

import pytest
from typer.testing import CliRunner

from carepost.cli import app
from carepost.core.config import reset_settings_cache
from tests.dns_server import dns_server
from tests.environment import carepost_environment

runner = CliRunner()


@pytest.fixture
def cli(monkeypatch, tmp_path, settings):
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("CAREPOST_"):
            monkeypatch.delenv(name)
    for name, value in carepost_environment(settings).items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    yield lambda *args: runner.invoke(app, list(args))
    reset_settings_cache()


def test_domains_commands(cli, make_tenant):
    tenant, _keys = make_tenant()
    slug = tenant.slug
    added = cli("domains", "add", "Clinic.Example", "--tenant", slug)
    assert added.exit_code == 0, added.output
    assert "DKIM (active key): TXT cp-rsa-" in added.output
    assert "_dmarc.clinic.example" in added.output and "PRIVATE" not in added.output
    # The RSA record is printed as two quoted strings of at most 255 characters.
    rsa_line = next(line for line in added.output.splitlines() if "k=rsa" in line)
    assert all(len(s) <= 255 for s in re.findall(r'"([^"]*)"', rsa_line))

    listed = cli("domains", "list", "--tenant", slug)
    assert (
        listed.exit_code == 0 and "clinic.example" in listed.output and "pending" in listed.output
    )

    with dns_server() as (zone, host, port):
        failing = cli(
            "domains", "check", "clinic.example", "--tenant", slug, "--nameserver", f"{host}:{port}"
        )
        assert failing.exit_code == 1, failing.output
        assert "has no SPF record" in failing.output
        printed = cli("domains", "records", "clinic.example", "--tenant", slug)
        for name, strings in re.findall(r"TXT (\S+)\n  ((?:\"[^\"]*\" ?)+)", printed.output):
            zone.txt(name + ".", "".join(re.findall(r'"([^"]*)"', strings)))
        passing = cli(
            "domains", "check", "clinic.example", "--tenant", slug, "--nameserver", f"{host}:{port}"
        )
        assert passing.exit_code == 0, passing.output
        assert "clinic.example: warning" in passing.output

    rotated = cli("domains", "rotate", "clinic.example", "--tenant", slug)
    assert rotated.exit_code == 0 and "(next key)" in rotated.output
    again = cli("domains", "rotate", "clinic.example", "--tenant", slug)
    assert again.exit_code == 2 and "already waiting" in again.output
    promoted = cli("domains", "rotate", "clinic.example", "--tenant", slug, "--promote")
    assert promoted.exit_code == 0 and "2 keys promoted" in promoted.output

    unknown = cli("domains", "check", "other.example", "--tenant", slug)
    assert unknown.exit_code == 2 and "no sending domain" in unknown.output
