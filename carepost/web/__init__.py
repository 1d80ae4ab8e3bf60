"""The console: server-rendered pages (Jinja2 + HTMX) over the same services as the API.

Adding a page for a domain (say contacts) takes a table, a form and a few thin views:

1. Declare what the page shows and asks, once::

       CONTACT_TABLE = Table("Contacts", id="contact", row_id=lambda c: str(c.id), columns=(
           Column("Name", lambda c: c.display_name, phi=True),   # masked without phi:read
           Column("Added", lambda c: c.created_at, kind="time"),
       ))
       CONTACT_FORM = FormSpec(id="contact", fields=(Field("email", "Email", "email"),))

2. Write views that depend on ``page("contacts:read")`` (a signed-in person holding the
   permission, else a 403 page), call the service inside ``console.session()``, and
   render ``generic/object_list.html`` (or a template extending it) with ``table`` and
   ``rows``. On a :class:`~carepost.core.errors.CarepostError`, ``form.failed(exc)``
   puts each error next to its field and re-raises what is not about the input
   (a 404 for another organization's id). HTMX row actions answer with
   :func:`~carepost.web.views.row_response`.
3. Add the router to :data:`carepost.web.pages.ROUTERS` and the page and its actions
   to ``tests/web/console_cases.py``: the generic tests then check sign-in, role
   permissions, CSRF and tenant isolation for them.

No inline ``<script>`` or ``style=``: the Content-Security-Policy forbids them. Put
behaviour in ``static/console.js`` and styles in ``static/console.css``.
"""
