"""Check digits and issuing rules of the identifiers the DLP detectors look for.

Pure functions over a string of the identifier's characters (separators removed):
the detectors find candidates with a pattern, these say whether a candidate could
be a real, issued identifier. Sources: SSA's SSN randomization rules (2011), CMS's
Medicare Beneficiary Identifier format specification, CMS's NPI check digit
(ISO/IEC 7812 Luhn over the ``80840`` card-issuer prefix), the DEA registration
number check digit, and the card networks' published IIN ranges.
"""

from __future__ import annotations

from collections.abc import Iterable

# SSNs that were published or used in advertising and so never identify a person.
KNOWN_INVALID_SSNS = frozenset(
    {
        "078051120",  # the Woolworth wallet card
        "219099999",  # an SSA pamphlet
        "123456789",
        "111111111",
        "333333333",
    }
)


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of ISO/IEC 7812, over a string of digits."""
    if not digits.isdigit() or not digits.isascii():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def ssn_valid(digits: str) -> bool:
    """A US Social Security number the SSA could have issued.

    Area (first three) is never 000, 666 or 900-999; group (next two) never 00;
    serial (last four) never 0000; and a few numbers made public are excluded.
    """
    if len(digits) != 9 or not digits.isdigit() or not digits.isascii():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9":
        return False
    if group == "00" or serial == "0000":
        return False
    return digits not in KNOWN_INVALID_SSNS


# MBI letters: A-Z without S, L, O, I, B, Z (they read like digits).
MBI_LETTERS = frozenset("ACDEFGHJKMNPQRTUVWXY")
MBI_DIGITS = frozenset("0123456789")
_MBI_ALNUM = MBI_LETTERS | MBI_DIGITS
# CMS's position rules: C = 1-9, A = letter, AN = letter or digit, N = 0-9.
_MBI_POSITIONS: tuple[frozenset[str], ...] = (
    frozenset("123456789"),
    MBI_LETTERS,
    _MBI_ALNUM,
    MBI_DIGITS,
    MBI_LETTERS,
    _MBI_ALNUM,
    MBI_DIGITS,
    MBI_LETTERS,
    MBI_LETTERS,
    MBI_DIGITS,
    MBI_DIGITS,
)


def mbi_valid(chars: str) -> bool:
    """A Medicare Beneficiary Identifier: 11 characters by CMS's position rules."""
    if len(chars) != 11:
        return False
    return all(char in allowed for char, allowed in zip(chars, _MBI_POSITIONS, strict=True))


def npi_valid(digits: str) -> bool:
    """A National Provider Identifier: 10 digits starting 1 or 2 whose last digit is
    the Luhn check digit of the number prefixed with ``80840`` (the health-industry
    issuer prefix)."""
    if len(digits) != 10 or not digits.isdigit() or not digits.isascii():
        return False
    if digits[0] not in "12":
        return False
    return luhn_valid("80840" + digits)


# First letter of a DEA number: the registrant type (A/B/F/G practitioners, M mid-level
# practitioners, P/R distributors, X the former DATA-waiver prefix, the rest
# manufacturers, pharmacies, researchers, importers and exporters).
DEA_REGISTRANT_LETTERS = frozenset("ABCDEFGHJKLMPRSTUX")


def dea_valid(chars: str) -> bool:
    """A DEA registration number: a registrant-type letter, the first letter of the
    registrant's surname or business (or ``9`` for some business names), seven digits
    whose last is the check digit: (d1 + d3 + d5) + 2 * (d2 + d4 + d6), mod 10."""
    if len(chars) != 9:
        return False
    kind, name, digits = chars[0], chars[1], chars[2:]
    if kind not in DEA_REGISTRANT_LETTERS:
        return False
    if not (name.isascii() and ((name.isalpha() and name.isupper()) or name == "9")):
        return False
    if not digits.isdigit() or not digits.isascii():
        return False
    values = [int(char) for char in digits]
    total = values[0] + values[2] + values[4] + 2 * (values[1] + values[3] + values[5])
    return total % 10 == values[6]


def _ranges(*spans: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    return spans


# (brand, IIN prefix ranges as inclusive integer spans of the same width, lengths).
CARD_BRANDS: tuple[tuple[str, tuple[tuple[int, int], ...], frozenset[int]], ...] = (
    ("visa", _ranges((4, 4)), frozenset({13, 16, 19})),
    ("mastercard", _ranges((51, 55), (2221, 2720)), frozenset({16})),
    ("amex", _ranges((34, 34), (37, 37)), frozenset({15})),
    (
        "discover",
        _ranges((6011, 6011), (644, 649), (65, 65), (622126, 622925)),
        frozenset(range(16, 20)),
    ),
    ("jcb", _ranges((3528, 3589)), frozenset(range(16, 20))),
    ("diners", _ranges((300, 305), (36, 36), (38, 39)), frozenset(range(14, 20))),
    ("unionpay", _ranges((62, 62)), frozenset(range(16, 20))),
    ("maestro", _ranges((50, 50), (56, 69)), frozenset(range(12, 20))),
)


def _in_ranges(digits: str, spans: Iterable[tuple[int, int]]) -> bool:
    for low, high in spans:
        width = len(str(low))
        if len(digits) >= width and low <= int(digits[:width]) <= high:
            return True
    return False


def card_brand(digits: str) -> str | None:
    """The network of a payment card number whose IIN and length match a published
    range and whose Luhn check passes; None otherwise."""
    if not digits.isdigit() or not digits.isascii() or not 12 <= len(digits) <= 19:
        return None
    if not luhn_valid(digits):
        return None
    for brand, spans, lengths in CARD_BRANDS:
        if len(digits) in lengths and _in_ranges(digits, spans):
            return brand
    return None
