"""Declarative console forms: fields once, rendered accessibly, errors next to their field.

A :class:`FormSpec` lists the fields of a form (a module constant); :meth:`FormSpec.bind`
pairs it with the submitted values. When a service raises a :class:`CarepostError`,
:meth:`BoundForm.failed` files each ``FieldError`` under the field it names (service
field names, or JSON pointers such as ``#/email``), and anything it cannot place in
the error summary at the top of the form. The templates in ``macros/forms.html``
render labels, hints, ``aria-describedby``, ``aria-invalid`` and ``autofocus`` on the
first field in error, so the person lands on what to fix, with or without JavaScript.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from carepost.core.errors import (
    CarepostError,
    FieldError,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)

FormData = Mapping[str, str | list[str]]


@dataclass(frozen=True)
class Choice:
    value: str
    label: str
    hint: str = ""


@dataclass(frozen=True)
class Field:
    """One input. ``kind`` is an HTML input type, or ``textarea``, ``select``, ``checkboxes``."""

    name: str
    label: str
    kind: str = "text"
    hint: str = ""
    required: bool = False
    choices: tuple[Choice, ...] = ()
    autocomplete: str = "off"
    attrs: Mapping[str, str] = field(default_factory=dict)
    # Other names a service may use for this field's errors (``password`` -> ``new_password``).
    aliases: tuple[str, ...] = ()
    # Never echoed back into the page (one-time codes); passwords never are either.
    sensitive: bool = False

    @property
    def secret(self) -> bool:
        return self.kind == "password" or self.sensitive


@dataclass(frozen=True)
class FormSpec:
    """The fields of a form; bind it to values to render or validate it."""

    id: str
    fields: tuple[Field, ...]
    submit: str = "Save"
    # Say "(optional)" after optional labels; filter forms, where every field is, don't.
    mark_optional: bool = True

    def field(self, name: str) -> Field:
        for item in self.fields:
            if item.name == name:
                return item
        raise KeyError(name)

    def with_choices(self, name: str, choices: Iterable[Choice]) -> FormSpec:
        """The same form with ``name``'s choices replaced (choices that depend on who asks)."""
        fields = tuple(
            dataclasses.replace(f, choices=tuple(choices)) if f.name == name else f
            for f in self.fields
        )
        return dataclasses.replace(self, fields=fields)

    def bind(self, data: FormData | None = None, **initial: str | list[str]) -> BoundForm:
        values: dict[str, str | list[str]] = dict(initial)
        for item in self.fields:
            if data is not None and item.name in data and not item.secret:
                values[item.name] = data[item.name]
            elif data is not None and item.kind == "checkboxes":
                values[item.name] = []
        return BoundForm(self, values)


def _field_name(pointer: str) -> str:
    """``#/body/email`` or ``email`` -> ``email``."""
    return pointer.removeprefix("#/").rsplit("/", 1)[-1].rsplit(".", 1)[-1]


def is_form_error(exc: CarepostError) -> bool:
    """Errors the person can fix by changing what they typed. A missing object or a
    refusal that names no field is a page-level answer (404, 403), not a form error."""
    if isinstance(exc, NotFound):
        return False
    if isinstance(exc, PermissionDenied):
        return bool(exc.errors)
    return exc.status < 500


@dataclass
class BoundForm:
    spec: FormSpec
    values: dict[str, str | list[str]]
    errors: dict[str, str] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def fields(self) -> tuple[Field, ...]:
        return self.spec.fields

    @property
    def invalid(self) -> bool:
        return bool(self.errors or self.summary)

    def value(self, name: str) -> str:
        value = self.values.get(name, "")
        return value[0] if isinstance(value, list) and value else str(value or "")

    def selected(self, name: str) -> list[str]:
        value = self.values.get(name, [])
        return list(value) if isinstance(value, list) else ([value] if value else [])

    def error(self, name: str) -> str:
        return self.errors.get(name, "")

    def input_id(self, name: str) -> str:
        return f"{self.spec.id}-{name}"

    @property
    def first_invalid(self) -> str | None:
        for item in self.spec.fields:
            if item.name in self.errors:
                return item.name
        return None

    def add_error(self, name: str | None, message: str) -> None:
        names = {f.name: f.name for f in self.spec.fields}
        names.update({alias: f.name for f in self.spec.fields for alias in f.aliases})
        target = names.get(name or "")
        if target is None:
            self.summary.append(message)
        elif target not in self.errors:
            self.errors[target] = message

    def problems(self) -> list[FieldError]:
        """The rules the browser applies (required, maxlength), checked again here: a
        form can be posted without a browser."""
        found: list[FieldError] = []
        for item in self.spec.fields:
            if item.secret or item.kind == "checkboxes":
                continue
            value = self.value(item.name)
            limit = item.attrs.get("maxlength", "")
            if item.required and not value.strip():
                found.append(FieldError(item.name, f"enter the {item.label.lower()}"))
            elif limit.isdigit() and len(value) > int(limit):
                found.append(FieldError(item.name, f"use at most {limit} characters"))
        return found

    def validate(self, *more: FieldError) -> None:
        """Raise ValidationFailed naming every field at fault, if any is."""
        found = self.problems() + list(more)
        if found:
            raise ValidationFailed("check the highlighted fields", errors=found)

    def failed(self, exc: CarepostError) -> BoundForm:
        """File a service error under its fields; re-raise errors that are not about input."""
        if not is_form_error(exc):
            raise exc
        if not exc.errors:
            self.add_error(None, exc.detail)
        for error in exc.errors:
            self.add_error(_field_name(error.field), error.message)
        return self
