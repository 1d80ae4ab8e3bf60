"""The FHIR R4 import source: NDJSON, Bundles and single Patients to upsert items."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carepost.audit.service import SYSTEM
from carepost.contacts import custom_fields, service, sync, upserts
from carepost.core.errors import ValidationFailed
from carepost.imports import fhir
from carepost.imports.fhir import FhirOptions, iter_fhir
from carepost.imports.sources import SourceRow
from tests.canaries import phi_value

SAMPLES = Path(__file__).parent / "fhir_samples"
MR_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


def read(data: bytes, *, start: int = 0, options: FhirOptions | None = None) -> list[SourceRow]:
    return list(iter_fhir(io.BytesIO(data), start=start, options=options))


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def patient(**elements) -> dict:
    return {"resourceType": "Patient", **elements}


def one(resource: dict, options: FhirOptions | None = None) -> SourceRow:
    [row] = read(json.dumps(resource).encode() + b"\n", options=options)
    return row


def ndjson(*resources: dict) -> bytes:
    return b"".join(json.dumps(resource).encode() + b"\n" for resource in resources)


class Unseekable(io.RawIOBase):
    """An upload read straight from the network: no seek, no tell."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        chunk = self._data.read(min(len(buffer), 1000))
        buffer[: len(chunk)] = chunk
        return len(chunk)


# --- mapping ---------------------------------------------------------------------------


def test_a_synthea_patient_becomes_a_contact_without_its_social_security_number():
    options = FhirOptions(gender_field="gender", postal_code_field="zip", city_field="city")
    [row] = read(sample("synthea_patient.json"), options=options)

    assert (row.line, row.position) == (1, 1)
    assert row.item == {
        "external_id": "7c2b54e1-3f0a-4e1e-9a55-2d4b1c0f8e31",
        "first_name": "Adelle Rosa",
        "last_name": "Schmitt",
        "email": "adelle.schmitt@example.org",
        "birth_date": "1968-09-14",
        "external_ids": {"mrn": "7c2b54e1-3f0a-4e1e-9a55-2d4b1c0f8e31"},
        "language": "en-US",
        "custom": {"gender": "female", "zip": "01605", "city": "Worcester"},
    }
    assert "999-38-4419" not in json.dumps(row.item)
    assert "S99947211" not in json.dumps(row.item)
    # Synthea's 555 numbers are not real numbers: reported, the rest imported.
    assert [(e.column, e.reason) for e in row.errors] == [
        ("Patient.telecom[0].value", "not a valid phone number (national numbers are read as US)")
    ]


def test_custom_fields_are_left_out_unless_the_options_name_them():
    [row] = read(sample("synthea_patient.json"))
    assert row.item is not None
    assert "custom" not in row.item


def test_the_official_name_wins_and_old_names_are_never_used():
    row = one(
        patient(
            name=[
                {"use": "old", "family": "Former", "given": ["Old"]},
                {"use": "nickname", "given": ["Sunny"]},
                {"use": "usual", "family": "Usual", "given": ["Sam"]},
                {"use": "official", "family": "Official", "given": ["Samantha", "Jane"]},
            ]
        )
    )
    assert row.item == {"first_name": "Samantha Jane", "last_name": "Official"}
    assert row.errors == []


def test_a_patient_without_telecom_imports_without_email_or_phone():
    row = one(patient(id="p1", name=[{"family": "Doe", "given": ["Jo"]}]))
    assert row.item == {"external_id": "p1", "first_name": "Jo", "last_name": "Doe"}
    assert row.errors == []


def test_absent_elements_are_not_sent_so_stored_values_stay():
    row = one(patient(id="p1"))
    assert row.item == {"external_id": "p1"}  # no None: None would clear the stored value


def test_phones_become_e164_in_the_default_region_and_a_mobile_number_is_preferred():
    telecom = [
        {"system": "phone", "value": "(617) 253-1000", "use": "work", "rank": 1},
        {"system": "phone", "value": "617-555-0142", "use": "mobile", "rank": 2},
        {"system": "fax", "value": "617-253-9999"},
    ]
    assert one(patient(telecom=telecom)).item == {"phone": "+16175550142"}
    british = [{"system": "sms", "value": "020 7946 0958"}]
    options = FhirOptions(default_region="GB")
    assert one(patient(telecom=british), options).item == {"phone": "+442079460958"}
    international = [{"system": "phone", "value": "+44 20 7946 0958"}]
    assert one(patient(telecom=international)).item == {"phone": "+442079460958"}


