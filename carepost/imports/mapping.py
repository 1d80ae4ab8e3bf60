"""Column mapping: which file column feeds which contact field, and how its text is coerced.

A mapping is plain JSON kept on the job (column names and field keys, never a
value)::

    {"columns": {"E-mail": "email", "DOB": "birth_date", "Notes": null},
     "date_format": "us"}

A column maps to a standard field (``email``, ``phone``, ``first_name``,
``last_name``, ``birth_date``, ``external_id``), an external id (``mrn``,
``crm``), an attribute (``journey_stage``, ``language``, ``timezone``) or a custom
field key; ``null`` ignores it. Columns the mapping does not name map by default
when their header, compared in lower case without spaces, dashes or underscores,
is a field key (``E-Mail``, ``First Name``); any other column is ignored.

Coercion turns cell text into the JSON an upsert takes: numbers, booleans
(yes/no, true/false, 1/0), dates (ISO, or US month/day/year when the mapping says
``"date_format": "us"``), multi-choices split on ``;`` or ``|``. An empty cell
sends nothing (it never clears a stored value). The checks of the values
themselves (an email's form, a choice among the field's) stay with
:func:`carepost.contacts.prepare.prepare_contact`: one set of rules for the API
and for imports. Errors name the column and never quote the cell.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.prepare import ATTRIBUTES, IDENTIFIER_KINDS, MATCH_KEYS, match_pointer
from carepost.contacts.tokens import FieldType
from carepost.contacts.values import FieldSpec
from carepost.core.errors import FieldError, ValidationFailed
from carepost.imports.sources import RowError

DATE_FORMATS = ("iso", "us")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_US_DATE = re.compile(r"^(\d{1,2})[/-](\d{1,2})[/-](\d{4})$")
_CANONICAL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INTEGER = re.compile(r"[+-]?\d+")
_MULTI_SEPARATOR = re.compile(r"[;|]")
_TRUE = frozenset({"yes", "y", "true", "t", "1"})
_FALSE = frozenset({"no", "n", "false", "f", "0"})

Coerce = Callable[[str], Any]


class CellError(ValueError):
    """A cell's text cannot become the field's type; the message names no value."""


def header_key(name: str) -> str:
    """How header names and field keys are compared: lower-case letters and digits only,
    so ``E-Mail``, ``First Name`` and ``LAST_NAME`` find email, first_name, last_name."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def _date(date_format: str) -> Coerce:
    us = date_format == "us"
    message = "use a date as YYYY-MM-DD" + (" or MM/DD/YYYY" if us else "")

    def coerce(text: str) -> str:
        if _CANONICAL_DATE.fullmatch(text):
            return text  # the common case, already canonical
        found = _ISO_DATE.match(text)
        if found:
            year, month, day = found.groups()
        elif us and (found := _US_DATE.match(text)):
            month, day, year = found.groups()
        else:
            raise CellError(message)
        # Range and calendar checks (30 February, a future birth date) are prepare's.
        return f"{year}-{int(month):02d}-{int(day):02d}"

    return coerce


def _number(text: str) -> int | float:
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise CellError("must be a number") from None
    if not math.isfinite(value):
        raise CellError("must be a finite number")
    return value


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise CellError("must be yes or no (true/false, 1/0)")


def _choices(text: str) -> list[str]:
    if ";" not in text and "|" not in text:
        return [text]
    return [part.strip() for part in _MULTI_SEPARATOR.split(text) if part.strip()]


def _text(text: str) -> str:
    return text


def _coercer(field: str, schema: Mapping[str, FieldSpec], date_format: str) -> Coerce:
    if field == "birth_date":
        return _date(date_format)
    spec = schema.get(field)
    if field in STANDARD_FIELDS or field in IDENTIFIER_KINDS or field in ATTRIBUTES or not spec:
        return _text
    if spec.type is FieldType.NUMBER:
        return _number
    if spec.type is FieldType.BOOLEAN:
        return _boolean
    if spec.type is FieldType.DATE:
        return _date(date_format)
    if spec.type is FieldType.MULTI_CHOICE:
        return _choices
    return _text


def field_pointer(field: str) -> str:
    """Where a field sits in an upsert item (and in the errors an upsert returns)."""
    if field in STANDARD_FIELDS or field in ATTRIBUTES:
        return field
    if field in IDENTIFIER_KINDS:
        return match_pointer(field)
    return f"custom/{field}"


def known_fields(schema: Mapping[str, FieldSpec]) -> set[str]:
    return {*STANDARD_FIELDS, *IDENTIFIER_KINDS, *ATTRIBUTES, *schema}


