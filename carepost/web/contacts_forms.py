"""The forms of the contact page: record a consent, add the contact to a list, change
its journey stage.

Their choices depend on the organization (its topics are purposes too; the lists the
contact is not in yet), so each spec is completed per page by the ``*_form_for``
functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carepost.consent.decision import Channel, Status
from carepost.consent.service import SOURCES
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec

if TYPE_CHECKING:
    from carepost.web.contacts_detail import ContactProfile

PURPOSE_LABELS = {
    "transactional": "Transactional / treatment",
    "marketing": "Marketing",
    "marketing_phi": "Marketing authorization (use of PHI in marketing)",
    "research": "Research",
}
SOURCE_LABELS = {
    "web_form": "Web form",
    "api": "API",
    "import": "Import",
    "paper": "Paper form",
    "preference_center": "Preference center",
    "keyword": "Text keyword",
    "one_click": "One-click unsubscribe",
    "mailto": "Unsubscribe by email",
}

CONSENT_FORM = FormSpec(
    id="consent",
    submit="Record consent",
    fields=(
        Field(
            "channel",
            "Channel",
            "select",
            required=True,
            choices=tuple(
                Choice(str(c), "Email" if c == Channel.EMAIL else "Text (SMS)") for c in Channel
            ),
        ),
        Field("purpose", "Purpose", "select", required=True),
        Field(
            "status",
            "Status",
            "select",
            required=True,
            choices=tuple(Choice(str(s), str(s).capitalize()) for s in Status),
        ),
        Field(
            "source",
            "Source",
            "select",
            required=True,
            choices=tuple(Choice(s, SOURCE_LABELS.get(s, s)) for s in SOURCES),
        ),
        Field(
            "evidence",
            "Evidence",
            "textarea",
            hint="What proves it, such as the id of the signed form. Stored encrypted.",
            attrs={"maxlength": "2000"},
        ),
        Field(
            "captured_at",
            "Given at (UTC)",
            "datetime-local",
            hint="When the person gave or withdrew it. Leave empty for now.",
        ),
    ),
)

STAGE_FORM = FormSpec(
    id="stage",
    submit="Change stage",
    fields=(Field("stage", "New stage", "select", required=True),),
)

LIST_FORM = FormSpec(
    id="membership",
    submit="Add to list",
    fields=(Field("list_id", "List", "select", required=True),),
)


def purpose_label(purpose: str) -> str:
    return PURPOSE_LABELS.get(purpose, f"Topic: {purpose}")


def consent_form_for(profile: ContactProfile, data: FormData | None = None) -> BoundForm:
    choices = [Choice(p, purpose_label(p)) for p in profile.purposes]
    spec = CONSENT_FORM.with_choices("purpose", choices)
    return spec.bind(data, channel="email", purpose="marketing", status="granted", source="paper")


def stage_form_for(profile: ContactProfile, data: FormData | None = None) -> BoundForm:
    spec = STAGE_FORM.with_choices("stage", profile.stage_options)
    return spec.bind(data, stage=profile.contact.journey_stage)


def list_form_for(profile: ContactProfile, data: FormData | None = None) -> BoundForm:
    choices = [Choice("", "Choose a list"), *profile.list_options]
    return LIST_FORM.with_choices("list_id", choices).bind(data)