def test_the_first_usable_email_is_taken_by_rank_and_old_ones_are_skipped():
    telecom = [
        {"system": "email", "value": "old@example.org", "use": "old", "rank": 1},
        {"system": "email", "value": "second@example.org", "rank": 3},
        {"system": "email", "value": "not an address", "rank": 2},
    ]
    row = one(patient(telecom=telecom))
    assert row.item == {"email": "second@example.org"}
    assert row.errors == []  # a usable address was found: the bad one is not worth a line


def test_values_fhir_resources_coerces_are_read_as_coerced():
    # pydantic's lax mode accepts "2" for an integer and "false" for a boolean.
    telecom = [
        {"system": "phone", "value": "617-253-1000", "rank": "2"},
        {"system": "phone", "value": "617-253-1001", "rank": 1},
    ]
    communication = [
        {
            "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]},
            "preferred": "false",
        },
        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr"}]}, "preferred": True},
    ]
    row = one(patient(telecom=telecom, communication=communication))
    assert row.item == {"phone": "+16172531001", "language": "fr"}


def test_an_unusable_email_is_reported_on_its_path():
    row = one(patient(id="p1", telecom=[{"system": "email", "value": "no-at-sign"}]))
    assert row.item == {"external_id": "p1"}
    assert [e.column for e in row.errors] == ["Patient.telecom[0].value"]


def test_a_medical_record_number_becomes_the_mrn_and_other_identifiers_are_ignored():
    identifiers = [
        {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-11-2222"},
        {"use": "old", "type": MR_TYPE, "system": "http://h.example/mrn", "value": "OLD-1"},
        {"type": MR_TYPE, "system": "http://h.example/mrn", "value": "MRN-42"},
    ]
    row = one(patient(identifier=identifiers))
    assert row.item == {"external_ids": {"mrn": "MRN-42"}}


def test_configured_identifier_systems_map_to_mrn_or_crm_before_the_mr_type():
    identifiers = [
        {"type": MR_TYPE, "system": "http://lab.example/mr", "value": "LAB-7"},
        {"system": "urn:oid:1.2.3.4", "value": "EPIC-9"},
        {"system": "https://crm.example/id", "value": "CRM-5"},
    ]
    options = FhirOptions(
        identifier_systems={"urn:oid:1.2.3.4": "mrn", "https://crm.example/id": "crm"}
    )
    row = one(patient(identifier=identifiers), options)
    assert row.item == {"external_ids": {"mrn": "EPIC-9", "crm": "CRM-5"}}


def test_patient_id_as_external_id_can_be_turned_off():
    options = FhirOptions(patient_id_as_external_id=False)
    assert one(patient(id="p1", gender="male"), options).item == {}


@pytest.mark.parametrize("partial", ["1970", "1970-05"])
def test_a_partial_birth_date_is_reported_and_the_patient_still_imported(partial):
    row = one(patient(id="p1", birthDate=partial))
    assert row.item == {"external_id": "p1"}
    [error] = row.errors
    assert error.column == "Patient.birthDate"
    assert "partial date" in error.reason


@pytest.mark.parametrize("partial", ["1970", "1970-05"])
def test_a_partial_birth_date_fills_the_birth_year_field_when_mapped(partial):
    row = one(patient(birthDate=partial), FhirOptions(birth_year_field="birth_year"))
    assert row.item == {"custom": {"birth_year": 1970}}
    assert row.errors == []


def test_a_birth_date_the_contact_field_refuses_is_reported():
    row = one(patient(birthDate="1850-01-01"))
    assert row.item == {}
    assert [e.column for e in row.errors] == ["Patient.birthDate"]


def test_gender_goes_to_its_field_and_a_code_outside_the_value_set_is_reported():
    options = FhirOptions(gender_field="sex")
    assert one(patient(gender="other"), options).item == {"custom": {"sex": "other"}}
    # fhir.resources accepts any code here; the binding to AdministrativeGender is required.
    row = one(patient(gender="f"), options)
    assert row.item == {}
    assert [e.column for e in row.errors] == ["Patient.gender"]


def test_the_home_address_fills_the_mapped_address_fields():
    addresses = [
        {"use": "old", "city": "Oldtown", "postalCode": "00000"},
        {"use": "work", "city": "Worktown", "state": "NY", "postalCode": "10001"},
        {"use": "home", "city": "Hometown", "state": "MA", "postalCode": "02139"},
    ]
    options = FhirOptions(postal_code_field="zip", state_field="state")
    row = one(patient(address=addresses), options)
    assert row.item == {"custom": {"zip": "02139", "state": "MA"}}


def test_the_preferred_language_wins_and_a_language_without_a_bcp47_code_is_reported():
    communication = [
        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}},
        {
            "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es-MX"}]},
            "preferred": True,
        },
    ]
    assert one(patient(communication=communication)).item == {"language": "es-MX"}
    row = one(patient(communication=[{"language": {"text": "Klingon"}}]))
    assert row.item == {}
    assert [e.column for e in row.errors] == ["Patient.communication[0].language"]


