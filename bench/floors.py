"""Benchmark: the floors under issue 4's import target and issue 5's delivery ratio.

``python -m bench floors [--rows 20000] [--messages 20000]`` measures, on this
machine, work that the spec's design asks of any implementation, and the most
throughput that work alone leaves on the machine's cores, as if everything else
cost nothing and every core were busy all the time. A ceiling under a target means
the target cannot be met here, whatever the code around that work does.

**CSV import** (issue 4: 20,000 rows/s on PostgreSQL), per row of
bench/csv_import.py's file, imported once through the real runner (PostgreSQL only):

* ``phone``: ``phonenumbers`` parse, validity and E.164 format of the row's number
  (the spec's library; an import checks and normalizes every number);
* ``hmac``: one HMAC-SHA256 (OpenSSL's one-shot) for each keyed token of the stored
  contact that no other contact shares (the blind indexes of email, phone and
  external ids), and one for each distinct segmentation bucket of the whole file;
* ``seal``: one AES-GCM encryption for each encrypted value stored;
* ``source``: carepost's reader (decoding, CSV, mapping, coercion), no database;
* ``database``: PostgreSQL's CPU to take the rows the contacts are stored as
  (contact, identifiers, stage history, tokens): the import's own rows, copied out
  as text and COPYed back into the emptied tables in the import's transactions
  (5,000 contacts each, asynchronous commit), so no Python work and no lookup is in
  it: indexes, constraints and storage only.

The counts come from what the import stored, the library costs from the libraries
alone (no carepost code around them). Prints ``floors import ... total_us=<n>
ceiling_rows/s=<n> ratio_to_20000=<r>``.

**Delivery** (issue 5: half the rate of a bare aiosmtplib loop), per message:

* ``sink``: the receiving aiosmtpd sink's CPU (bench/smtp_baseline.py's sink, which
  both sides of the ratio send to);
* ``client``: the cheapest SMTP client CPU measured: the bare ``sendmail`` loop's or
  carepost's pipelining transport's, whichever is less;
* ``dkim``: an RSA-2048 and an Ed25519 signature of a header hash (``cryptography``,
  prehashed as carepost signs): the two keys a sending domain signs with.

Prints ``floors delivery ... total_ms=<n> ceiling_messages/s=<n>
bare_loop_messages/s=<n> ceiling_ratio_to_bare_loop=<r>``: the highest ratio issue
5's benchmark could show if carepost did nothing but sign and send (no outbox, no
rendering, no database), and the same without the signatures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Any

import phonenumbers
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.csv_import import (
    TARGET_ROWS_PER_S,
    _backend_cpu_seconds,
    create_fields,
    source_cpu_seconds,
    write_file,
)
from bench.email_e2e import cpu_seconds
from bench.smtp_baseline import Sink, bare_loop, build_messages, transport_loop
from carepost.imports.runner import BATCH_ROWS

# The tables an imported contact is stored in, parents first (foreign keys).
CONTACT_TABLES = ("contacts", "contact_identifiers", "contact_stage_history", "contact_tokens")
RATIO_GOAL = 0.5


def cores() -> int:
    return os.cpu_count() or 1


def per_call(function: Callable[[], object], calls: int) -> float:
    """Seconds a call of ``function``: the best of three rounds of ``calls``."""
    best = float("inf")
    for _round in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def phone_seconds(numbers: list[str]) -> float:
    """Seconds to parse, validate and format one of ``numbers`` (each once)."""
    started = time.perf_counter()
    for number in numbers:
        parsed = phonenumbers.parse(number, "US")
        if phonenumbers.is_valid_number(parsed):
            phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return (time.perf_counter() - started) / len(numbers)


def stored_and_database(rows: int) -> dict[str, Any]:
    """Import ``rows`` rows, count what was stored per contact, then COPY the stored
    rows back into the emptied tables: the database's CPU seconds per contact."""
    from sqlalchemy import func, select, text

    from bench.scratch import scratch_tenant
    from carepost.audit.service import SYSTEM
    from carepost.contacts.models import Contact, ContactIdentifier, ContactToken
    from carepost.contacts.sealing import ENCRYPTED_COLUMNS, INDEX_COLUMNS
    from carepost.imports import local

    with scratch_tenant() as scratch:
        runtime, keys = scratch.runtime, scratch.keys
        if runtime.database.engine.dialect.name != "postgresql":
            raise SystemExit("floors: the import's floors are measured on PostgreSQL")
        tenant = keys.tenant_id
        with runtime.bound_session(keys) as session:
            create_fields(session, tenant)
        path = scratch.workdir / "contacts.csv"
        write_file(path, rows)
        source = source_cpu_seconds(runtime, keys, path, rows)
        job = local.start_local_import(
            runtime, keys, path, format="csv", mapping={}, match="email", actor=SYSTEM
        )
        result = local.run_local_import(runtime, keys, job, path)
        assert result.outcome == "completed", result
        contacts = Contact.__table__
        with runtime.database.session() as session:

            def count(*columns: Any, where: Any) -> int:
                return sum(session.scalar(select(func.count(c)).where(where)) or 0 for c in columns)

            assert count(contacts.c.id, where=contacts.c.tenant_id == tenant) == rows
            identifiers = count(ContactIdentifier.id, where=ContactIdentifier.tenant_id == tenant)
            seals = count(
                *(contacts.c[name] for name in ENCRYPTED_COLUMNS),
                where=contacts.c.tenant_id == tenant,
            )
            unique = count(
                *(contacts.c[name] for name in INDEX_COLUMNS.values()),
                where=contacts.c.tenant_id == tenant,
            )
            buckets = count(
                func.distinct(ContactToken.token), where=ContactToken.tenant_id == tenant
            )
            per_table = {
                name: (session.scalar(text(f"SELECT count(*) FROM {name}")) or 0) / rows
                for name in CONTACT_TABLES
            }
        raw = runtime.database.engine.raw_connection()
        try:
            cursor: Any = raw.cursor()
            batches = _copied_batches(cursor, BATCH_ROWS)
            cursor.execute("SELECT pg_backend_pid()")
            pid = int(cursor.fetchone()[0])
            cursor.execute(f"TRUNCATE {', '.join(CONTACT_TABLES)} CASCADE")
            raw.commit()
            before = _backend_cpu_seconds({pid})
            # As the import writes: a transaction a batch, asynchronous commit.
            cursor.execute("SET synchronous_commit = off")
            for batch in batches:
                for name, data in zip(CONTACT_TABLES, batch, strict=True):
                    with cursor.copy(f"COPY {name} FROM STDIN") as copy:
                        copy.write(data)
                raw.commit()
            database = _backend_cpu_seconds({pid}) - before
            cursor.execute("SELECT count(*) FROM contacts")
            assert int(cursor.fetchone()[0]) == rows
        finally:
            raw.close()
    return {
        "seals": (seals + identifiers) / rows,
        "unique_tokens": (unique + identifiers) / rows,
        "bucket_tokens": buckets,
        "rows": per_table,
        "source": source / rows,
        "database": database / rows,
    }


