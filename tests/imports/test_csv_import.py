"""CSV imports through the job runner: good rows kept, bad rows reported by line and column."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import select

from carepost.audit.models import AuditEvent
from carepost.audit.service import SYSTEM
from carepost.core.errors import Conflict, ValidationFailed
from carepost.imports import local, service
from carepost.imports.models import ImportJob, JobStatus
from tests.canaries import phi_value
from tests.imports.clinic import contact_count, contacts_by_email

HEADER = "email,first_name,last_name,birth_date,mrn,zip,gender,conditions,a1c,last_visit,smoker\n"


def run_file(runtime, tenant, path: Path, *, match="email", mapping=None, **options):
    _row, keys = tenant
    job_id = local.start_local_import(
        runtime, keys, path, format="csv", mapping=mapping or {}, match=match, actor=SYSTEM
    )
    result = local.run_local_import(runtime, keys, job_id, path, **options)
    with runtime.bound_session(keys) as session:
        job = service.get_job(session, keys.tenant_id, job_id)
        errors = [
            (e.line, e.column, e.reason)
            for e in service.iter_errors(session, keys.tenant_id, job_id)
        ]
    return job, errors, result


def test_good_rows_import_and_bad_rows_are_reported_by_line_and_column(runtime, clinic, write_csv):
    secret_name = phi_value("name")
    secret_cell = phi_value("cell")
    content = (
        (
            HEADER
            + "ann@clinic.example,Ann,Lee,1970-01-02,MRN1,02139,female,e11;i10,7.2,2024-01-05,yes\n"
            + f"bob@clinic.example,{secret_name},Ray,1980-02-03,MRN2,10001,male,j45|e78,6,,no\n"
            + f"carl@clinic.example,Carl,Poe,1990-03-04,MRN3,10002,male,,{secret_cell},,\n"
            + f"{secret_cell},Dee,Doe,,,,,,,,\n"
            + "eve@clinic.example,Eve,Moe\n"
            + "fay@clinic.example,Fay,Kay,1960-01-01,MRN6,10003,unknown,,,,\n"
            + "ann@clinic.example,Ann,Again,,,,,,,,\n"
            + '"gil@clinic.example","Gil\nMulti",Line,,,,,,,,\n'
            + "hal@clinic.example,Hal,Hay,03/04/1950,,,,,,,\n"
            + "ivy@clinic.example,Ivy,Ivo,,,,,e11;zzz,,,maybe\n"
        ).encode()
        + b"jo@clinic.example,J\xff\xfe,Bad,,,,,,,,\n"
        + b"kim@clinic.example,Kim,Kai,,,,,,,,\n"
    )
    job, errors, result = run_file(runtime, clinic, write_csv(content))

    assert result.outcome == JobStatus.COMPLETED
    assert job.status == JobStatus.COMPLETED
    assert job.rows_read == 12
    assert job.created == 3  # ann, bob, kim
    assert job.errored == 9
    assert job.progress_percent == 100.0
    by_line = {(line, column) for line, column, _ in errors}
    assert (4, "a1c") in by_line  # not a number
    assert (5, "email") in by_line  # not an email (reported by the upsert's checks)
    assert (6, "") in by_line  # ragged row
    assert (7, "gender") in by_line  # not a choice
    assert (8, "") in by_line  # the same email as line 2
    assert (9, "first_name") in by_line  # a quoted field over two lines: not one line
    assert (11, "birth_date") in by_line  # a US date without date_format=us
    assert (12, "smoker") in by_line and (12, "conditions") in by_line
    assert (13, "") in by_line  # not UTF-8
    reasons = " ".join(reason for _, _, reason in errors)
    assert "line 2" in reasons and "UTF-8" in reasons and "columns" in reasons
    assert secret_cell not in repr(errors) and secret_name not in repr(errors)

    stored = contacts_by_email(runtime, clinic)
    assert set(stored) == {
        "ann@clinic.example",
        "bob@clinic.example",
        "kim@clinic.example",
    }
    ann = stored["ann@clinic.example"]
    assert ann.custom == {
        "zip": "02139",
        "gender": "female",
        "conditions": ["e11", "i10"],
        "a1c": 7.2,
        "last_visit": "2024-01-05",
        "smoker": True,
    }
    assert ann.birth_date == "1970-01-02"
    assert stored["bob@clinic.example"].custom["conditions"] == ["e78", "j45"]


def test_us_dates_and_an_explicit_mapping(runtime, clinic, write_csv):
    content = "E-Mail,DOB,Seen,Notes\nzed@clinic.example,3/4/1950,12/31/2023,anything\n"
    mapping = {
        "columns": {"DOB": "birth_date", "Seen": "last_visit", "Notes": None},
        "date_format": "us",
    }
    job, errors, _ = run_file(runtime, clinic, write_csv(content), mapping=mapping)
    assert errors == [] and job.created == 1
    zed = contacts_by_email(runtime, clinic)["zed@clinic.example"]
    assert zed.birth_date == "1950-03-04"
    assert zed.custom == {"last_visit": "2023-12-31"}


def test_reimporting_the_same_file_changes_nothing(runtime, clinic, write_csv):
    path = write_csv(HEADER + "ann@clinic.example,Ann,Lee,1970-01-02,MRN1,,,,,,\n")
    first, _, _ = run_file(runtime, clinic, path)
    second, _, _ = run_file(runtime, clinic, path)
    assert (first.created, second.created, second.unchanged) == (1, 0, 1)
    assert contact_count(runtime, clinic) == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "no header"),
        (b"\xff\xfee\x00m\x00", "UTF-16"),
        (b"em\xffail\nx@y.org\n", "header"),
        (b"name,zip\nAnn,1\n", "match key"),
    ],
)
def test_a_file_without_a_usable_header_is_refused(runtime, clinic, write_csv, content, reason):
    _row, keys = clinic
    with pytest.raises(ValidationFailed) as caught:
        local.start_local_import(
            runtime, keys, write_csv(content), format="csv", mapping={}, match="email",
            actor=SYSTEM,
        )  # fmt: skip
    assert reason in caught.value.detail


def test_a_file_that_changed_under_a_job_fails_it(runtime, clinic, write_csv):
    _row, keys = clinic
    path = write_csv(HEADER + "ann@clinic.example,Ann,Lee,,,,,,,,\n")
    job_id = local.start_local_import(
        runtime, keys, path, format="csv", mapping={}, match="email", actor=SYSTEM
    )
    path.write_bytes(b"name,zip\nAnn,1\n")
    result = local.run_local_import(runtime, keys, job_id, path)
    with runtime.bound_session(keys) as session:
        job = service.get_job(session, keys.tenant_id, job_id)
    assert result.outcome == JobStatus.FAILED == job.status
    assert "match key" in job.failure


def test_a_mapping_naming_unknown_fields_is_refused_with_pointers(runtime, clinic, write_csv):
    _row, keys = clinic
    with pytest.raises(ValidationFailed) as caught:
        local.start_local_import(
            runtime,
            keys,
            write_csv(HEADER),
            format="csv",
            mapping={"columns": {"A": "nope", "B": "email", "C": "email"}, "date_format": "x"},
            match="email",
            actor=SYSTEM,
        )
    pointers = {error.field for error in caught.value.errors}
    assert pointers == {"mapping/columns/A", "mapping/columns/C", "mapping/date_format"}


def test_resuming_after_a_crash_imports_every_row_once(runtime, clinic, write_csv):
    rows = "".join(f"p{n}@clinic.example,First{n},Last,,MRN{n},,,,,,\n" for n in range(23))
    path = write_csv(HEADER + rows)
    _row, keys = clinic
    job_id = local.start_local_import(
        runtime, keys, path, format="csv", mapping={}, match="email", actor=SYSTEM
    )
    # "Crash" after two committed batches of five rows: the runner just stops.
    first = local.run_local_import(runtime, keys, job_id, path, max_batches=2, batch_rows=5)
    assert (first.outcome, first.rows) == ("yielded", 10)
    with runtime.bound_session(keys) as session:
        job = session.get(ImportJob, job_id)
        assert job.rows_read == 10 and 0 < job.progress_percent < 100
    # A third batch was in flight when the process died: it rolled back with it.
    local.resume_local_import(runtime, keys, job_id, path)
    second = local.run_local_import(runtime, keys, job_id, path, batch_rows=5)
    assert second.outcome == JobStatus.COMPLETED and second.rows == 13
    with runtime.bound_session(keys) as session:
        job = session.get(ImportJob, job_id)
        assert (job.rows_read, job.created, job.updated, job.errored) == (23, 23, 0, 0)
    assert contact_count(runtime, clinic) == 23


def test_job_creation_and_completion_are_audited_with_counts_only(runtime, clinic, write_csv):
    secret = phi_value("last")
    job, _, _ = run_file(
        runtime, clinic, write_csv(HEADER + f"amy@clinic.example,Amy,{secret},,,,,,,,\n")
    )
    with runtime.database.session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.object_id == str(job.id)).order_by(AuditEvent.seq)
        ).all()
        actions = [event.action for event in events]
        details = repr([event.details for event in events])
    assert actions == ["import.created", "import.completed"]
    assert "'created': 1" in details
    assert secret not in details and "amy@" not in details


@pytest.mark.parametrize("stop", ["cancel", "pause"])
def test_a_job_cancelled_or_paused_while_running_stops_before_its_next_batch(
    runtime, clinic, write_csv, stop
):
    rows = "".join(f"s{n}@clinic.example,First{n},Last,,,,,,,,\n" for n in range(20))
    path = write_csv(HEADER + rows)
    _row, keys = clinic
    job_id = local.start_local_import(
        runtime, keys, path, format="csv", mapping={}, match="email", actor=SYSTEM
    )

    def stop_after_first_batch(_progress) -> None:
        with runtime.bound_session(keys) as session:
            action = service.cancel_job if stop == "cancel" else service.pause_job
            action(session, keys.tenant_id, job_id, actor=SYSTEM)

    runner = local.JobRunner(
        runtime, keys, job_id, owner=local.LOCAL_OWNER, progress=stop_after_first_batch
    )
    runner.batch_rows = 5
    result = runner.run(path.open("rb"))
    assert result.outcome == ("cancelled" if stop == "cancel" else "paused")
    assert contact_count(runtime, clinic) == 5
    if stop == "pause":
        with runtime.bound_session(keys) as session:
            service.resume_job(session, keys.tenant_id, job_id, actor=SYSTEM)
        local.resume_local_import(runtime, keys, job_id, path)
        assert local.run_local_import(runtime, keys, job_id, path).outcome == "completed"
        assert contact_count(runtime, clinic) == 20
    else:
        with pytest.raises(Conflict):
            local.resume_local_import(runtime, keys, job_id, path)


class _ReadLog(io.FileIO):
    """A file that notes the offset of every read the buffered reader makes of it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self.read_starts: list[int] = []

    def readinto(self, buffer):  # type: ignore[no-untyped-def]
        self.read_starts.append(self.tell())
        return super().readinto(buffer)


