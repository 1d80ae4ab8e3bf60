"""``carepost contacts import``: in-process imports with a progress bar, an error report, resume."""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carepost.audit.service import SYSTEM
from carepost.cli import app
from carepost.core.config import reset_settings_cache
from carepost.imports.models import ImportJob
from tests.canaries import phi_value
from tests.environment import carepost_environment
from tests.imports.clinic import contact_count, contacts_by_email

runner = CliRunner()


@pytest.fixture
def cli(settings, runtime, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("CAREPOST_"):
            monkeypatch.delenv(name)
    for name, value in carepost_environment(settings).items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    yield lambda *args: runner.invoke(app, list(args))
    reset_settings_cache()


def test_import_prints_progress_counts_and_where_the_error_report_is(
    cli, runtime, clinic, write_csv
):
    secret = phi_value("cell")
    path = write_csv(
        "Patient ID,E-Mail,Seen,A1C\n"
        "M1,ann@clinic.example,12/31/2023,7.5\n"
        f"M2,bob@clinic.example,01/02/2024,{secret}\n"
        "M3,=HYPERLINK(1),,\n"
    )
    tenant_row, _keys = clinic
    result = cli(
        "contacts", "import", str(path), "--tenant", tenant_row.slug, "--match", "mrn",
        "--map", "Patient ID=mrn", "--map", "Seen=last_visit", "--date-format", "us",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 created" in result.output and "2 with errors" in result.output
    report = path.with_name(path.name + ".errors.csv")
    assert str(report.name) in result.output.replace("\n", "")
    rows = list(csv.reader(report.open(encoding="utf-8")))
    assert rows[0] == ["line", "column", "reason"]
    assert [(row[0], row[1]) for row in rows[1:]] == [("3", "A1C"), ("4", "E-Mail")]
    assert secret not in report.read_text() and secret not in result.output
    ann = contacts_by_email(runtime, clinic)["ann@clinic.example"]
    assert ann.custom == {"last_visit": "2023-12-31", "a1c": 7.5}


def test_a_stopped_import_resumes_with_its_job_id(cli, runtime, clinic, write_csv, monkeypatch):
    from carepost.imports import local

    rows = "".join(f"p{n}@clinic.example,First{n}\n" for n in range(12))
    path = write_csv("email,first_name\n" + rows)
    tenant_row, keys = clinic
    job_id = local.start_local_import(
        runtime, keys, path, format="csv", mapping={}, match="email", actor=SYSTEM
    )
    local.run_local_import(runtime, keys, job_id, path, max_batches=1, batch_rows=5)
    result = cli("contacts", "import", str(path), "--tenant", tenant_row.slug,
                 "--resume", str(job_id))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "12 rows read, 12 created" in result.output
    assert contact_count(runtime, clinic) == 12
    with runtime.bound_session(keys) as session:
        assert session.get(ImportJob, job_id).status == "completed"
    again = cli("contacts", "import", str(path), "--tenant", tenant_row.slug,
                "--resume", str(job_id))  # fmt: skip
    assert again.exit_code == 2 and "already completed" in again.output


def test_an_unknown_field_is_one_clear_line(cli, clinic, write_csv):
    path = write_csv("email\nx@clinic.example\n")
    result = cli("contacts", "import", str(path), "--tenant", clinic[0].slug, "--map", "email=nope")
    assert result.exit_code == 2
    assert "mapping/columns/email" in result.output and "not a contact field" in result.output


def test_the_cli_imports_a_fhir_bundle(cli, clinic):
    tenant_row, _keys = clinic
    result = cli(
        "contacts",
        "import",
        str(Path(__file__).parent / "fhir_samples" / "mixed_bundle.json"),
        "--tenant",
        tenant_row.slug,
        "--format",
        "fhir",
        "--match",
        "external_id",
    )
    assert result.exit_code == 0, result.output
    assert "created" in result.output


def test_rebuild_tokens_restores_what_segments_find_after_tokenization_changed(
    cli, runtime, clinic, write_csv
):
    """Tokens written by an older tokenization (here: none at all) are rebuilt from the
    encrypted values, and a segment over a date range finds its contacts again."""
    from sqlalchemy import delete

    from carepost.contacts.models import ContactToken
    from carepost.contacts.retokenize import rebuild_tokens
    from carepost.segments.compiler import compile_count
    from carepost.segments.rules import parse_rule
    from carepost.segments.vocabulary import load_vocabulary

    tenant_row, keys = clinic
    rows = "".join(
        f"r{n}@clinic.example,19{50 + n}-06-15,2024-0{1 + n % 9}-10\n" for n in range(30)
    )
    path = write_csv("email,birth_date,last_visit\n" + rows)
    result = cli("contacts", "import", str(path), "--tenant", tenant_row.slug)
    assert result.exit_code == 0, result.output
    now = datetime(2026, 6, 1, tzinfo=UTC)
    rule = {
        "all": [
            {"field": "birth_date", "op": "age_between", "value": [50, 70]},
            {"field": "last_visit", "op": "between", "value": ["2024-02-01", "2024-05-31"]},
        ]
    }

    def count() -> int:
        with runtime.bound_session(keys) as session:
            node = parse_rule(rule, load_vocabulary(session, keys.tenant_id), now=now)
            dialect = session.get_bind().dialect.name
            return int(session.scalar(compile_count(node, keys, dialect)) or 0)

    # Born 1956-06-15 .. 1975-06-15 (ages 50-69) with a visit in February-May.
    expected = sum(1 for n in range(30) if 6 <= n <= 25 and 2 <= 1 + n % 9 <= 5)
    assert count() == expected > 0
    with runtime.bound_session(keys) as session:
        session.execute(delete(ContactToken).where(ContactToken.tenant_id == keys.tenant_id))
    assert count() == 0
    assert rebuild_tokens(runtime, keys, actor=SYSTEM, batch=7) == 30
    assert count() == expected
    result = cli("contacts", "rebuild-tokens", "--tenant", tenant_row.slug)
    assert result.exit_code == 0 and "Rebuilt the tokens of 30 contacts." in result.output
    assert count() == expected
