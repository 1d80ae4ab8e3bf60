"""The error report of a job as CSV, safe to open in a spreadsheet.

A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
read as a formula by Excel, LibreOffice and Google Sheets (CSV injection, OWASP):
such cells are prefixed with an apostrophe. Column names come from the uploaded
file's header, so they are neutralized too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from carepost.imports.models import ImportRowError

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HEADER = ("line", "column", "reason")


def neutralize(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def error_report_lines(errors: Iterable[ImportRowError]) -> Iterator[str]:
    """The report, one CSV line at a time (for a streamed download)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def take() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(HEADER)
    yield take()
    for error in errors:
        writer.writerow((error.line, neutralize(error.column), neutralize(error.reason)))
        yield take()
