"""The text of each part of a message, for the detectors, within bounds.

A message is its subject, its text body, its HTML body (converted to text the way
the plain-text alternative is, :func:`carepost.templates.plaintext.html_to_text`)
and its attachments: ``text/*`` and HTML as text, PDF through ``pypdf`` page by
page, DOCX through ``python-docx`` after the ZIP container is checked. Every step
is bounded: attachment bytes, ZIP members and their declared sizes and compression
ratio (a "zip bomb" DOCX is refused before anything is inflated; ``zipfile`` never
inflates past a member's declared size), PDF pages, characters of text, and a
deadline for the whole message. A part that cannot be read whole is reported as
skipped, so the scan says it is incomplete rather than pretending it found nothing.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from carepost.dlp.findings import Part, SkippedPart, SkipReason
from carepost.templates.plaintext import html_to_text

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class MessageContent:
    """What a scan reads; bodies and attachments are held only for the scan."""

    subject: str = ""
    text: str | None = field(default=None, repr=False)
    html: str | None = field(default=None, repr=False)
    attachments: Sequence[Attachment] = ()


@dataclass(frozen=True)
class ScanLimits:
    max_seconds: float = 10.0
    max_part_chars: int = 2_000_000
    max_attachments: int = 50
    max_attachment_bytes: int = 25 * 1024 * 1024
    max_pdf_pages: int = 500
    max_zip_members: int = 2_000
    max_zip_uncompressed_bytes: int = 50 * 1024 * 1024
    max_zip_ratio: int = 100


@dataclass(frozen=True)
class PartText:
    part: Part
    text: str
    attachment_index: int | None = None
    attachment_name: str | None = None


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at


class _Skip(Exception):
    def __init__(self, reason: SkipReason) -> None:
        super().__init__(reason)
        self.reason = reason


def _bounded(text: str, limits: ScanLimits) -> str:
    if len(text) > limits.max_part_chars:
        raise _Skip("too_large")
    return text


def _kind(attachment: Attachment) -> str:
    content_type = attachment.content_type.split(";", 1)[0].strip().lower()
    name = attachment.name.lower()
    if content_type == "text/html" or name.endswith((".html", ".htm")):
        return "html"
    if content_type.startswith("text/") or name.endswith((".txt", ".csv", ".tsv")):
        return "text"
    if content_type == "application/pdf" or name.endswith(".pdf"):
        return "pdf"
    if content_type == DOCX_TYPE or name.endswith(".docx"):
        return "docx"
    return "other"


def _decode(data: bytes, content_type: str) -> str:
    charset = "utf-8"
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        return data.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return data.decode("utf-8", errors="replace")


def pdf_text(data: bytes, limits: ScanLimits, deadline: Deadline) -> str:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        raise _Skip("unreadable")
    if len(reader.pages) > limits.max_pdf_pages:
        raise _Skip("too_large")
    chunks: list[str] = []
    size = 0
    for page in reader.pages:
        if deadline.passed:
            raise _Skip("time_limit")
        chunk = page.extract_text() or ""
        size += len(chunk) + 1
        if size > limits.max_part_chars:
            raise _Skip("too_large")
        chunks.append(chunk)
    return "\n".join(chunks)


def check_zip(data: bytes, limits: ScanLimits) -> None:
    """Refuse a ZIP container (DOCX) that would inflate beyond the limits."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError):
        raise _Skip("unreadable") from None
    if len(members) > limits.max_zip_members:
        raise _Skip("too_large")
    total = 0
    for member in members:
        total += member.file_size
        if member.file_size > limits.max_zip_ratio * max(member.compress_size, 1024):
            raise _Skip("too_large")
    if total > limits.max_zip_uncompressed_bytes:
        raise _Skip("too_large")


def docx_text(data: bytes, limits: ScanLimits, deadline: Deadline) -> str:
    check_zip(data, limits)
    import docx

    document = docx.Document(io.BytesIO(data))
    chunks: list[str] = []
    size = 0

    def add(text: str) -> None:
        nonlocal size
        size += len(text) + 1
        if size > limits.max_part_chars:
            raise _Skip("too_large")
        chunks.append(text)

    for paragraph in document.paragraphs:
        add(paragraph.text)
    for table in document.tables:
        if deadline.passed:
            raise _Skip("time_limit")
        for row in table.rows:
            add("\t".join(cell.text for cell in row.cells))
    for section in document.sections:
        for paragraph in (*section.header.paragraphs, *section.footer.paragraphs):
            add(paragraph.text)
    return "\n".join(chunks)


def attachment_text(attachment: Attachment, limits: ScanLimits, deadline: Deadline) -> str:
    if len(attachment.data) > limits.max_attachment_bytes:
        raise _Skip("too_large")
    kind = _kind(attachment)
    if kind == "html":
        return _bounded(html_to_text(_decode(attachment.data, attachment.content_type)), limits)
    if kind == "text":
        return _bounded(_decode(attachment.data, attachment.content_type), limits)
    try:
        if kind == "pdf":
            return pdf_text(attachment.data, limits, deadline)
        if kind == "docx":
            return docx_text(attachment.data, limits, deadline)
    except _Skip:
        raise
    except Exception:  # noqa: BLE001 - untrusted documents fail their parsers in any way
        raise _Skip("unreadable") from None
    raise _Skip("unsupported_type")


def message_parts(
    message: MessageContent, limits: ScanLimits, deadline: Deadline, skipped: list[SkippedPart]
) -> Iterator[PartText]:
    """The text of each part, in order; what cannot be read is added to ``skipped``."""
    bodies: list[tuple[Part, str | None]] = [
        ("subject", message.subject),
        ("text", message.text),
        ("html", message.html),
    ]
    for part, body in bodies:
        if not body:
            continue
        if deadline.passed:
            skipped.append(SkippedPart(part, "time_limit"))
            continue
        if len(body) > limits.max_part_chars:
            skipped.append(SkippedPart(part, "too_large"))
            continue
        text = html_to_text(body) if part == "html" else body
        yield PartText(part, text)
    for index, attachment in enumerate(message.attachments):
        if index >= limits.max_attachments:
            skipped.append(SkippedPart("attachment", "too_large", index))
            continue
        if attachment.name:
            yield PartText("attachment_name", attachment.name[:1000], index, attachment.name)
        if deadline.passed:
            skipped.append(SkippedPart("attachment", "time_limit", index))
            continue
        try:
            text = attachment_text(attachment, limits, deadline)
        except _Skip as skip:
            skipped.append(SkippedPart("attachment", skip.reason, index))
            continue
        yield PartText("attachment", text, index, attachment.name)
