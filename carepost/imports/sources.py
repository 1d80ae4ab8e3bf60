"""What every import source yields: one record of the file, as an upsert item or its errors.

A source (CSV, FHIR NDJSON, FHIR Bundle) reads a file as a stream and yields one
:class:`SourceRow` per record, in file order, never holding the whole file in
memory. ``position`` is an opaque, increasing cursor just past the record (a
byte offset for line-based formats, an entry index for a Bundle): a job stores
the position of the last record it committed, and opening the source again at
that position resumes right after it, so a crash neither skips nor repeats a row.
The job also stores ``last_line``, the physical lines up to that position, so that
a resumed line-based source can seek straight to the position instead of reading
the file's beginning again to count its lines.

A record with errors is not imported, unless every error is ``left_out`` (an
element the source dropped from an otherwise good item): then the item is
imported and the errors are still reported.

Errors never quote the value at fault (it may be PHI): they name the line, the
column (CSV header, or FHIR element path such as ``Patient.birthDate``) and the
reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RowError:
    """Why a record (or one of its columns) could not be imported."""

    column: str  # CSV column name or FHIR element path; "" for the record as a whole
    reason: str  # never contains the value
    # False: the record is refused. True: only this element was left out of the item
    # (a FHIR Patient's unusable phone) and the rest of the record is imported.
    left_out: bool = False


@dataclass(frozen=True)
class SourceRow:
    """One record of an import file."""

    line: int  # 1-based line where the record starts (Bundle: the entry's 1-based index)
    position: int  # cursor just past this record; reopening the source there resumes after it
    # An item in the shape of an upsert body (carepost.contacts.prepare.prepare_contact),
    # or None when the record could not be read at all.
    item: dict[str, Any] | None
    errors: list[RowError] = field(default_factory=list)
    # The last physical line of the record (a CSV record may span several lines);
    # 0 when it is ``line`` itself.
    end_line: int = 0
    # The contact's email and phone are to be suppressed once it is imported (a
    # deceased patient: no message of any kind may reach their addresses).
    suppress_addresses: bool = False

    @property
    def last_line(self) -> int:
        """The physical lines of the file up to ``position`` (what a resume starts after)."""
        return self.end_line or self.line