# --- formats ---------------------------------------------------------------------------


def test_a_bundle_imports_its_good_entries_and_reports_each_bad_one():
    rows = read(sample("mixed_bundle.json"), options=FhirOptions(gender_field="gender"))

    assert [(row.line, row.position) for row in rows] == [(i, i) for i in range(1, 8)]
    assert rows[0].item == {
        "external_id": "pat-1",
        "first_name": "Chidi",
        "last_name": "Okafor",
        "email": "chidi.okafor@example.org",
        "birth_date": "1981-02-03",
        "external_ids": {"mrn": "MRN-0001"},
        "custom": {"gender": "male"},
    }
    assert rows[0].errors == []
    failed = {row.line: [(e.column, e.reason) for e in row.errors] for row in rows[1:6]}
    assert all(row.item is None for row in rows[1:6])
    assert failed[2][0][0] == "Patient.birthDate"  # February 31st
    assert failed[3] == [("resourceType", "not a Patient resource: Observation")]
    assert failed[4] == [("Bundle.entry.resource", "the entry has no resource")]
    assert failed[5] == [("Patient", "holds an element that FHIR R4 does not define")]
    assert failed[6] == [("Bundle.entry", "the entry is not a JSON object")]
    # The last Patient imports, its partial birth date reported.
    assert rows[6].item == {
        "external_id": "pat-7",
        "first_name": "Leila",
        "last_name": "Haddad",
        "phone": "+16175550142",
    }
    assert [e.column for e in rows[6].errors] == ["Patient.birthDate"]


def test_ndjson_reports_a_bad_line_and_reads_on():
    data = sample("patients_with_bad_lines.ndjson")
    rows = read(data)

    ends = [index + 1 for index, byte in enumerate(data) if byte == ord("\n")]
    assert [row.line for row in rows] == [1, 2, 4, 5, 6, 7, 8]  # line 3 is blank
    assert [row.position for row in rows] == [ends[i] for i in (0, 1, 3, 4, 5, 6, 7)]
    assert rows[0].item is not None and rows[0].item["external_id"] == "nd-1"
    assert rows[1].item is None and rows[1].errors[0].reason.startswith("not valid JSON")
    assert rows[2].item is not None and rows[2].item["external_id"] == "nd-3"
    assert rows[3].errors[0].reason == "not a FHIR resource: expected a JSON object"
    assert rows[4].errors[0].reason == "not a Patient resource: Encounter"
    assert [(e.column, e.reason) for e in rows[5].errors] == [
        ("Patient.active", "must be true or false")
    ]
    assert rows[6].item == {"external_id": "nd-8", "first_name": "Lena", "last_name": "Fischer"}


def test_a_line_that_is_not_utf8_is_reported_and_the_next_one_read():
    good = json.dumps(patient(id="p2")).encode()
    rows = read(b'{"resourceType": "Patient", "id": "\xff\xfe"}\n' + good + b"\n")
    assert rows[0].errors[0].reason == "the line is not UTF-8 text"
    assert rows[1].item == {"external_id": "p2"}


def test_an_overlong_line_is_reported_without_being_held_in_memory(monkeypatch):
    monkeypatch.setattr(fhir, "MAX_RECORD_BYTES", 100)
    long = json.dumps(patient(id="p1", name=[{"family": "x" * 500}])).encode()
    rows = read(ndjson(patient(id="p0")) + long + b"\n" + ndjson(patient(id="p2")))
    assert [row.item for row in rows] == [{"external_id": "p0"}, None, {"external_id": "p2"}]
    assert rows[1].errors[0].reason.startswith("the line is longer than")
    assert rows[2].position == len(ndjson(patient(id="p0"))) + len(long) + 1 + len(
        ndjson(patient(id="p2"))
    )