def _copied_batches(cursor: Any, size: int) -> list[list[bytes]]:
    """The stored rows as COPY text, a list a batch of ``size`` contacts (in id order,
    which is the order the import made them), with the rows of each table."""
    cursor.execute("SELECT id FROM contacts ORDER BY id")
    ids = [str(row[0]) for row in cursor.fetchall()]
    batches = []
    for start in range(0, len(ids), size):
        low, high = ids[start], ids[min(start + size, len(ids)) - 1]
        batch = []
        for name in CONTACT_TABLES:
            key = "id" if name == "contacts" else "contact_id"
            query = f"SELECT * FROM {name} WHERE {key} BETWEEN '{low}' AND '{high}'"
            with cursor.copy(f"COPY ({query}) TO STDOUT") as copy:
                batch.append(b"".join(bytes(chunk) for chunk in copy))
        batches.append(batch)
    return batches


def import_floor(rows: int) -> dict[str, float]:
    """Microseconds a row for each floor (``*_us``), and what they were counted from."""
    stored = stored_and_database(rows)
    phones = [f"+1617{2_000_000 + n % 7_000_000:07d}" for n in range(min(rows, 20_000))]
    key = os.urandom(32)
    token_input = b"email\x00patient123456@example.org"
    hmac_call = per_call(lambda: hmac.digest(key, token_input, "sha256"), 50_000)
    aead, nonce = AESGCM(AESGCM.generate_key(bit_length=256)), os.urandom(12)
    plaintext = b'"patient123456@example.org"'
    seal_call = per_call(lambda: aead.encrypt(nonce, plaintext, b"contact.email"), 50_000)
    return {
        "phone_us": phone_seconds(phones) * 1e6,
        "hmac_us": hmac_call * (stored["unique_tokens"] + stored["bucket_tokens"] / rows) * 1e6,
        "seal_us": seal_call * stored["seals"] * 1e6,
        "source_us": stored["source"] * 1e6,
        "database_us": stored["database"] * 1e6,
        "seals_per_row": stored["seals"],
        "unique_tokens_per_row": stored["unique_tokens"],
        "database_rows_per_contact": sum(stored["rows"].values()),
    } | {f"{name}_per_contact": count for name, count in stored["rows"].items()}


