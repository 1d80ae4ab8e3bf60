"""A workflow branch's conditions edited with the segment builder's rows.

Each condition of the branch form is either *rows* (the segment builder's row editor,
its inputs named with the prefix ``c<n>.``, :func:`carepost.web.segments_builder.read_form`)
or *json* (the rule as text, for rules the rows cannot show: deeper nesting, several
event kinds in one condition). A new condition starts as rows; an existing rule opens
as rows when :func:`~carepost.web.segments_builder.from_rule` can show it.

The form posts ``c<n>.mode`` with each condition; its buttons post
``cond_rows:<n>:<row action>`` (add, add_group, add_to:<id>, remove:<id>) and
``cond_mode:<n>:rows|json``. Before the step's model reads the form, the rows are
turned into the rule (``f.conditions.<n>.rule``), so the rest of the builder (the
model, the segment compiler's check, the graph) sees JSON as before. The segment
compiler's fault comes back next to the row it points at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from carepost.core.errors import ValidationFailed
from carepost.crypto.keyring import TenantKeys
from carepost.segments import service as segments
from carepost.web import segments_builder as sb
from carepost.web.forms import FormData
from carepost.web.segments import Vocabulary, _fill_defaults

_MODE_KEY = re.compile(r"^c(\d{1,3})\.mode$")
DOES_NOT_FIT = (
    "this rule does not fit the rows (it nests deeper, or names several event kinds in "
    "one condition): edit it as JSON"
)


@dataclass
class ConditionEditor:
    mode: str  # "rows" or "json"
    builder: sb.Builder
    row_faults: dict[int, list[str]] = field(default_factory=dict)
    note: str = ""
    count: int | None = None  # contacts the rows' rule selects now (None: not counted)


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name, "")
    if isinstance(value, list):
        value = value[-1] if value else ""
    return value if isinstance(value, str) else ""


def default_builder(vocab: Vocabulary) -> sb.Builder:
    builder = sb.Builder(items=[sb.Row(1)])
    _fill_defaults(builder, vocab)
    return builder


def read_conditions(
    data: FormData, action: str, posted: dict[str, Any], vocab: Vocabulary
) -> dict[int, ConditionEditor]:
    """The editors the form posted (by condition index). Rows become the condition's
    rule in ``posted``; a mode switch converts between rows and JSON."""
    editors: dict[int, ConditionEditor] = {}
    for key in data:
        match = _MODE_KEY.match(key)
        if match is None:
            continue
        index = int(match.group(1))
        mode = "json" if _text(data, key) == "json" else "rows"
        wanted = mode
        if action.startswith(f"cond_mode:{index}:"):
            wanted = "json" if action.endswith(":json") else "rows"
        rule_key = f"f.conditions.{index}.rule"
        preset = _text(data, f"preset.{index}")
        if mode == "rows" and not preset:
            builder = sb.read_form(data, prefix=f"c{index}.")
            if action.startswith(f"cond_rows:{index}:"):
                builder = sb.apply_action(builder, action.removeprefix(f"cond_rows:{index}:"))
            _fill_defaults(builder, vocab)
            posted[rule_key] = json.dumps(sb.to_rule(builder, vocab.specs))
            editors[index] = ConditionEditor(wanted, builder)
            continue
        # JSON (or a preset replacing the rows): the text is the truth.
        text = preset or _text(data, rule_key)
        if preset:
            posted[rule_key] = preset
        try:
            rule = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            editors[index] = ConditionEditor("json", default_builder(vocab))
            continue
        shown = sb.from_rule(rule) if rule else default_builder(vocab)
        if wanted == "rows" and shown is not None:
            sb.to_rule(shown, vocab.specs)  # each row's pointer, for the faults
            editors[index] = ConditionEditor("rows", shown)
        else:
            note = DOES_NOT_FIT if wanted == "rows" and mode == "json" else ""
            editors[index] = ConditionEditor("json", shown or default_builder(vocab), note=note)
    return editors


def remove(editors: dict[int, ConditionEditor], number: int) -> dict[int, ConditionEditor]:
    """The editors once condition ``number`` is removed (the later ones move up)."""
    return {
        (index - 1 if index > number else index): editor
        for index, editor in editors.items()
        if index != number
    }


def place_fault(editor: ConditionEditor | None, pointer: str, message: str) -> bool:
    """Put a rule fault next to its row; False when no row shows it."""
    if editor is None or editor.mode != "rows":
        return False
    target = editor.builder.row_for(pointer)
    if target is None:
        return False
    editor.row_faults.setdefault(target.id, []).append(message)
    return True


def count_rows(
    session: Session, keys: TenantKeys, editors: list[ConditionEditor], vocab: Vocabulary
) -> None:
    """The live count of each rows editor whose rule the compiler accepts (counts only,
    as the segment builder shows: no PHI)."""
    for editor in editors:
        if editor.mode != "rows" or editor.row_faults:
            continue
        try:
            editor.count = segments.count_rule(
                session, keys, sb.to_rule(editor.builder, vocab.specs)
            )
        except ValidationFailed:
            editor.count = None


def editors_for(
    step: Mapping[str, Any], known: Mapping[int, ConditionEditor], vocab: Vocabulary
) -> list[ConditionEditor]:
    """One editor per condition of the branch being edited: the posted one, else rows
    when the rule fits them (a new, empty condition: one row), else JSON."""
    found: list[ConditionEditor] = []
    for index, condition in enumerate(step.get("conditions") or []):
        if index in known:
            found.append(known[index])
            continue
        rule = condition.get("rule") if isinstance(condition, dict) else None
        if not rule:
            found.append(ConditionEditor("rows", default_builder(vocab)))
            continue
        builder = sb.from_rule(rule)
        if builder is None:
            found.append(ConditionEditor("json", default_builder(vocab)))
        else:
            sb.to_rule(builder, vocab.specs)
            found.append(ConditionEditor("rows", builder))
    return found
