"""The CSV source: a streaming reader (RFC 4180, UTF-8) that can resume at a byte offset.

The file is read as bytes, one physical line at a time, and each line is decoded
on its own, so a line that is not UTF-8 is reported with its number instead of
failing the file, and the byte offset just past every record is known exactly:
Python's :mod:`csv` reader pulls lines from us only until the record it is
reading ends, quoted fields spanning several lines included. That offset is the
record's ``position``; reopening at it resumes right after the record.

A header row is required (it names the columns the mapping refers to), so a
resumed read parses the header again, then moves to the position: it seeks there
when the stream can seek and the job knows the line count at that position
(``start_line``, stored with it), and otherwise reads up to it, counting
newlines for the line numbers of the errors. Nothing but the current record is
held in memory; a line longer than :data:`MAX_LINE_BYTES` is refused.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from carepost.core.errors import ValidationFailed
from carepost.imports.mapping import RowMapper
from carepost.imports.sources import RowError, SourceRow

BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
MAX_LINE_BYTES = 1024 * 1024
SKIP_BLOCK = 1024 * 1024
BAD_ENCODING = "this line is not valid UTF-8: save the file as UTF-8"
TOO_LONG = f"this line is longer than {MAX_LINE_BYTES} bytes"

csv.field_size_limit(MAX_LINE_BYTES)


class ImportFileError(ValidationFailed):
    """The file as a whole cannot be imported (no header, not UTF-8 at all, a mapping
    that does not fit its header). Never quotes the file's content."""


@dataclass(frozen=True)
class CsvRecord:
    line: int  # 1-based physical line where the record starts
    position: int  # byte offset just past the record
    cells: list[str]
    error: str = ""  # set when the record could not be read (encoding, length, quoting)
    end_line: int = 0  # the record's last physical line


class CsvReader:
    """Reads records after the header from ``start`` (0, or a position it returned);
    ``start_line``: the physical lines up to ``start``, when known (0: unknown)."""

    def __init__(self, stream: BinaryIO, *, start: int = 0, start_line: int = 0) -> None:
        self._stream = stream
        self._offset = 0
        self._line = 0
        self._line_error = ""
        self._reader = csv.reader(self._lines())
        self.header = self._read_header()
        if start > self._offset:
            if start_line and stream.seekable():
                stream.seek(start)
                self._offset, self._line = start, start_line
            else:
                self._skip_to(start)

    def _read_line(self) -> bytes:
        raw = self._stream.readline(MAX_LINE_BYTES + 1)
        self._offset += len(raw)
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            self._line_error = TOO_LONG
            while raw and not raw.endswith(b"\n"):
                raw = self._stream.readline(SKIP_BLOCK)
                self._offset += len(raw)
            return b"\n"
        return raw

    def _lines(self) -> Iterator[str]:
        while True:
            raw = self._read_line()
            if not raw:
                return
            if self._line == 0:
                if raw.startswith(UTF16_BOMS):
                    raise ImportFileError("the file is UTF-16: save it as UTF-8", field="file")
                if raw.startswith(BOM):
                    raw = raw[len(BOM) :]
            self._line += 1
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self._line_error = self._line_error or BAD_ENCODING
                yield raw.decode("utf-8", "replace")

    def _read_header(self) -> list[str]:
        for record in self._records():
            if record.error:
                raise ImportFileError(
                    "the header row (line 1) cannot be read: "
                    + (record.error if record.error != BAD_ENCODING else "it is not UTF-8"),
                    field="file",
                )
            header = [name.strip() for name in record.cells]
            if not any(header):
                break
            return header
        raise ImportFileError("the file has no header row naming its columns", field="file")

    def _skip_to(self, start: int) -> None:
        """Move to a position read before, counting the lines passed."""
        while self._offset < start:
            block = self._stream.read(min(SKIP_BLOCK, start - self._offset))
            if not block:
                raise ImportFileError(
                    "the file is shorter than the position to resume from: "
                    "it is not the file this job started with",
                    field="file",
                )
            self._offset += len(block)
            self._line += block.count(b"\n")

    def _records(self) -> Iterator[CsvRecord]:
        while True:
            first_line = self._line + 1
            self._line_error = ""
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error:
                yield CsvRecord(
                    first_line, self._offset, [], "the CSV quoting is broken here", self._line
                )
                continue
            if not cells and not self._line_error:
                continue  # a blank line
            yield CsvRecord(first_line, self._offset, cells, self._line_error, self._line)

    def __iter__(self) -> Iterator[CsvRecord]:
        return self._records()


def csv_rows(reader: CsvReader, mapper: RowMapper) -> Iterator[SourceRow]:
    """Each record as an upsert item, or with its errors (line, column, reason)."""
    width = len(reader.header)
    for record in reader:
        line, position, end = record.line, record.position, record.end_line
        if record.error:
            yield SourceRow(line, position, None, [RowError("", record.error)], end)
            continue
        if len(record.cells) != width:
            reason = f"this row has {len(record.cells)} columns; the header has {width}"
            yield SourceRow(line, position, None, [RowError("", reason)], end)
            continue
        # A row with errors is not imported; its item still goes along so that the
        # runner can report the other columns' problems at once.
        item, errors = mapper.item(record.cells)
        yield SourceRow(line, position, item, errors, end)
