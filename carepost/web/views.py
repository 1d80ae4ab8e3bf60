"""Generic answers for console views, so a new list or object page is a few lines.

- :func:`row_response`: an HTMX row action's answer, the updated table row plus an
  announced notice (``HX-Trigger: carepost:notice``, shown by static/console.js in the
  page's live region);
- :func:`alert_response`: a refusal or error shown in that live region instead;
- :func:`notice_for`: the fixed confirmation a page shows after a redirect
  (``?done=saved``); only messages from the view's own table are ever shown, never
  text from the URL.

A domain adds a CRUD page by declaring a :class:`~carepost.web.tables.Table` and a
:class:`~carepost.web.forms.FormSpec`, rendering ``generic/object_list.html`` (or a
template extending it) and answering row actions with these helpers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from carepost.web.console import Console
from carepost.web.tables import Table

NOTICE_EVENT = "carepost:notice"


def notice_header(message: str) -> dict[str, str]:
    # json.dumps escapes non-ASCII, so the header stays Latin-1 safe.
    return {"HX-Trigger": json.dumps({NOTICE_EVENT: message})}


def row_response(
    console: Console, table: Table, row: Any, message: str = "", **context: Any
) -> Response:
    return console.render(
        "htmx/table_row.html",
        headers=notice_header(message) if message else None,
        t=table,
        row=row,
        **context,
    )


def alert_response(console: Console, message: str, *, status: int = 200) -> Response:
    return console.render(
        "htmx/alert.html",
        status=status,
        headers={"HX-Retarget": "#messages", "HX-Reswap": "innerHTML"},
        heading=message,
        advice="",
        detail="",
        status_code=status,
    )


def notice_for(request: Request, notices: Mapping[str, str]) -> str:
    return notices.get(request.query_params.get("done", ""), "")