def test_a_minified_bundle_on_one_line_is_streamed_as_a_bundle():
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": patient(id="a")}, {"resource": patient(id="b")}],
    }
    rows = read(json.dumps(bundle).encode())
    assert [(row.position, row.item) for row in rows] == [
        (1, {"external_id": "a"}),
        (2, {"external_id": "b"}),
    ]


def test_a_bundle_whose_entries_come_before_its_resource_type_is_still_read():
    data = b'{"entry": [{"resource": {"resourceType": "Patient", "id": "a"}}], "type": "batch", '
    data += b'"resourceType": "Bundle"}'
    assert [row.item for row in read(b"\n" + data)] == [{"external_id": "a"}]


def test_ndjson_whose_first_line_is_broken_is_still_read_as_ndjson():
    data = b'{"resourceType": "Patient", "id": \n' + ndjson(patient(id="p2"))
    rows = read(data)
    assert rows[0].item is None
    assert rows[1].item == {"external_id": "p2"}


def test_a_utf8_byte_order_mark_is_tolerated_in_every_format():
    bom = b"\xef\xbb\xbf"
    assert read(bom + ndjson(patient(id="a"), patient(id="b")))[0].item == {"external_id": "a"}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": patient(id="a")}],
    }
    assert read(bom + json.dumps(bundle, indent=2).encode())[0].item == {"external_id": "a"}
    assert read(bom + json.dumps(patient(id="a"), indent=2).encode())[0].item == {
        "external_id": "a"
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "the file is empty"),
        (b"  \n\n ", "the file is empty"),
        (b"[{}]", "not FHIR JSON: expected a resource, a Bundle or NDJSON"),
        (
            b"name,email\nJo,jo@example.org\n",
            "not FHIR JSON: expected a resource, a Bundle or NDJSON",
        ),
    ],
)
def test_a_file_that_is_not_fhir_json_is_one_clear_error(data, reason):
    [row] = read(data)
    assert (row.line, row.position, row.item) == (1, 0, None)
    assert row.errors[0].reason == reason


def test_a_bundle_of_an_unsupported_type_is_refused_by_name():
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": patient()}]}
    [row] = read(json.dumps(bundle, indent=2).encode())
    assert row.item is None
    assert row.errors[0].column == "Bundle.type"
    assert row.errors[0].reason.startswith("a Bundle of type history is not imported")


def test_a_truncated_bundle_keeps_the_entries_before_the_cut():
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": patient(id="a")}, {"resource": patient(id="b", gender="male")}],
    }
    data = json.dumps(bundle, indent=2).encode()
    rows = read(data[: data.index(b'"male"')])
    assert rows[0].item == {"external_id": "a"}
    assert rows[1].item is None
    assert (rows[1].line, rows[1].errors[0].column) == (2, "Bundle.entry")
    assert "cut short" in rows[1].errors[0].reason


def test_text_after_a_bundle_is_reported_after_its_entries():
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": patient(id="a")}]}
    rows = read(json.dumps(bundle, indent=2).encode() + b"\n{}")
    assert [(row.line, row.position, row.item) for row in rows] == [
        (1, 1, {"external_id": "a"}),
        (2, 1, None),
    ]
    assert "not valid JSON" in rows[1].errors[0].reason


def test_a_pretty_printed_non_patient_resource_is_reported():
    [row] = read(json.dumps({"resourceType": "Practitioner", "id": "x"}, indent=2).encode())
    assert row.errors[0].reason == "not a Patient resource: Practitioner"


# --- resuming ------------------------------------------------------------------------------


def _bundle_of(count: int, *, indent: int | None) -> bytes:
    entries = []
    for n in range(count):
        resource = patient(id=f"p{n}") if n % 3 else {"resourceType": "Observation", "id": f"o{n}"}
        entries.append({"fullUrl": f"urn:uuid:{n}", "resource": resource})
    return json.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": entries}, indent=indent
    ).encode()


RESUMABLE = {
    "ndjson": sample("patients_with_bad_lines.ndjson"),
    "bundle": sample("mixed_bundle.json"),
    "generated bundle": _bundle_of(12, indent=2),
    "minified bundle": _bundle_of(12, indent=None),
}


