"""Samples for the DLP tests: tenant keys without a database, valid identifiers made
fresh (and registered as PHI canaries), and documents built here (PDF, DOCX)."""

from __future__ import annotations

import io
import os
import random
import uuid

from carepost.crypto.keyring import TenantKeys
from carepost.dlp.validators import ssn_valid
from tests.canaries import PHI_CANARIES


def tenant_keys() -> TenantKeys:
    return TenantKeys(uuid.uuid4(), {1: os.urandom(32)}, 1, os.urandom(32))


def fresh_ssn(rng: random.Random | None = None) -> str:
    """A valid SSN written 123-45-6789, registered as a PHI canary."""
    rng = rng or random.Random()
    while True:
        digits = f"{rng.randint(1, 899):03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
        if ssn_valid(digits):
            value = f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"
            PHI_CANARIES.add(value)
            return value


def luhn_complete(prefix: str, length: int, rng: random.Random | None = None) -> str:
    """A number of ``length`` digits starting with ``prefix`` with a valid Luhn digit."""
    rng = rng or random.Random()
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        candidate = body + check
        total = 0
        for position, char in enumerate(reversed(candidate)):
            value = int(char) * (2 if position % 2 else 1)
            total += value - 9 if value > 9 else value
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def pdf_with_text(*lines: str) -> bytes:
    """A one-page PDF whose page shows ``lines`` (Helvetica), built by hand."""
    escaped = [line.replace("(", "\\(").replace(")", "\\)") for line in lines]
    text_ops = " ".join(f"({line}) Tj 0 -16 Td" for line in escaped)
    stream = f"BT /F1 12 Tf 72 720 Td {text_ops} ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def docx_with_text(*paragraphs: str, table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