def dkim_seconds() -> tuple[float, float]:
    """Seconds for an RSA-2048 and for an Ed25519 DKIM signature of one message."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    headers = b"from:Clinic <care@clinic.example>\r\nsubject:Your appointment\r\n" * 5
    digest = hashlib.sha256(headers).digest()
    sign_rsa = per_call(
        lambda: rsa_key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())), 2_000
    )
    sign_ed = per_call(lambda: ed_key.sign(headers), 20_000)
    return sign_rsa, sign_ed


def delivery_floor(messages: int, connections: int = 8) -> dict[str, float]:
    """Milliseconds a message for each floor (``*_ms``), and the bare loop's rate."""
    built = build_messages(messages)
    client: list[float] = []
    sink_cpu: list[float] = []
    bare_rate = 0.0
    for loop in (bare_loop, transport_loop):
        sink = Sink()
        try:
            sink_before = cpu_seconds(sink.process.pid)  # type: ignore[arg-type]
            client_before = time.process_time()
            seconds = asyncio.run(loop(sink.port, built, connections))
            time.sleep(0.2)  # the sink's last answers
            client.append((time.process_time() - client_before) / messages)
            sink_cpu.append((cpu_seconds(sink.process.pid) - sink_before) / messages)  # type: ignore[arg-type]
            if sink.accepted.value != messages:
                raise RuntimeError(f"the sink accepted {sink.accepted.value} of {messages}")
        finally:
            sink.stop()
        if loop is bare_loop:
            bare_rate = messages / seconds
    sign_rsa, sign_ed = dkim_seconds()
    return {
        "sink_ms": min(sink_cpu) * 1e3,
        "client_ms": min(client) * 1e3,
        "dkim_ms": (sign_rsa + sign_ed) * 1e3,
        "rsa2048_ms": sign_rsa * 1e3,
        "ed25519_ms": sign_ed * 1e3,
        "bare_loop_messages_per_s": bare_rate,
    }


def run(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench floors")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--messages", type=int, default=20_000)
    options, _unknown = parser.parse_known_args(argv or [])
    n = cores()
    figures: dict[str, float] = {}
    url = os.environ.get("CAREPOST_DATABASE_URL", "")
    if url.startswith("postgresql"):
        found = import_floor(options.rows)
        total = sum(value for name, value in found.items() if name.endswith("_us"))
        ceiling = n * 1e6 / total
        print(
            "floors import "
            + " ".join(f"{name}={value:.1f}" for name, value in found.items())
            + f" total_us={total:.1f} cores={n} ceiling_rows/s={ceiling:.0f}"
            f" ratio_to_{TARGET_ROWS_PER_S}={ceiling / TARGET_ROWS_PER_S:.2f}"
        )
        figures |= found | {"import_ceiling": ceiling}
    else:
        print("floors import skipped: set CAREPOST_DATABASE_URL to a PostgreSQL database")
    found = delivery_floor(options.messages)
    bare = found["bare_loop_messages_per_s"]
    signed = found["sink_ms"] + found["client_ms"] + found["dkim_ms"]
    unsigned = found["sink_ms"] + found["client_ms"]
    print(
        "floors delivery "
        + " ".join(f"{name}={value:.3f}" for name, value in found.items() if name.endswith("_ms"))
        + f" total_ms={signed:.3f} cores={n} ceiling_messages/s={n * 1e3 / signed:.0f}"
        f" bare_loop_messages/s={bare:.0f}"
        f" ceiling_ratio_to_bare_loop={n * 1e3 / signed / bare:.2f} (goal {RATIO_GOAL})"
        f" unsigned_ceiling_ratio={n * 1e3 / unsigned / bare:.2f}"
    )
    figures |= found | {
        "delivery_ceiling_ratio": n * 1e3 / signed / bare,
        "unsigned_ceiling_ratio": n * 1e3 / unsigned / bare,
    }
    return figures


if __name__ == "__main__":
    run()