def check_mapping(
    mapping: Mapping[str, Any], schema: Mapping[str, FieldSpec], *, match: str
) -> None:
    """Refuse a mapping naming unknown fields or options, with a pointer to each problem."""
    errors: list[FieldError] = []
    if match not in MATCH_KEYS:
        errors.append(FieldError("match", f"match on one of {', '.join(MATCH_KEYS)}"))
    unknown_keys = sorted(set(mapping) - {"columns", "date_format"})
    errors += [FieldError(f"mapping/{key}", "unknown mapping option") for key in unknown_keys]
    columns = mapping.get("columns", {})
    if not isinstance(columns, Mapping):
        errors.append(FieldError("mapping/columns", "must be an object of column to field key"))
        columns = {}
    if mapping.get("date_format", "iso") not in DATE_FORMATS:
        errors.append(FieldError("mapping/date_format", "use iso or us"))
    fields = known_fields(schema)
    targets: dict[str, str] = {}
    for column, field in columns.items():
        pointer = f"mapping/columns/{column}"
        if not isinstance(column, str) or not column.strip() or len(column) > 200:
            errors.append(FieldError(pointer, "a column name is 1 to 200 characters"))
        elif field is None:
            continue
        elif not isinstance(field, str) or field not in fields:
            errors.append(
                FieldError(
                    pointer,
                    "not a contact field: use a standard field, mrn, crm, "
                    "journey_stage, language, timezone or a custom field key",
                )
            )
        elif field in targets:
            errors.append(FieldError(pointer, f"column {targets[field]!r} maps to {field} too"))
        else:
            targets[field] = column
    if errors:
        raise ValidationFailed(errors[0].message, errors=errors)


@dataclass(frozen=True)
class _Rule:
    index: int
    column: str
    field: str
    coerce: Coerce


# Where a field's value goes in an upsert item.
_TOP, _EXTERNAL_IDS, _CUSTOM = 0, 1, 2


def _slot(field: str) -> int:
    if field in STANDARD_FIELDS or field in ATTRIBUTES:
        return _TOP
    return _EXTERNAL_IDS if field in IDENTIFIER_KINDS else _CUSTOM


class RowMapper:
    """Turns the cells of one record into an upsert item, for one header and mapping."""

    def __init__(self, rules: Sequence[_Rule], width: int, match: str) -> None:
        self.rules = tuple(rules)
        self.width = width
        self.match = match
        self.column_of = {field_pointer(rule.field): rule.column for rule in rules}
        self._plan = tuple(
            (
                rule.index,
                rule.column,
                rule.field,
                _slot(rule.field),
                None if rule.coerce is _text else rule.coerce,
            )
            for rule in rules
        )
        match_rules = [rule for rule in rules if rule.field == match]
        self.match_index = match_rules[0].index if match_rules else -1

    @property
    def fields(self) -> list[str]:
        return [rule.field for rule in self.rules]

    def column_for(self, pointer: str) -> str:
        """The column an upsert error's pointer (``custom/a1c``) came from ("" if none)."""
        return self.column_of.get(pointer, "")

    def match_text(self, cells: Sequence[str]) -> str:
        """The match key's cell, folded enough to spot the same contact twice in a batch."""
        if self.match_index < 0:
            return ""
        text = cells[self.match_index].strip()
        return text.lower() if self.match == "email" else text

    def item(self, cells: Sequence[str]) -> tuple[dict[str, Any], list[RowError]]:
        """The upsert item of one record (this runs for every row: kept lean)."""
        item: dict[str, Any] = {}
        external: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        errors: list[RowError] = []
        targets = (item, external, custom)
        for index, column, field, slot, coerce in self._plan:
            text = cells[index].strip()
            if not text:
                continue
            if coerce is not None:
                try:
                    text = coerce(text)
                except CellError as failed:
                    errors.append(RowError(column, str(failed)))
                    continue
            targets[slot][field] = text
        if external:
            item["external_ids"] = external
        if custom:
            item["custom"] = custom
        return item, errors


def plan_rows(
    header: Sequence[str],
    mapping: Mapping[str, Any],
    schema: Mapping[str, FieldSpec],
    *,
    match: str,
) -> RowMapper:
    """The mapper for a file with this header; file-level problems are ValidationFailed
    (pointing at the mapping), never quoting a header cell that no mapping named."""
    check_mapping(mapping, schema, match=match)
    explicit: Mapping[str, str | None] = mapping.get("columns", {})
    date_format = mapping.get("date_format", "iso")
    positions: dict[str, int] = {}
    for index, name in enumerate(header):
        if name in positions and name in explicit:
            raise ValidationFailed(
                "the header names this column twice", field=f"mapping/columns/{name}"
            )
        positions.setdefault(name, index)
    errors = [
        FieldError(f"mapping/columns/{column}", "the file's header has no such column")
        for column in explicit
        if column not in positions
    ]
    if errors:
        raise ValidationFailed(errors[0].message, errors=errors)
    by_key = {header_key(field): field for field in sorted(known_fields(schema))}
    rules: list[_Rule] = []
    taken: set[str] = {field for field in explicit.values() if field}
    for index, name in enumerate(header):
        if positions[name] != index:
            continue  # a repeated header name: only its first column maps by default
        if name in explicit:
            field = explicit[name]
        else:
            found = by_key.get(header_key(name))
            if found is None or found in taken:
                continue
            field = found
            taken.add(field)
        if field:
            rules.append(_Rule(index, name, field, _coercer(field, schema, date_format)))
    if not any(rule.field == match for rule in rules):
        raise ValidationFailed(
            f"no column maps to {match}, the match key: name a column {match} or map one to it",
            field="mapping/columns",
        )
    return RowMapper(rules, len(header), match)


def parse_map_options(options: Collection[str]) -> dict[str, str | None]:
    """``--map`` options of the command line: ``column=field``, ``column=`` to ignore."""
    columns: dict[str, str | None] = {}
    for option in options:
        column, sep, field = option.partition("=")
        if not sep or not column.strip():
            raise ValidationFailed(
                "write --map COLUMN=FIELD (or COLUMN= to ignore it)", field="--map"
            )
        columns[column.strip()] = field.strip() or None
    return columns
