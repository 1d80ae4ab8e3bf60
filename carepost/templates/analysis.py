"""What a template refers to, read from its syntax tree (never by rendering it).

* :func:`contact_references`: the contact fields a template reads. ``contact.x``,
  ``contact["x"]``, ``contact.custom.x`` and ``contact.custom["x"]`` name field ``x``;
  any other use of ``contact`` (passed to a macro or a filter, a computed key, a bare
  ``contact.custom``) could read any field, so it counts as *every* field.
* :func:`uses_phi`: whether those fields include a PHI one, by the tenant's field
  definitions (standard identity fields are PHI; ``journey_stage``, ``language`` and
  ``timezone`` are not). A template that uses PHI can only be sent for marketing to
  contacts with a marketing authorization (the outbox checks it).
* :func:`top_level_names`: the variables a template expects from per-message data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from jinja2 import meta, nodes

from carepost.contacts.fields import STANDARD_FIELDS
from carepost.contacts.values import FieldSpec
from carepost.templates.context import PLAIN_CONTACT_FIELDS

CUSTOM = "custom"


@dataclass
class ContactReferences:
    """Contact fields read by a template: standard ones by name, custom ones by key."""

    fields: set[str] = field(default_factory=set)
    custom: set[str] = field(default_factory=set)
    every_field: bool = False

    def update(self, other: ContactReferences) -> None:
        self.fields |= other.fields
        self.custom |= other.custom
        self.every_field |= other.every_field

    def names(self) -> list[str]:
        """Sorted, as ``contact.x`` / ``contact.custom.x``, with ``contact.*`` for all."""
        found = [f"contact.{name}" for name in self.fields]
        found += [f"contact.custom.{key}" for key in self.custom]
        if self.every_field:
            found.append("contact.*")
        return sorted(found)


def _key(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return node.arg.value if isinstance(node.arg.value, str) else None
    return None


def _is_contact(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "contact" and node.ctx == "load"


def _visit(node: nodes.Node, found: ContactReferences) -> None:
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        key = _key(node)
        inner = node.node
        if (
            key is not None
            and isinstance(inner, nodes.Getattr | nodes.Getitem)
            and _is_contact(inner.node)
            and _key(inner) == CUSTOM
        ):
            found.custom.add(key)
            return
        if key is not None and _is_contact(inner):
            if key == CUSTOM:
                found.every_field = True
            elif key in STANDARD_FIELDS or key in PLAIN_CONTACT_FIELDS:
                found.fields.add(key)
            else:
                found.custom.add(key)
            return
    if _is_contact(node):
        found.every_field = True
        return
    for child in node.iter_child_nodes():
        _visit(child, found)


def contact_references(trees: Iterable[nodes.Template]) -> ContactReferences:
    found = ContactReferences()
    for tree in trees:
        _visit(tree, found)
    return found


def uses_phi(references: ContactReferences, schema: Mapping[str, FieldSpec]) -> bool:
    """Whether the fields read include PHI. An unknown custom key counts as PHI (it may
    be defined later, and fields are PHI unless marked otherwise)."""
    if references.every_field:
        return True
    if any(STANDARD_FIELDS[name].phi for name in references.fields if name in STANDARD_FIELDS):
        return True
    return any(schema[key].phi if key in schema else True for key in references.custom)


def unknown_fields(references: ContactReferences, schema: Mapping[str, FieldSpec]) -> list[str]:
    """Custom keys the template reads that the organization has not defined."""
    return sorted(f"contact.custom.{key}" for key in references.custom if key not in schema)


def top_level_names(trees: Iterable[nodes.Template]) -> set[str]:
    names: set[str] = set()
    for tree in trees:
        names |= meta.find_undeclared_variables(tree)
    return names


def refers_to(trees: Iterable[nodes.Template], variable: str, attribute: str | None = None) -> bool:
    """Whether ``{{ variable }}`` (or ``variable.attribute``) appears in the trees."""
    for tree in trees:
        for name in tree.find_all(nodes.Name):
            if name.name == variable and attribute is None:
                return True
        if attribute is not None:
            for getattr_node in tree.find_all(nodes.Getattr):
                inner = getattr_node.node
                if (
                    isinstance(inner, nodes.Name)
                    and inner.name == variable
                    and getattr_node.attr == attribute
                ):
                    return True
    return False
