"""The organization's protection policy in the console (``/protection-policy``): the
defaults in words, the overrides counted, a form for the S/MIME trust settings
(chain required, revocation checking, trusted CA certificates) and the whole
document as JSON for everything else.

Every save goes through :func:`carepost.policy.service.put_policy` with the revision
the page was read at, so two people editing at once get a conflict instead of one
silently undoing the other, and each change is audited (``policy.update``, with the
sections changed). Errors sit next to their field (a CA certificate refused names
its position). Reading needs ``policy:read``, changing ``policy:write``. See
docs/policy.md and docs/encryption.md.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import ValidationError

from carepost.core.errors import CarepostError, ValidationFailed
from carepost.policy import service
from carepost.policy.documents import PolicyDocument
from carepost.web.console import Console, form_data, page, redirect
from carepost.web.forms import BoundForm, Choice, Field, FormData, FormSpec
from carepost.web.views import notice_for

router = APIRouter(include_in_schema=False)
Reader = Annotated[Console, Depends(page("policy:read"))]
Writer = Annotated[Console, Depends(page("policy:write"))]

NOTICES = {"saved": "The protection policy is saved. Messages prepared from now on follow it."}
PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----"
)
YES_NO = (Choice("yes", "Yes"), Choice("no", "No"))

TRUST_FORM = FormSpec(
    id="trust",
    submit="Save S/MIME trust settings",
    fields=(
        Field(
            "require_chain",
            "Require a chain to a trusted CA",
            "select",
            required=True,
            hint="Yes: a recipient's certificate is used only when it chains to a trusted "
            "CA. No: an uploaded certificate is used as you vouched for it.",
            choices=YES_NO,
        ),
        Field(
            "revocation",
            "Revocation checking",
            "select",
            required=True,
            hint="Asked by OCSP, then the CRL, and remembered for up to an hour per certificate.",
            choices=(
                Choice("off", "Off"),
                Choice("soft", "Soft-fail: use the certificate when no answer can be had"),
                Choice("hard", "Hard-fail: use it only when shown not revoked"),
            ),
        ),
        Field(
            "use_system_store",
            "Trust the system's CA certificates",
            "select",
            required=True,
            hint="The public CAs this server trusts, besides your own below.",
            choices=YES_NO,
        ),
        Field(
            "trusted_cas",
            "Your trusted CA certificates",
            "textarea",
            hint="PEM, one or more (roots or intermediates), up to 20. Leave empty for none.",
            attrs={"rows": "8", "spellcheck": "false"},
        ),
    ),
)
DOCUMENT_FORM = FormSpec(
    id="policy",
    submit="Save policy",
    fields=(
        Field(
            "document",
            "Policy document (JSON)",
            "textarea",
            required=True,
            hint="Defaults, per-domain, per-template and per-sender overrides, S/MIME trust; "
            "see docs/policy.md.",
            attrs={"rows": "24", "spellcheck": "false"},
        ),
    ),
)


def _trust_form(document: PolicyDocument) -> BoundForm:
    trust = document.smime_trust
    return TRUST_FORM.bind(
        None,
        require_chain="yes" if trust.require_chain else "no",
        revocation=trust.revocation,
        use_system_store="yes" if trust.use_system_store else "no",
        trusted_cas="".join(trust.trusted_cas),
    )


def _document_form(document: PolicyDocument) -> BoundForm:
    text = json.dumps(document.model_dump(mode="json"), indent=2)
    return DOCUMENT_FORM.bind(None, document=text)


def summary(document: PolicyDocument) -> list[tuple[str, str]]:
    """The defaults and the trust settings in words (no PHI: names and settings)."""
    rules, trust = document.defaults, document.smime_trust
    methods = {"smime": "S/MIME", "openpgp": "OpenPGP"}
    return [
        (
            "End-to-end encryption",
            " then ".join(methods[m] for m in rules.e2e_preference)
            + (", for every message" if rules.e2e_for_all else ", for PHI only")
            + ", when the recipient has a usable key",
        ),
        (
            "PHI by TLS",
            "only to verified mail servers (MTA-STS or DANE)"
            if rules.phi_tls_minimum == "verified"
            else "whenever the server offers STARTTLS",
        ),
        (
            "PHI that TLS cannot carry",
            "held for secure portal pickup"
            if rules.phi_without_tls == "portal"
            else "refused (the message fails)",
        ),
        ("PHI always end to end or portal", "yes" if rules.phi_requires_e2e else "no"),
        ("Messages without PHI", f"TLS {rules.non_phi_tls}"),
        ("Blocking detectors", ", ".join(rules.block_detectors) or "none"),
        ("Detectors that mean PHI", ", ".join(rules.phi_detectors) or "none"),
        (
            "Overrides",
            f"{len(document.domains)} domain, {len(document.templates)} template, "
            f"{len(document.senders)} sender",
        ),
        (
            "S/MIME certificates",
            ("chain to a trusted CA required" if trust.require_chain else "no chain required")
            + f"; revocation checking {trust.revocation}"
            + f"; {len(trust.trusted_cas)} CA certificate"
            + ("s" if len(trust.trusted_cas) != 1 else "")
            + " of yours"
            + (" and the system's" if trust.use_system_store else " only"),
        ),
    ]


def _page(
    console: Console,
    *,
    trust_form: BoundForm | None = None,
    document_form: BoundForm | None = None,
    revision: int | None = None,
    status: int = 200,
) -> Response:
    with console.session() as session:
        policy = service.get_policy(session, console.principal.tenant_id)
    writer = console.can("policy:write")
    return console.render(
        "protection_policy.html",
        status=status,
        title="Protection policy",
        policy=policy,
        summary=summary(policy.document),
        revision=policy.revision if revision is None else revision,
        trust_form=trust_form or (_trust_form(policy.document) if writer else None),
        document_form=document_form or (_document_form(policy.document) if writer else None),
        editable=writer,
        notice=notice_for(console.request, NOTICES),
    )


def _revision(data: FormData) -> int | None:
    value = str(data.get("revision") or "")
    return int(value) if value.isdigit() and len(value) < 10 else None


def _save(console: Console, document: PolicyDocument, revision: int | None) -> None:
    with console.session() as session:
        service.put_policy(
            session,
            console.principal.tenant_id,
            document,
            actor=console.principal.actor,
            expected_revision=revision,
        )


@router.get("/protection-policy")
def policy_page(console: Reader) -> Response:
    return _page(console)


@router.post("/protection-policy/smime-trust")
def save_trust(console: Writer, data: Annotated[FormData, Depends(form_data)]) -> Response:
    form = TRUST_FORM.bind(data)
    revision = _revision(data)
    try:
        form.validate()
        text = form.value("trusted_cas")
        pems = PEM_CERTIFICATE.findall(text)
        if text.strip() and not pems:
            raise ValidationFailed(
                "paste PEM certificates (-----BEGIN CERTIFICATE-----)", field="trusted_cas"
            )
        with console.session() as session:
            current = service.get_policy(session, console.principal.tenant_id).document
        raw = current.model_dump(mode="json")
        raw["smime_trust"] = {
            "require_chain": form.value("require_chain") == "yes",
            "revocation": form.value("revocation"),
            "use_system_store": form.value("use_system_store") == "yes",
            "trusted_cas": pems,
        }
        document = _validated(raw, "trusted_cas")
        _save(console, document, revision)
    except CarepostError as exc:
        form.failed(exc)
        return _page(console, trust_form=form, revision=revision, status=exc.status)
    return redirect(console.request, "/protection-policy?done=saved")


@router.post("/protection-policy")
def save_document(console: Writer, data: Annotated[FormData, Depends(form_data)]) -> Response:
    form = DOCUMENT_FORM.bind(data)
    revision = _revision(data)
    try:
        form.validate()
        try:
            raw = json.loads(form.value("document"))
        except json.JSONDecodeError as error:
            raise ValidationFailed(
                f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}",
                field="document",
            ) from None
        _save(console, _validated(raw, "document"), revision)
    except CarepostError as exc:
        form.failed(exc)
        return _page(console, document_form=form, revision=revision, status=exc.status)
    return redirect(console.request, "/protection-policy?done=saved")


def _validated(raw: Any, field: str) -> PolicyDocument:
    """The document, or one ValidationFailed on ``field`` saying where each fault is
    (``… (at defaults.phi_without_tls)``; a trusted CA by its position, from 1)."""
    try:
        return PolicyDocument.model_validate(raw)
    except ValidationError as invalid:
        problems = []
        for error in invalid.errors():
            loc = [str(p) for p in error["loc"]]
            message = str(error["msg"]).removeprefix("Value error, ")
            if loc[:2] == ["smime_trust", "trusted_cas"] and len(loc) > 2 and loc[2].isdigit():
                problems.append(f"certificate {int(loc[2]) + 1}: {message}")
            else:
                problems.append(f"{message} (at {'.'.join(loc) or 'the document'})")
        raise ValidationFailed("; ".join(problems[:10]), field=field) from None
