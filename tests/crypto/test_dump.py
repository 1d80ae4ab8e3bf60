"""A dump of the database alone reveals no PHI, taken the way an attacker would take it.

SQLite: ``iterdump()`` over the database file, plus the raw bytes of the ``.db``,
``-wal`` and ``-shm`` files. PostgreSQL: the real ``pg_dump`` binary over the
run's schema. Every seeded value is searched for as is (any case), as hex, as
UTF-16 and as base64 at every byte alignment.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from carepost.accounts.models import User
from tests.crypto.conftest import seed


def plain_forms(value: str) -> list[bytes]:
    """The value as text, hex or UTF-16: compared without regard to case."""
    raw = value.encode()
    return [raw.lower(), raw.hex().encode(), value.encode("utf-16-le").lower()]


def base64_forms(value: str) -> set[bytes]:
    """The value base64-encoded at any offset of a base64 group: compared exactly."""
    raw = value.encode()
    forms = set()
    for shift in range(3):
        # Encode after `shift` filler bytes; keep only the characters the value
        # alone determines (not the first group, nor the last with its neighbour).
        for encoder in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encoder(b"\0" * shift + raw).rstrip(b"=")
            core = encoded[4 if shift else 0 : -4]
            if len(core) >= 8:
                forms.add(core)
    return forms


def find_leaks(dump: bytes, values: list[str]) -> list[str]:
    folded = dump.lower()
    return [
        value
        for value in values
        if any(form in folded for form in plain_forms(value))
        or any(form in dump for form in base64_forms(value))
    ]


def dump_sqlite(database_url: str) -> bytes:
    path = Path(make_url(database_url).database or "")
    connection = sqlite3.connect(path)
    try:
        statements = "\n".join(connection.iterdump()).encode()
    finally:
        connection.close()
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    # Read the live files in another process: closing a descriptor of the database file
    # here would drop every POSIX lock this process's SQLite connections hold on it, and
    # the next process to close its last connection would then take itself for the last
    # user, checkpoint and delete the WAL under us ("disk I/O error" in later tests).
    return statements + b"".join(
        subprocess.run(["cat", str(file)], capture_output=True, check=True).stdout
        for file in files
        if file.exists()
    )


def _major(binary: str) -> int:
    match = re.search(r"/postgresql/(\d+)/", binary)
    return int(match.group(1)) if match else 0


def locate_pg_dump() -> str | None:
    candidates = sorted(
        (str(path) for path in Path("/usr/lib/postgresql").glob("*/bin/pg_dump")),
        key=_major,
        reverse=True,
    )
    on_path = shutil.which("pg_dump")
    for candidate in [*candidates, on_path]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def pg_dump_binary() -> str:
    """The pg_dump binary; installed from the distribution if it is missing."""
    found = locate_pg_dump()
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        for command in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "postgresql-client"],
        ):
            subprocess.run(command, capture_output=True, timeout=600, check=False)
        found = locate_pg_dump()
    if found is None:
        pytest.fail("pg_dump is required for the dump test and could not be found or installed")
    return found


def dump_postgres(database_url: str, schema: str) -> bytes:
    url = make_url(database_url)
    environment = dict(os.environ)
    if url.password:
        environment["PGPASSWORD"] = str(url.password)
    command = [
        pg_dump_binary(),
        "--no-password",
        "-h",
        url.host or "127.0.0.1",
        "-p",
        str(url.port or 5432),
        "-U",
        url.username or "postgres",
        "-d",
        url.database or "postgres",
        "-n",
        schema,
    ]
    result = subprocess.run(command, capture_output=True, env=environment, timeout=300, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout


def test_encodings_would_find_a_plaintext_value_however_it_is_written():
    value = "PhiFirst0a1b2c3d"
    for written in (
        value.upper().encode(),
        value.encode().hex().upper().encode(),
        base64.b64encode(b"xy" + value.encode() + b"z"),
        base64.b64encode(b"x" + value.encode()),
    ):
        assert find_leaks(b"INSERT INTO t VALUES('" + written + b"');", [value]) == [value]


def dump_database(settings) -> bytes:
    if settings.is_sqlite:
        return dump_sqlite(settings.database_url)
    assert settings.database_schema
    return dump_postgres(settings.database_url, settings.database_schema)


def test_a_database_dump_reveals_no_phi(runtime, settings, make_tenant):
    tenant, keys = make_tenant()
    seeded = seed(runtime, tenant.id, contacts=5, users=2)
    values = seeded.values()
    values += [fields["email"].split("@")[0] for fields in seeded.contacts.values()]

    dump = dump_database(settings)

    # The dump really holds the seeded rows: their blind indexes are there in clear.
    for fields in seeded.contacts.values():
        assert keys.blind_index("contacts.email", fields["email"]).encode() in dump
    assert find_leaks(dump, values) == []


def test_the_dump_check_finds_a_value_stored_in_clear(runtime, settings, make_tenant):
    # A staff member's display name is not PHI and is stored in clear: the same
    # dump and search must find it, or the test above proves nothing.
    tenant, _keys = make_tenant()
    marker = f"ClearMarker{secrets.token_hex(6)}"
    with runtime.tenant_session(tenant.id) as session:
        session.add(
            User(
                tenant_id=tenant.id,
                email=f"{secrets.token_hex(4)}@clinic.example",
                name=marker,
                role="analyst",
                password_hash="not-a-real-hash",
            )
        )
    assert find_leaks(dump_database(settings), [marker]) == [marker]
