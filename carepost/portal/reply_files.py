"""Files a recipient sends with a portal reply: limits, an allow-list of types judged
by the bytes (not by what the browser claims), and file names made safe.

Kept sealed on the reply (``portal_replies.attachments``, the tenant's data key, like
the message content); their names, types and sizes apart (``attachment_meta``, sealed
too: a name may be PHI) so that listing them never opens the files.
"""

from __future__ import annotations

import base64
import io
import re
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from carepost.core.errors import FieldError, ValidationFailed
from carepost.dlp.extraction import DOCX_TYPE

MAX_FILES = 5
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_TOTAL_BYTES = 8 * 1024 * 1024  # under the server's 10 MiB request limit
MAX_NAME = 120
FIELD = "files"
# type → the extensions it may carry
ALLOWED: dict[str, tuple[str, ...]] = {
    "application/pdf": (".pdf",),
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "text/plain": (".txt",),
    DOCX_TYPE: (".docx",),
}
ALLOWED_HINT = "PDF, PNG, JPEG, plain text (.txt) or Word (.docx)"
_UNSAFE = re.compile(r"[^\w .()+-]")
_RUNS = re.compile(r"[ _]{2,}")


@dataclass(frozen=True)
class Upload:
    """One file as received (the name as the browser sent it)."""

    filename: str
    data: bytes = field(repr=False)


def safe_filename(name: str) -> str:
    """The last path component, NFC, without control or shell/HTML-special characters,
    at most ``MAX_NAME`` characters with the extension kept."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = _RUNS.sub("_", _UNSAFE.sub("_", name)).strip(" ._")
    stem, dot, ext = name.rpartition(".")
    if dot and len(ext) <= 10:
        name = f"{stem[: MAX_NAME - len(ext) - 1]}.{ext}" if stem else f"attachment.{ext}"
    return name[:MAX_NAME] or "attachment"


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return False


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def sniff(data: bytes, filename: str) -> str | None:
    """The allowed type the bytes are, if the name's extension agrees; else None."""
    ext = "." + filename.rpartition(".")[2].lower() if "." in filename else ""
    if data.startswith(b"%PDF-"):
        found: str | None = "application/pdf"
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        found = "image/png"
    elif data.startswith(b"\xff\xd8\xff"):
        found = "image/jpeg"
    elif data.startswith(b"PK\x03\x04") and _is_docx(data):
        found = DOCX_TYPE
    elif ext == ".txt" and _is_text(data):
        found = "text/plain"
    else:
        found = None
    if found is None or ext not in ALLOWED[found]:
        return None
    return found


def check(uploads: Sequence[Upload]) -> list[dict[str, Any]]:
    """The files to store, ``[{"filename", "content_type", "content" (base64)}]``;
    refuses with the field ``files`` (never a file's name or content in the message)."""
    uploads = [u for u in uploads if u.filename or u.data]  # an empty file input
    errors: list[FieldError] = []
    if len(uploads) > MAX_FILES:
        errors.append(FieldError(FIELD, f"attach at most {MAX_FILES} files"))
    total = 0
    kept: list[dict[str, Any]] = []
    for number, upload in enumerate(uploads[:MAX_FILES], start=1):
        name = safe_filename(upload.filename)
        total += len(upload.data)
        if not upload.data:
            errors.append(FieldError(FIELD, f"file {number} is empty"))
        elif len(upload.data) > MAX_FILE_BYTES:
            errors.append(FieldError(FIELD, f"file {number} is larger than 4 MB"))
        else:
            content_type = sniff(upload.data, name)
            if content_type is None:
                errors.append(FieldError(FIELD, f"file {number} is not a {ALLOWED_HINT} file"))
            else:
                kept.append(
                    {
                        "filename": name,
                        "content_type": content_type,
                        "content": base64.b64encode(upload.data).decode("ascii"),
                    }
                )
    if total > MAX_TOTAL_BYTES:
        errors.append(FieldError(FIELD, "the files together are larger than 8 MB"))
    if errors:
        raise ValidationFailed(errors[0].message, errors=errors)
    return kept


def meta(files: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Names, types and sizes, without the content."""
    return [
        {
            "filename": f["filename"],
            "content_type": f["content_type"],
            "size": len(base64.b64decode(f["content"])),
        }
        for f in files
    ]


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII name and the UTF-8 one (RFC 6266 / RFC 8187)."""
    name = safe_filename(name)
    plain = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"