@pytest.mark.parametrize("name", RESUMABLE)
def test_resuming_from_a_position_yields_exactly_the_remaining_rows(name, monkeypatch):
    data = RESUMABLE[name]
    rows = read(data)
    for index, row in enumerate(rows):
        decoded: list[int] = []
        real = fhir._resource_row

        def counting(line, *args, _real=real, _decoded=decoded):
            _decoded.append(line)
            return _real(line, *args)

        monkeypatch.setattr(fhir, "_resource_row", counting)
        assert read(data, start=row.position) == rows[index + 1 :]
        # The records before the position were stepped over, never decoded.
        assert all(line > row.line for line in decoded)
        monkeypatch.setattr(fhir, "_resource_row", real)
    assert read(data, start=0) == rows


@pytest.mark.parametrize("name", ["ndjson", "bundle"])
def test_a_stream_that_cannot_seek_reads_and_resumes_the_same(name):
    data = RESUMABLE[name]
    rows = read(data)
    assert list(iter_fhir(Unseekable(data))) == rows
    middle = rows[len(rows) // 2].position
    assert list(iter_fhir(Unseekable(data), start=middle)) == rows[len(rows) // 2 + 1 :]


def test_a_single_resource_is_consumed_once():
    data = json.dumps(patient(id="a"), indent=2).encode()
    assert [row.position for row in read(data)] == [1]
    assert read(data, start=1) == []


# --- PHI never in an error -----------------------------------------------------------------


def test_errors_never_quote_the_values_at_fault():
    canaries = [phi_value(kind) for kind in ("date", "key", "gender", "mail", "phone", "id")]
    date, key, gender, mail, phone, ident = canaries
    bad_patient = patient(
        birthDate=date,
        name=[{"family": 42, key: "x"}],
        telecom=[{"system": "email", "value": mail}],
        identifier=[{"system": {"nested": ident}}],
    )
    other = patient(gender=gender, telecom=[{"system": "phone", "value": phone}])
    other["identifier"] = [{"type": MR_TYPE, "value": ident + "\x07"}]
    lines = [
        json.dumps(bad_patient).encode(),
        json.dumps(other).encode(),
        json.dumps(patient(telecom=[{"system": "email", "value": mail}])).encode(),
        b'{"resourceType": "Patient", "name": "' + date.encode() + b'"',
        json.dumps({"resourceType": gender}).encode(),
        json.dumps(patient(birthDate=date[:4] + "1970")).encode(),
    ]
    rows = read(b"\n".join(lines) + b"\n", options=FhirOptions(gender_field="gender"))
    bundle = json.dumps(
        {"resourceType": "Bundle", "type": key, "entry": [{"resource": bad_patient}]}
    ).encode()
    rows += read(bundle)
    broken = b'{"resourceType": "Bundle", "entry": [{"resource": {"id": "' + date.encode() + b'" ,,'
    rows += read(broken)

    assert all(row.errors for row in rows)
    text = repr([row.errors for row in rows])
    for canary in canaries:
        assert canary not in text
        assert canary[3:] not in text


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.builds(lambda n: f"PhiV{n}", st.integers(1000, 9999)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["value", "system", "use", "PhiKey1234"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)
patient_elements = st.dictionaries(
    st.sampled_from(
        [
            "id",
            "name",
            "telecom",
            "birthDate",
            "gender",
            "address",
            "identifier",
            "communication",
            "active",
            "deceasedBoolean",
            "PhiKey5678",
        ]
    ),
    json_values,
    max_size=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(elements=patient_elements)
def test_any_patient_json_gives_a_row_and_never_echoes_a_value(elements):
    options = FhirOptions(gender_field="gender", city_field="city", birth_year_field="year")
    [row] = read(json.dumps(patient(**elements)).encode() + b"\n", options=options)
    assert row.item is not None or row.errors
    text = repr(row.errors)
    assert "PhiV" not in text and "PhiKey" not in text


fragments = st.sampled_from(
    [
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"\n",
        b" ",
        b'"resourceType"',
        b'"Bundle"',
        b'"Patient"',
        b'"entry"',
        b'"resource"',
        b'"type"',
        b'"collection"',
        b"1",
        b"null",
        b"\xef\xbb\xbf",
        b"\xff",
    ]
)


@settings(max_examples=300, deadline=None)
@given(data=st.lists(fragments, max_size=40).map(b"".join) | st.binary(max_size=200))
def test_any_bytes_give_rows_or_a_clear_error_and_never_raise(data):
    for row in read(data):
        assert row.item is not None or row.errors


# --- options -----------------------------------------------------------------------------


def test_options_come_from_the_job_mapping_and_default_to_the_tenant_fields():
    options = FhirOptions.from_mapping(
        {"default_region": "gb", "identifier_systems": {"urn:oid:1.2": "crm"}},
        fields={"gender", "postal_code", "weight"},
    )
    assert options == FhirOptions(
        default_region="GB",
        identifier_systems={"urn:oid:1.2": "crm"},
        gender_field="gender",
        postal_code_field="postal_code",
    )
    assert FhirOptions.from_mapping(None) == FhirOptions()
    assert FhirOptions.from_mapping({"gender_field": None}, fields={"gender"}).gender_field is None


def test_a_bad_mapping_reports_every_problem_by_option():
    with pytest.raises(ValidationFailed) as refused:
        FhirOptions.from_mapping(
            {
                "default_region": "Mars",
                "identifier_systems": {"urn:x": "ssn"},
                "gender_field": "sex",
                "patient_id_as_external_id": "yes",
                "colour_field": "c",
            },
            fields={"gender"},
        )
    assert sorted(error.field for error in refused.value.errors) == [
        "colour_field",
        "default_region",
        "gender_field",
        "identifier_systems",
        "patient_id_as_external_id",
    ]


# --- into the database, both engines -------------------------------------------------------


def test_fhir_items_upsert_into_a_tenant_and_a_second_import_changes_nothing(runtime, tenant):
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        custom_fields.create_field(
            session,
            tenant_row.id,
            key="gender",
            label="Gender",
            type="choice",
            choices=["male", "female", "other", "unknown"],
            phi=True,
            actor=SYSTEM,
        )
        custom_fields.create_field(
            session, tenant_row.id, key="postal_code", label="ZIP", type="string", actor=SYSTEM
        )
        custom_fields.create_field(
            session,
            tenant_row.id,
            key="birth_year",
            label="Birth year",
            type="number",
            actor=SYSTEM,
        )
        schema = custom_fields.load_schema(session, tenant_row.id)
    options = FhirOptions.from_mapping({}, fields=set(schema))
    email = f"{phi_value('mail').lower()}@example.org"
    extra = ndjson(
        patient(
            id="gen-1",
            identifier=[{"type": MR_TYPE, "value": "MRN-GEN-1"}],
            telecom=[{"system": "email", "value": email}, {"system": "sms", "value": "6175550199"}],
            birthDate="1944",
            gender="unknown",
        )
    )
    rows = [
        *read(sample("synthea_patient.json"), options=options),
        *read(sample("mixed_bundle.json"), options=options),
        *read(extra, options=options),
    ]
    items = [row.item for row in rows if row.item is not None]
    assert len(items) == 4

    for attempt in ("first", "second"):
        with runtime.bound_session(keys) as session:
            results = upserts.upsert_contacts(
                session, keys, items, match="external_id", actor=SYSTEM
            )
        expected = "created" if attempt == "first" else "unchanged"
        assert [(r.status, r.errors) for r in results] == [(expected, [])] * 4

    with runtime.bound_session(keys) as session:
        [found] = service.find_contacts(session, keys, field="email", value=email)
        assert (found.phone, found.birth_date) == ("+16175550199", None)
        assert found.custom == {"gender": "unknown", "birth_year": 1944}
        [synthea] = service.find_contacts(
            session, keys, field="external_id", value="7c2b54e1-3f0a-4e1e-9a55-2d4b1c0f8e31"
        )
        assert (synthea.first_name, synthea.last_name) == ("Adelle Rosa", "Schmitt")
        assert synthea.custom == {"gender": "female", "postal_code": "01605"}
        assert synthea.language == "en-US"
        ids = sync.identifiers_of(session, tenant_row.id, [found.id, synthea.id])
        assert ids[found.id] == {"mrn": "MRN-GEN-1"}
        assert ids[synthea.id] == {"mrn": "7c2b54e1-3f0a-4e1e-9a55-2d4b1c0f8e31"}


# --- a large export ------------------------------------------------------------------------

# 10,000 patients keep the suite quick (fhir.resources validation is about 1 ms a patient);
# CAREPOST_FHIR_LARGE_EXPORT=50000 measures a bigger export the same way.
LARGE_EXPORT = int(os.environ.get("CAREPOST_FHIR_LARGE_EXPORT", "10000"))
GIVEN = ["Amara", "Bo", "Carmen", "Dmitri", "Esi", "Farah", "Gustavo", "Hana", "Ines", "Jun"]
FAMILY = ["Abara", "Berg", "Costa", "Dube", "Eriksen", "Fonseca", "Gupta", "Huang", "Ito"]
# A Synthea-sized narrative: each line is about 4 KiB, as in a real export.
NARRATIVE = '<div xmlns="http://www.w3.org/1999/xhtml">' + "Generated by Synthea. " * 150 + "</div>"


def generated_patient(n: int) -> dict:
    """A Synthea-like Patient, different for each n."""
    return patient(
        id=f"gen-{n:08d}",
        text={"status": "generated", "div": NARRATIVE},
        identifier=[
            {"system": "https://github.com/synthetichealth/synthea", "value": f"gen-{n:08d}"},
            {"type": MR_TYPE, "system": "http://hospital.example.org", "value": f"MRN{n:08d}"},
        ],
        name=[{"use": "official", "family": FAMILY[n % 9], "given": [GIVEN[n % 10]]}],
        telecom=[
            {"system": "phone", "value": f"617-253-{n % 10000:04d}", "use": "mobile"},
            {"system": "email", "value": f"patient{n}@example.org"},
        ],
        gender=("male", "female")[n % 2],
        birthDate=f"{1930 + n % 90}-{1 + n % 12:02d}-{1 + n % 28:02d}",
        address=[
            {"line": [f"{n} Main St"], "city": "Cambridge", "state": "MA", "postalCode": "02139"}
        ],
        communication=[{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]}}],
    )


def _resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _written(path: Path, first: int, count: int) -> Path:
    with path.open("wb") as out:
        for n in range(first, first + count):
            out.write(json.dumps(generated_patient(n)).encode() + b"\n")
    return path


def test_a_large_ndjson_export_streams_with_flat_memory(tmp_path, capsys):
    options = FhirOptions(gender_field="gender", postal_code_field="zip")
    # Warm up first (pydantic schemas, phone metadata), so that only the stream is measured.
    with _written(tmp_path / "warm.ndjson", 10**9, 200).open("rb") as stream:
        assert all(row.item for row in iter_fhir(stream, options=options))
    path = _written(tmp_path / "Patient.ndjson", 0, LARGE_EXPORT)
    size_mib = path.stat().st_size / 2**20
    imported = errors = 0
    baseline = peak = _resident_kib()
    started, cpu_started = time.perf_counter(), time.process_time()
    with path.open("rb") as stream:
        rows: Iterator[SourceRow] = iter_fhir(stream, options=options)
        for count, row in enumerate(rows, 1):
            imported += row.item is not None
            errors += bool(row.errors)
            if count % 500 == 0:
                peak = max(peak, _resident_kib())
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started

    assert (imported, errors) == (LARGE_EXPORT, 0)
    growth_mib = (peak - baseline) / 1024
    # Holding the file (about 40 MiB here), let alone its decoded objects, would show.
    assert growth_mib < 16, f"memory grew by {growth_mib:.1f} MiB over a {size_mib:.0f} MiB file"
    with capsys.disabled():
        print(
            f"\nFHIR NDJSON: {LARGE_EXPORT:,} patients ({size_mib:.0f} MiB) in {elapsed:.1f} s = "
            f"{LARGE_EXPORT / elapsed:,.0f} patients/s ({LARGE_EXPORT / cpu:,.0f} per CPU second), "
            f"peak memory growth {growth_mib:.1f} MiB"
        )


def test_an_ndjson_resume_that_knows_its_line_seeks_past_the_lines_before_it():
    data = RESUMABLE["ndjson"]
    rows = read(data)
    for index, row in enumerate(rows):
        stream = io.BytesIO(data)
        resumed = list(iter_fhir(stream, start=row.position, start_line=row.last_line))
        # The same rows with the same line numbers as when the lines were counted.
        assert resumed == rows[index + 1 :]
