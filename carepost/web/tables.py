"""Declarative console tables: columns once, rendered by ``generic/table.html``.

A :class:`Table` is a caption and columns; each :class:`Column` reads a value from a
row object and names how to show it (``kind``) or a partial template for richer cells
(inline HTMX forms, action buttons). The same table renders a whole list and, through
``htmx/table_row.html``, the single row an HTMX action swaps back in.

Columns marked ``phi`` are masked unless the viewer holds ``phi:read``: a list page
cannot show protected health information by forgetting to check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from carepost.web.console import format_time

MASK = "•••••• (hidden)"


@dataclass(frozen=True)
class Cell:
    kind: str
    value: Any
    text: str
    href: str | None = None
    template: str | None = None


@dataclass(frozen=True)
class Column:
    """``kind``: ``text``, ``code``, ``time``, ``badge``, ``tags`` or ``number``."""

    label: str
    value: Callable[[Any], Any] = lambda row: ""
    kind: str = "text"
    link: Callable[[Any], str | None] | None = None
    template: str | None = None
    phi: bool = False
    # Columns that only some viewers may see (e.g. actions that need a write permission).
    permission: str | None = None
    # Visually hidden header text for action columns that need no visible heading.
    hidden_label: bool = False

    def cell(self, row: Any, *, can_read_phi: bool) -> Cell:
        if self.template is not None:
            return Cell("template", row, "", template=self.template)
        value = self.value(row)
        if self.phi and not can_read_phi:
            return Cell("masked", None, MASK)
        href = self.link(row) if self.link else None
        if isinstance(value, datetime) or (value is None and self.kind == "time"):
            return Cell("time", value, format_time(value), href)
        if self.kind == "tags":
            items = list(value or [])
            return Cell("tags", items, ", ".join(str(i) for i in items), href)
        return Cell(self.kind, value, "" if value is None else str(value), href)


@dataclass(frozen=True)
class Table:
    caption: str
    columns: tuple[Column, ...]
    empty: str = "Nothing here yet."
    row_id: Callable[[Any], str] | None = None
    id: str = "table"
    extra: dict[str, Any] = field(default_factory=dict)

    def visible_columns(self, permissions: frozenset[str]) -> list[Column]:
        return [c for c in self.columns if c.permission is None or c.permission in permissions]

    def cells(self, row: Any, permissions: frozenset[str]) -> list[tuple[Column, Cell]]:
        can_read_phi = "phi:read" in permissions
        return [
            (c, c.cell(row, can_read_phi=can_read_phi)) for c in self.visible_columns(permissions)
        ]

    def dom_id(self, row: Any) -> str | None:
        return f"{self.id}-{self.row_id(row)}" if self.row_id else None


@dataclass(frozen=True)
class Listing:
    """A table with its rows (and the cursor of the next page, if any)."""

    table: Table
    rows: Sequence[Any]
    next_url: str | None = None
