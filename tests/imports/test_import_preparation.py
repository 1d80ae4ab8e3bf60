"""Checking batches ahead in worker processes changes nothing an import does: the same
contacts, values, identifiers, tokens, counts and error report as checking inline; and
a batch checked against fields that changed meanwhile is checked again."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields, sync
from carepost.contacts.models import Contact, ContactIdentifier, ContactToken
from carepost.imports import local, service
from carepost.imports.runner import JobRunner
from tests.imports.conftest import add_clinic_fields

HEADER = "email,phone,first_name,birth_date,mrn,zip,gender,conditions,a1c,last_visit,smoker\n"


def clinic_file(rows: int) -> str:
    lines = []
    for n in range(rows):
        email = f"Pat{n}@Clinic.example" if n % 11 else "not an email"
        phone = f"+1617555{n:04d}" if n % 13 else "+1 555"
        birth = f"19{40 + n % 60}-0{1 + n % 9}-1{n % 10}" if n % 17 else "1990-02-30"
        conditions = ";".join(["e11", "i10", "j45"][: n % 4])
        smoker = ["yes", "no", ""][n % 3]
        lines.append(
            f"{email},{phone},First{n},{birth},MRN{n % 110},{n % 7:05d},"
            f"{['female', 'male', 'other'][n % 3]},{conditions},{4.5 + n % 40 / 10},"
            f"2024-0{1 + n % 9}-0{1 + n % 9},{smoker}\n"
        )
    return HEADER + "".join(lines)


def run(runtime, tenant, path: Path, processes: int, **options):
    _row, keys = tenant
    job_id = local.start_local_import(
        runtime, keys, path, format="csv", mapping={}, match="email", actor=SYSTEM
    )
    runner = JobRunner(
        runtime, keys, job_id, owner=local.LOCAL_OWNER, batch_rows=9, prepare_processes=processes
    )
    for name, value in options.items():
        setattr(runner, name, value)
    assert runner.run(path.open("rb")).outcome == "completed"
    with runtime.bound_session(keys) as session:
        job = service.get_job(session, keys.tenant_id, job_id)
        errors = [
            (e.line, e.column, e.reason)
            for e in service.iter_errors(session, keys.tenant_id, job_id)
        ]
        return (job.rows_read, job.created, job.updated, job.unchanged, job.errored), errors


def stored(runtime, tenant) -> dict[str, tuple]:
    """Each contact's decrypted values, identifiers and its tokens, which must be
    exactly those its values give (tokens are keyed per tenant: compared that way)."""
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        schema = custom_fields.load_schema(session, tenant_row.id)
        contacts = session.scalars(select(Contact).where(Contact.tenant_id == tenant_row.id))
        found = {}
        for contact in contacts:
            identifiers = session.scalars(
                select(ContactIdentifier).where(ContactIdentifier.contact_id == contact.id)
            ).all()
            tokens = session.execute(
                select(ContactToken.field_key, ContactToken.token).where(
                    ContactToken.contact_id == contact.id
                )
            ).all()
            expected = sync.contact_tokens(keys, schema, contact.custom, contact.birth_date)
            assert sorted(map(tuple, tokens)) == sorted(expected)
            found[contact.email] = (
                contact.phone,
                contact.first_name,
                contact.birth_date,
                contact.custom,
                contact.journey_stage,
                sorted((row.kind, row.value) for row in identifiers),
                sorted(key for key, _token in expected),
            )
        return found


def test_workers_import_exactly_what_inline_checking_imports(runtime, make_tenant, write_csv):
    path = write_csv(clinic_file(120))
    inline, workers = make_tenant(), make_tenant()
    for tenant in (inline, workers):
        add_clinic_fields(runtime, tenant)
    assert run(runtime, inline, path, 0) == run(runtime, workers, path, 2)
    contacts = stored(runtime, inline)
    assert len(contacts) > 80
    assert stored(runtime, workers) == contacts


def test_a_batch_checked_before_the_fields_changed_is_checked_again(runtime, clinic, write_csv):
    """The second batch is checked while the first is written; a choice is added to a
    field in between (after the first commit): the second batch, whose rows hold that
    choice, is checked again against the new fields and imports, as its raw rows would."""
    path = write_csv(
        HEADER
        + "".join(f"c{n}@clinic.example,,,,,,,e11,,,\n" for n in range(9))
        + "".join(f"d{n}@clinic.example,,,,,,,e11;z99,,,\n" for n in range(9))
    )
    tenant_row, keys = clinic

    def add_choice(_progress) -> None:
        with runtime.bound_session(keys) as session:
            field = next(
                row
                for row in custom_fields.list_fields(session, tenant_row.id)
                if row.key == "conditions"
            )
            if "z99" not in (field.choices or []):
                changes = {"choices": [*(field.choices or []), "z99"]}
                custom_fields.update_field(
                    session, tenant_row.id, field.id, changes=changes, actor=SYSTEM
                )

    counts, errors = run(runtime, clinic, path, 1, progress=add_choice)
    assert (counts, errors) == ((18, 18, 0, 0, 0), [])
    by_email = stored(runtime, clinic)
    assert by_email["d8@clinic.example"][3] == {"conditions": ["e11", "z99"]}