def test_a_resumed_import_seeks_to_its_position_and_keeps_the_line_numbers(
    runtime, clinic, write_csv
):
    # Two records span two lines each (quoted newlines), so lines and records differ.
    rows = [f"r{n}@clinic.example,First{n},Last,,MRN{n},,,,,,\n" for n in range(400)]
    rows[10] = 'r10@clinic.example,"Two\nLines",Last,,,,,,,,\n'
    rows[350] = 'r350@clinic.example,"Two\nLines",Last,,,,,,,,\n'
    rows[380] = "r380@clinic.example,First,Last,not-a-date,,,,,,,\n"
    path = write_csv(HEADER + "".join(rows))
    _row, keys = clinic
    job_id = local.start_local_import(
        runtime, keys, path, format="csv", mapping={}, match="email", actor=SYSTEM
    )
    local.run_local_import(runtime, keys, job_id, path, max_batches=1, batch_rows=300)
    with runtime.bound_session(keys) as session:
        job = session.get(ImportJob, job_id)
        # The header, 300 records and the one extra line of record 10.
        assert (job.rows_read, job.position_line) == (300, 302)
        position = job.position
    assert position > io.DEFAULT_BUFFER_SIZE

    local.resume_local_import(runtime, keys, job_id, path)
    stream = _ReadLog(path)
    runner = local.JobRunner(runtime, keys, job_id, owner=local.LOCAL_OWNER)
    assert runner.run(io.BufferedReader(stream)).outcome == JobStatus.COMPLETED
    # The header's block, then straight from the position on: the prefix is not read.
    assert stream.read_starts[0] == 0
    assert all(start >= position for start in stream.read_starts[1:])
    with runtime.bound_session(keys) as session:
        job = session.get(ImportJob, job_id)
        errors = [(e.line, e.column) for e in service.iter_errors(session, keys.tenant_id, job_id)]
        assert (job.rows_read, job.errored, job.position_line) == (400, 3, 403)
    # (A name may not hold a newline.) Record 380 starts on line 1 (the header) +
    # 380 + 1 (record 10's second line) + 1 (record 350's) + 1.
    assert errors == [(12, "first_name"), (353, "first_name"), (384, "birth_date")]


def test_a_job_from_before_line_counts_were_kept_still_numbers_lines_right(
    runtime, clinic, write_csv
):
    rows = [f"o{n}@clinic.example,First{n},Last,,,,,,,,\n" for n in range(30)]
    rows[3] = 'o3@clinic.example,"Two\nLines",Last,,,,,,,,\n'
    rows[20] = "o20@clinic.example,First,Last,not-a-date,,,,,,,\n"
    path = write_csv(HEADER + "".join(rows))
    _row, keys = clinic
    job_id = local.start_local_import(
        runtime, keys, path, format="csv", mapping={}, match="email", actor=SYSTEM
    )
    local.run_local_import(runtime, keys, job_id, path, max_batches=1, batch_rows=10)
    with runtime.bound_session(keys) as session:
        session.get(ImportJob, job_id).position_line = 0  # what the migration leaves
    local.resume_local_import(runtime, keys, job_id, path)
    assert local.run_local_import(runtime, keys, job_id, path).outcome == JobStatus.COMPLETED
    with runtime.bound_session(keys) as session:
        errors = [(e.line, e.column) for e in service.iter_errors(session, keys.tenant_id, job_id)]
    assert errors == [(5, "first_name"), (23, "birth_date")]
