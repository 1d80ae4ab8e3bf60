"""The identifier rules: what could be issued passes, what could not is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.dlp.validators import (
    card_brand,
    dea_valid,
    luhn_valid,
    mbi_valid,
    npi_valid,
    ssn_valid,
)
from tests.dlp.dlp_samples import luhn_complete


@pytest.mark.parametrize("digits", ["123456780", "001010001", "665123456", "899991234"])
def test_ssns_that_could_be_issued_pass(digits):
    assert ssn_valid(digits)


@pytest.mark.parametrize(
    ("digits", "why"),
    [
        ("000123456", "area 000"),
        ("666123456", "area 666"),
        ("900123456", "area 9xx"),
        ("987654321", "area 9xx"),
        ("123001234", "group 00"),
        ("123450000", "serial 0000"),
        ("078051120", "the Woolworth card"),
        ("219099999", "the SSA pamphlet"),
        ("123456789", "the advertising number"),
        ("12345678", "eight digits"),
        ("12345678a", "a letter"),
        ("".join(chr(0xFF10 + int(d)) for d in "123456780"), "full-width digits"),
    ],
)
def test_ssns_that_cannot_be_issued_are_refused(digits, why):
    assert not ssn_valid(digits), why


@pytest.mark.parametrize("mbi", ["1EG4TE5MK73", "9AA0A00AA00", "1A00A00AA00"])
def test_mbis_by_cms_positions_pass(mbi):
    assert mbi_valid(mbi)


@pytest.mark.parametrize(
    "mbi",
    [
        "0EG4TE5MK73",  # position 1 is 1-9
        "1SG4TE5MK73",  # S is never used
        "1EG4TE5MK7",  # ten characters
        "1E04TE5MK73" + "1",  # twelve
        "1EGATE5MK73",  # position 4 is a digit
        "1EG4TE5M173",  # position 9 is a letter
        "1EG4TE5MK7A",  # position 11 is a digit
        "1eg4te5mk73",  # lower case is not the format
        "1IG4TE5MK73",  # I reads as 1
    ],
)
def test_mbis_breaking_a_position_rule_are_refused(mbi):
    assert not mbi_valid(mbi)


def test_npi_uses_luhn_over_the_80840_prefix():
    assert npi_valid("1234567893")  # CMS's worked example
    assert not npi_valid("1234567890")
    assert not npi_valid("3234567893")  # starts 1 or 2
    # The plain Luhn of the ten digits is not the NPI check.
    assert not luhn_valid("1234567893")


@given(st.integers(min_value=100_000_000, max_value=299_999_999))
def test_exactly_one_check_digit_makes_an_npi(body):
    digits = str(body)
    if digits[0] not in "12":
        return
    assert sum(npi_valid(digits + str(check)) for check in range(10)) == 1


def test_dea_check_digit_and_registrant_letters():
    assert dea_valid("AB1234563")  # 1+3+5 + 2*(2+4+6) = 33 -> 3
    assert dea_valid("M91234563")  # 9 for some business names
    assert not dea_valid("AB1234564")
    assert not dea_valid("QB1234563")  # Q is no registrant type
    assert not dea_valid("Ab1234563")
    assert not dea_valid("AB123456")


@pytest.mark.parametrize(
    ("prefix", "length", "brand"),
    [
        ("4", 16, "visa"),
        ("4", 13, "visa"),
        ("51", 16, "mastercard"),
        ("2221", 16, "mastercard"),
        ("2720", 16, "mastercard"),
        ("34", 15, "amex"),
        ("37", 15, "amex"),
        ("6011", 16, "discover"),
        ("65", 16, "discover"),
        ("3528", 16, "jcb"),
        ("36", 14, "diners"),
    ],
)
def test_cards_in_known_ranges_with_luhn_have_a_brand(prefix, length, brand):
    assert card_brand(luhn_complete(prefix, length)) == brand


def test_cards_outside_the_ranges_or_lengths_or_luhn_have_none():
    assert card_brand("4111111111111111") == "visa"
    assert card_brand("4111111111111112") is None  # Luhn fails
    assert card_brand(luhn_complete("34", 16)) is None  # Amex has 15 digits
    assert card_brand(luhn_complete("2721", 16)) is None  # past the 2-series
    assert card_brand(luhn_complete("1", 16)) is None  # no network issues 1
    assert card_brand(luhn_complete("9", 16)) is None
