"""Email templates: the rendering sandbox, layouts, versions, A/B variants and previews.

The outbox renders through :mod:`carepost.templates.rendering` (``render_template``,
``render_raw``); see docs/templates.md.
"""
