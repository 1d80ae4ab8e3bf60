"""Each detector finds what is real, where it is, and leaves look-alikes alone."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carepost.dlp import detectors
from carepost.dlp.scanner import scan_text
from tests.dlp.dlp_samples import fresh_ssn, luhn_complete, tenant_keys

TODAY = date(2026, 12, 4)


def found(finder, text, **kwargs):
    return [(text[m.start : m.end], m.confidence) for m in finder(text, **kwargs)]


def test_ssn_written_with_dashes_is_found_with_its_offsets():
    ssn = fresh_ssn()
    text = f"Patient SSN: {ssn}, thanks"
    [match] = list(detectors.find_ssn(text))
    assert text[match.start : match.end] == ssn
    assert match.confidence >= 0.9
    assert match.normalized == ssn.replace("-", "")


def test_bare_nine_digits_are_an_ssn_only_with_low_confidence_unless_named():
    assert found(detectors.find_ssn, "order 123456780 shipped") == [("123456780", 0.35)]
    assert found(detectors.find_ssn, "SSN 123456780") == [("123456780", 0.9)]


@pytest.mark.parametrize(
    "text",
    [
        "SSN 000-12-3456",
        "SSN 666-12-3456",
        "SSN 912-34-5678",
        "SSN 123-00-4567",
        "SSN 123-45-0000",
        "SSN 078-05-1120",
        "call 123-45-67890",  # longer number
        "ref 123-45 6789",  # mixed separators
        "tracking 1123-45-6789",
    ],
)
def test_invalid_or_embedded_ssns_are_not_found(text):
    assert found(detectors.find_ssn, text) == []


def test_mbi_found_dashed_or_not():
    assert found(detectors.find_mbi, "Medicare ID 1EG4-TE5-MK73.") == [("1EG4-TE5-MK73", 0.95)]
    assert found(detectors.find_mbi, "id 1EG4TE5MK73") == [("1EG4TE5MK73", 0.85)]
    assert found(detectors.find_mbi, "id 1EG4-TE5MK73") == []  # one dash only
    assert found(detectors.find_mbi, "id 1SG4TE5MK73") == []  # S is never used


def test_npi_needs_its_check_digit_and_is_surer_when_named():
    assert found(detectors.find_npi, "NPI: 1234567893") == [("1234567893", 0.95)]
    assert found(detectors.find_npi, "ref 1234567893") == [("1234567893", 0.4)]
    assert found(detectors.find_npi, "NPI: 1234567890") == []


def test_dea_numbers_with_valid_check_digits():
    assert found(detectors.find_dea, "DEA # AB1234563") == [("AB1234563", 0.95)]
    assert found(detectors.find_dea, "DEA # AB1234564") == []
    assert found(detectors.find_dea, "code ZZ1234563") == []


def test_cards_found_grouped_and_plain_not_with_mixed_separators():
    visa = luhn_complete("4", 16)
    grouped = " ".join(visa[i : i + 4] for i in range(0, 16, 4))
    assert found(detectors.find_credit_card, f"card {grouped} exp") == [(grouped, 0.9)]
    assert found(detectors.find_credit_card, f"card {visa}.") == [(visa, 0.9)]
    mixed = f"{visa[:4]} {visa[4:8]}-{visa[8:12]} {visa[12:]}"
    assert found(detectors.find_credit_card, mixed) == []
    assert found(detectors.find_credit_card, "4111111111111112") == []


def test_icd10_dotted_codes_by_chapter_bare_ones_only_after_a_diagnosis_word():
    assert found(detectors.find_icd10, "Dx: E11.9 and I10") == [("E11.9", 0.9), ("I10", 0.7)]
    assert found(detectors.find_icd10, "code S72.001A") == [("S72.001A", 0.6)]
    assert found(detectors.find_icd10, "COVID U07.1") == [("U07.1", 0.6)]
    assert found(detectors.find_icd10, "vitamin B12 and I10 at room A12") == []
    assert found(detectors.find_icd10, "code U99.1") == []  # U holds only U07 in CM
    assert found(detectors.find_icd10, "version 1.2 of E1A.9") == []  # E1A is no category
    assert found(detectors.find_icd10, "diagnosis W1.5") == []


def test_date_of_birth_needs_a_birth_word_within_the_window():
    assert found(detectors.find_date_of_birth, "DOB: 03/14/1975", today=TODAY) == [
        ("03/14/1975", 0.9)
    ]
    assert found(detectors.find_date_of_birth, "She was born on March 14, 1975.", today=TODAY) == [
        ("March 14, 1975", 0.9)
    ]
    assert found(detectors.find_date_of_birth, "Date of birth 1975-03-14", today=TODAY) == [
        ("1975-03-14", 0.9)
    ]
    assert found(detectors.find_date_of_birth, "D.O.B. 14 Mar 1975", today=TODAY) == [
        ("14 Mar 1975", 0.9)
    ]
    # An appointment date is no birth date; nor is one far from the word.
    assert found(detectors.find_date_of_birth, "Appointment 03/14/2026", today=TODAY) == []
    far = "DOB is written on the form that we will send you later by post on 03/14/1975"
    assert found(detectors.find_date_of_birth, far, today=TODAY) == []
    # Not a date; in the future.
    assert found(detectors.find_date_of_birth, "DOB 02/30/1975", today=TODAY) == []
    assert found(detectors.find_date_of_birth, "DOB 01/01/2030", today=TODAY) == []


def test_two_digit_birth_years_go_to_the_last_century_when_needed():
    [match] = list(detectors.find_date_of_birth("DOB 3/4/75", today=TODAY))
    assert match.normalized == "1975-03-04"
    [match] = list(detectors.find_date_of_birth("DOB 3/4/05", today=TODAY))
    assert match.normalized == "2005-03-04"


def test_us_phone_numbers_by_phonenumbers_not_foreign_ones():
    assert [
        n for _, n in [(t, c) for t, c in found(detectors.find_us_phone, "Call (415) 555-2671")]
    ]
    [match] = list(detectors.find_us_phone("Call 415.555.2671 today"))
    assert match.normalized == "+14155552671"
    assert list(detectors.find_us_phone("Ring +44 20 7946 0958")) == []
    assert list(detectors.find_us_phone("Toronto +1 416 555 0123")) == []  # Canada


def test_street_addresses_with_and_without_city_state_zip():
    text = "Send it to 1600 Pennsylvania Avenue NW, Washington, DC 20500 please"
    [(matched, confidence)] = found(detectors.find_us_address, text)
    assert matched == "1600 Pennsylvania Avenue NW, Washington, DC 20500"
    assert confidence == 0.85
    assert found(detectors.find_us_address, "lives at 42 Elm St.") == [("42 Elm St.", 0.55)]
    assert found(detectors.find_us_address, "PO Box 123") == [("PO Box 123", 0.5)]
    assert found(detectors.find_us_address, "we have 3 more in the drive") == []


def test_a_phone_inside_another_number_is_not_counted_twice():
    keys = tenant_keys()
    result = scan_text("NPI: 1234567893", keys=keys)
    assert [f.detector for f in result.findings] == ["npi"]


def test_fingerprints_are_keyed_per_tenant_and_equal_across_writings():
    ssn = fresh_ssn()
    keys = tenant_keys()
    dashed = scan_text(f"SSN {ssn}", keys=keys).findings[0]
    bare = scan_text(f"SSN {ssn.replace('-', '')}", keys=keys).findings[0]
    other_tenant = scan_text(f"SSN {ssn}", keys=tenant_keys()).findings[0]
    assert dashed.fingerprint == bare.fingerprint
    assert dashed.fingerprint != other_tenant.fingerprint
    assert ssn not in repr(dashed) and ssn.replace("-", "") not in dashed.fingerprint


@given(st.text(max_size=300))
def test_detectors_never_fail_and_stay_inside_the_text(text):
    for detector in detectors.BUILTIN:
        for match in detector.find(text):
            assert 0 <= match.start < match.end <= len(text)
            assert 0 < match.confidence <= 1


@given(st.integers(min_value=0, max_value=10**9 - 1), st.sampled_from(["-", " ", ""]))
def test_an_ssn_is_found_exactly_when_it_is_valid(number, separator):
    from carepost.dlp.validators import ssn_valid

    digits = f"{number:09d}"
    text = f"SSN {digits[:3]}{separator}{digits[3:5]}{separator}{digits[5:]} end"
    assert bool(list(detectors.find_ssn(text))) == ssn_valid(digits)
