"""The built-in DLP detectors: a pattern finds candidates, a validator keeps the ones
that could be real (:mod:`carepost.dlp.validators`), and nearby words raise or lower
the confidence.

A detector is a :class:`Detector`: a name, a severity, whether what it finds is PHI,
and a ``find`` function from text to :class:`RawMatch` (offsets, confidence and the
normalized value to fingerprint). Adding one is adding one to :data:`BUILTIN`.
Tenant detectors (MRN patterns, keyword dictionaries) are in
:mod:`carepost.dlp.tenant_rules`.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date

import phonenumbers

from carepost.dlp.findings import Severity
from carepost.dlp.validators import card_brand, dea_valid, mbi_valid, npi_valid, ssn_valid


@dataclass(frozen=True)
class RawMatch:
    start: int
    end: int
    confidence: float
    normalized: str


@dataclass(frozen=True)
class Detector:
    name: str
    severity: Severity
    phi: bool
    find: Callable[[str], Iterator[RawMatch]]
    description: str = ""


# How far before a match a context word counts (characters).
CONTEXT_WINDOW = 48


def _context(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _has_context(text: str, start: int, words: re.Pattern[str]) -> bool:
    return words.search(text, max(0, start - CONTEXT_WINDOW), start) is not None


# --- US Social Security numbers --------------------------------------------------------

_SSN = re.compile(r"(?<![\w-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w-])")
_SSN_WORDS = _context(r"\b(ssn|ss#|ss\s*no|social\s+security|soc\.?\s*sec)")


def find_ssn(text: str) -> Iterator[RawMatch]:
    for match in _SSN.finditer(text):
        digits = match.group(1) + match.group(3) + match.group(4)
        if not ssn_valid(digits):
            continue
        context = _has_context(text, match.start(), _SSN_WORDS)
        # Nine bare digits are a lot of things; written 123-45-6789 they are an SSN.
        confidence = (0.95 if context else 0.8) if match.group(2) else (0.9 if context else 0.35)
        yield RawMatch(match.start(), match.end(), confidence, digits)


# --- Medicare Beneficiary Identifiers ----------------------------------------------------

_MBI = re.compile(
    r"(?<![A-Za-z0-9-])([1-9][A-Z][A-Z0-9][0-9])(-?)([A-Z][A-Z0-9][0-9])\2([A-Z]{2}[0-9]{2})"
    r"(?![A-Za-z0-9-])"
)
_MBI_WORDS = _context(r"\b(mbi|medicare|beneficiary)")


def find_mbi(text: str) -> Iterator[RawMatch]:
    for match in _MBI.finditer(text):
        chars = match.group(1) + match.group(3) + match.group(4)
        if not mbi_valid(chars):
            continue
        confidence = 0.95 if _has_context(text, match.start(), _MBI_WORDS) else 0.85
        yield RawMatch(match.start(), match.end(), confidence, chars)


# --- National Provider Identifiers -------------------------------------------------------

_NPI = re.compile(r"(?<![\w-])[12]\d{9}(?![\w-])")
_NPI_WORDS = _context(r"\b(npi|provider\s+(id|identifier|number))")


def find_npi(text: str) -> Iterator[RawMatch]:
    for match in _NPI.finditer(text):
        digits = match.group(0)
        if not npi_valid(digits):
            continue
        # One ten-digit number in ten passes the check by chance: context matters.
        confidence = 0.95 if _has_context(text, match.start(), _NPI_WORDS) else 0.4
        yield RawMatch(match.start(), match.end(), confidence, digits)


# --- DEA registration numbers ------------------------------------------------------------

_DEA = re.compile(r"(?<![\w-])([A-Z][A-Z9])[- ]?(\d{7})(?![\w-])")
_DEA_WORDS = _context(r"\b(dea)\b")


def find_dea(text: str) -> Iterator[RawMatch]:
    for match in _DEA.finditer(text):
        chars = match.group(1) + match.group(2)
        if not dea_valid(chars):
            continue
        confidence = 0.95 if _has_context(text, match.start(), _DEA_WORDS) else 0.75
        yield RawMatch(match.start(), match.end(), confidence, chars)


# --- Payment cards -----------------------------------------------------------------------

_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])")


def find_credit_card(text: str) -> Iterator[RawMatch]:
    for match in _CARD.finditer(text):
        raw = match.group(0)
        digits = raw.replace(" ", "").replace("-", "")
        separators = {char for char in raw if char in " -"}
        if len(separators) > 1:  # "1234 5678-9012 3456" is not how cards are written
            continue
        if card_brand(digits) is None:
            continue
        yield RawMatch(match.start(), match.end(), 0.9, digits)


# --- ICD-10-CM diagnosis codes -----------------------------------------------------------
# Format and chapter validation (docs/dlp.md says why not a bundled code list): a
# category is a letter, a digit and a digit or letter; subcategories follow a dot, up to
# four characters, the seventh character may be a letter. U is reserved by WHO for
# special purposes and in CM holds only U07 (emergency codes, U07.0 and U07.1).

_ICD10_DOTTED = re.compile(r"(?<![\w.])([A-TV-Z][0-9][0-9A-Z]|U07)\.([0-9A-Z]{1,4})(?![\w.])")
_ICD10_BARE = re.compile(r"(?<![\w.])([A-TV-Z][0-9][0-9A-Z])([0-9A-Z]{0,4})(?![\w.])")
_ICD10_WORDS = _context(r"\b(icd(-?10)?(-?cm)?|diagnos[ie]s|dx|diag\.?)\b")
# Chapter ranges of ICD-10-CM (FY2024 tabular list), as (first, last) categories.
ICD10_CM_CHAPTERS: tuple[tuple[str, str], ...] = (
    ("A00", "B99"), ("C00", "D49"), ("D50", "D89"), ("E00", "E89"), ("F01", "F99"),
    ("G00", "G99"), ("H00", "H59"), ("H60", "H95"), ("I00", "I99"), ("J00", "J99"),
    ("K00", "K95"), ("L00", "L99"), ("M00", "M99"), ("N00", "N99"), ("O00", "O9A"),
    ("P00", "P96"), ("Q00", "Q99"), ("R00", "R99"), ("S00", "T88"), ("U00", "U85"),
    ("V00", "Y99"), ("Z00", "Z99"),
)  # fmt: skip


def icd10_category_valid(category: str) -> bool:
    """A three-character category inside a chapter of ICD-10-CM. The third character
    is a digit except in the few letter categories CM defines (C4A, C7A-C7B, D3A, M1A,
    O9A, Z3A)."""
    if len(category) != 3:
        return False
    if category[2].isalpha() and category not in {"C4A", "C7A", "C7B", "D3A", "M1A", "O9A", "Z3A"}:
        return False
    return any(first <= category <= last for first, last in ICD10_CM_CHAPTERS)


def _icd10_subcode_valid(sub: str) -> bool:
    # Subcategory characters 4-6 are digits, except the placeholder X; the 7th
    # (extension) may be a letter.
    head, tail = sub[:3], sub[3:]
    return all(char.isdigit() or char == "X" for char in head) and (not tail or tail.isalnum())


def find_icd10(text: str) -> Iterator[RawMatch]:
    seen: set[int] = set()
    for match in _ICD10_DOTTED.finditer(text):
        category, sub = match.group(1), match.group(2)
        if not icd10_category_valid(category) or not _icd10_subcode_valid(sub):
            continue
        seen.add(match.start())
        confidence = 0.9 if _has_context(text, match.start(), _ICD10_WORDS) else 0.6
        yield RawMatch(match.start(), match.end(), confidence, category + sub)
    # Without the dot, "B12" or "A320" look like too many other things: only after a
    # diagnosis word.
    for match in _ICD10_BARE.finditer(text):
        if match.start() in seen or not _has_context(text, match.start(), _ICD10_WORDS):
            continue
        category, sub = match.group(1), match.group(2)
        if not icd10_category_valid(category) or (sub and not _icd10_subcode_valid(sub)):
            continue
        yield RawMatch(match.start(), match.end(), 0.7, category + sub)


# --- Dates of birth ----------------------------------------------------------------------

# The number of words between a birth keyword and the date that still ties them.
DOB_TOKEN_WINDOW = 6
_BIRTH_WORDS = re.compile(
    r"\b(d\.?\s?o\.?\s?b\.?|date\s+of\s+birth|birth\s*date|birthday|born)(?![\w])", re.IGNORECASE
)
_MONTHS = {
    name.lower(): number
    for number in range(1, 13)
    for name in (calendar.month_name[number], calendar.month_abbr[number])
}
_MONTHS["sept"] = 9
_MONTH_NAMES = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DATE = re.compile(
    r"(?<![\w/.-])(?:"
    r"(?P<m>\d{1,2})[/.-](?P<d>\d{1,2})[/.-](?P<y>\d{4}|\d{2})"
    r"|(?P<iy>\d{4})-(?P<im>\d{1,2})-(?P<id>\d{1,2})"
    rf"|(?P<tm>{_MONTH_NAMES})\.?\s+(?P<td>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<ty>\d{{4}})"
    rf"|(?P<ed>\d{{1,2}})(?:st|nd|rd|th)?\s+(?P<em>{_MONTH_NAMES})\.?,?\s+(?P<ey>\d{{4}})"
    r")(?![\w/-])",
    re.IGNORECASE,
)
_TOKEN = re.compile(r"\S+")


def _parse_date(match: re.Match[str], today: date) -> date | None:
    groups = match.groupdict()
    try:
        if groups["y"]:
            year = int(groups["y"])
            if len(groups["y"]) == 2:  # a birth year: the last century when in the future
                year += 2000 if 2000 + year <= today.year else 1900
            return date(year, int(groups["m"]), int(groups["d"]))
        if groups["iy"]:
            return date(int(groups["iy"]), int(groups["im"]), int(groups["id"]))
        if groups["tm"]:
            return date(int(groups["ty"]), _MONTHS[groups["tm"].lower()], int(groups["td"]))
        return date(int(groups["ey"]), _MONTHS[groups["em"].lower()], int(groups["ed"]))
    except ValueError:  # 02/30/1980 is no date
        return None


def find_date_of_birth(text: str, *, today: date | None = None) -> Iterator[RawMatch]:
    today = today or date.today()
    for keyword in _BIRTH_WORDS.finditer(text):
        # The date must start within DOB_TOKEN_WINDOW words after the keyword.
        horizon = keyword.end()
        for count, token in enumerate(_TOKEN.finditer(text, keyword.end())):
            horizon = token.end()
            if count >= DOB_TOKEN_WINDOW:
                break
        # Room for a written-out date that starts inside the window.
        for match in _DATE.finditer(text, keyword.end(), min(len(text), horizon + 24)):
            if match.start() > horizon:
                break
            born = _parse_date(match, today)
            if born is None or not date(1900, 1, 1) <= born <= today:
                continue
            yield RawMatch(match.start(), match.end(), 0.9, born.isoformat())
            break


# --- US phone numbers --------------------------------------------------------------------


def find_us_phone(text: str) -> Iterator[RawMatch]:
    matcher = phonenumbers.PhoneNumberMatcher(text, "US", leniency=phonenumbers.Leniency.VALID)
    for found in matcher:
        number = found.number
        if number.country_code != 1:
            continue
        region = phonenumbers.region_code_for_number(number)
        if region != "US":
            continue
        normalized = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        yield RawMatch(found.start, found.end, 0.6, normalized)


# --- US street addresses (heuristic) -----------------------------------------------------

_SUFFIXES = (
    "street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|"
    "terrace|ter|parkway|pkwy|circle|cir|highway|hwy|square|sq|trail|trl|loop|alley|plaza"
)
_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|"
    "NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI"
)
_ADDRESS = re.compile(
    r"(?<![\w-])(?P<number>\d{1,6}[A-Z]?)\s+"
    r"(?:(?:[NSEW]|North|South|East|West)\.?\s+)?"
    r"(?P<name>(?:[A-Z0-9][\w'-]*\s+){1,4}?)"
    rf"(?P<suffix>(?i:{_SUFFIXES}))\.?(?![\w])"
    r"(?:\s+(?:[NS][EW]|[NSEW])\.?(?![\w]))?"
    r"(?P<unit>,?\s+(?:(?i:apt|apartment|suite|ste|unit)\.?|#)\s*[\w-]+)?"
    r"(?P<city>,?\s+(?:[A-Z][\w'-]*\s+){0,3}?[A-Z][\w'-]*,?\s+"
    rf"(?P<state>{_STATES})\s+(?P<zip>\d{{5}}(?:-\d{{4}})?))?"
)
_PO_BOX = re.compile(r"\b(?i:p\.?\s?o\.?\s+box|post\s+office\s+box)\s+\d{1,6}\b")


def find_us_address(text: str) -> Iterator[RawMatch]:
    for match in _ADDRESS.finditer(text):
        confidence = 0.85 if match.group("zip") else 0.55
        normalized = " ".join(match.group(0).lower().replace(",", " ").split())
        yield RawMatch(match.start(), match.end(), confidence, normalized)
    for match in _PO_BOX.finditer(text):
        normalized = " ".join(match.group(0).lower().replace(".", "").split())
        yield RawMatch(match.start(), match.end(), 0.5, normalized)


BUILTIN: tuple[Detector, ...] = (
    Detector("ssn", Severity.CRITICAL, True, find_ssn, "US Social Security number"),
    Detector("mbi", Severity.CRITICAL, True, find_mbi, "Medicare Beneficiary Identifier"),
    Detector("credit_card", Severity.CRITICAL, False, find_credit_card, "Payment card number"),
    Detector("dea", Severity.HIGH, False, find_dea, "DEA registration number"),
    Detector("npi", Severity.LOW, False, find_npi, "National Provider Identifier"),
    Detector("icd10", Severity.HIGH, True, find_icd10, "ICD-10-CM diagnosis code"),
    Detector("date_of_birth", Severity.HIGH, True, find_date_of_birth, "Date of birth"),
    Detector("us_phone", Severity.MEDIUM, True, find_us_phone, "US phone number"),
    Detector("us_address", Severity.MEDIUM, True, find_us_address, "US street address"),
)
BUILTIN_NAMES = frozenset(detector.name for detector in BUILTIN)
# Names the tenant rules use (one per rule kind); see carepost.dlp.tenant_rules.
TENANT_DETECTORS = frozenset({"mrn", "keyword"})
ALL_DETECTORS = BUILTIN_NAMES | TENANT_DETECTORS
