"""Property-based fuzzing of every API operation from the OpenAPI document (schemathesis).

The document is loaded from the ASGI app itself, so what is fuzzed is what is
served. Each operation gets a bounded number of generated requests, valid and
invalid, sent with an all-scopes API key. Every answer must be a documented
status, never a 5xx; every error must be problem+json matching the documented
Problem schema; success bodies must match their schemas.

``CAREPOST_FUZZ_EXAMPLES`` sets the number of examples per operation and mode
(default 25: about 15 s on two cores); the run is derandomized so CI is
repeatable, and ``CAREPOST_FUZZ_RANDOMIZE=1`` explores fresh examples.
"""

from __future__ import annotations

import os
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from carepost.api.app import API_PREFIX
from carepost.api.problems import PROBLEM_JSON

EXAMPLES = int(os.environ.get("CAREPOST_FUZZ_EXAMPLES", "25"))
# Set CAREPOST_FUZZ_RANDOMIZE=1 to explore new examples instead of CI's fixed ones.
DERANDOMIZE = os.environ.get("CAREPOST_FUZZ_RANDOMIZE", "") != "1"
PARAMETER = re.compile(r"{(\w+)}")


class NotProblemJson(Failure):
    """A 4xx answer that is not an RFC 9457 problem document."""

    code = "CP001"
    checks = ("errors_are_problem_json",)
    kind_title = "Error is not problem+json"


@schemathesis.check
def errors_are_problem_json(ctx: CheckContext, response, case) -> bool | None:
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    body = response.json() if content_type == PROBLEM_JSON else None
    if not (
        isinstance(body, dict)
        and body.get("status") == response.status_code
        and isinstance(body.get("type"), str)
        and isinstance(body.get("detail"), str)
    ):
        raise NotProblemJson(
            operation=case.operation.label,
            message=f"{response.status_code} answered with {content_type!r}",
        )
    return True


def no_server_error(ctx: CheckContext, response, case) -> bool | None:
    assert response.status_code < 500, f"{case.operation.label}: {response.status_code}"
    return None


def invalid_data_is_rejected(ctx: CheckContext, response, case) -> bool | None:
    """schemathesis's negative-data check, also accepting 413: an oversized invalid
    body (a 10,001-item batch) is rightly refused by the request size limit first."""
    if response.status_code == 413:
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    no_server_error,
    errors_are_problem_json,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    invalid_data_is_rejected,
]


@pytest.fixture(scope="module")
def fuzz_tenant(runtime):
    """A tenant of its own (module-wide: fuzzing is noisy)."""
    from carepost.tenancy import service as tenancy
    from tests.conftest import TEST_SENDING_DOMAINS, add_verified_domains

    with runtime.database.session() as session:
        made = tenancy.create_tenant(
            session, runtime.keyring, slug=f"fuzz-{os.getpid()}", name="Fuzz Clinic"
        )
        add_verified_domains(session, made[0].id, TEST_SENDING_DOMAINS)
        return made


@pytest.fixture(scope="module")
def existing_ids(runtime, fuzz_tenant):
    """One object of each kind, so that generated requests also reach real objects
    instead of always stopping at 404."""
    from tests.security.conftest import Objects

    objects = Objects(runtime)
    ids: dict[str, str] = {}
    for target in (
        objects.user(fuzz_tenant),
        objects.api_key(fuzz_tenant),
        objects.contact(fuzz_tenant),
        objects.contact_field(fuzz_tenant),
        objects.journey_stage(fuzz_tenant),
        objects.suppression(fuzz_tenant),
        objects.contact_list(fuzz_tenant),
        objects.segment_snapshot(fuzz_tenant),
        objects.audit_event(fuzz_tenant),
        objects.import_job(fuzz_tenant),
        objects.template(fuzz_tenant),
        objects.template_layout(fuzz_tenant),
        objects.webhook_endpoint(fuzz_tenant),
        objects.sending_domain(fuzz_tenant),
        objects.dlp_rule(fuzz_tenant),
        objects.message(fuzz_tenant),
        objects.campaign(fuzz_tenant),
        objects.workflow(fuzz_tenant),
        objects.gateway_client(fuzz_tenant),
        objects.portal_item(fuzz_tenant),
    ):
        ids |= target.params
    return ids


@pytest.fixture(scope="module")
def fuzz_credentials(runtime, fuzz_tenant):
    """An all-scopes API key of the fuzzing tenant."""
    from carepost.accounts import apikeys
    from carepost.accounts.permissions import PERMISSIONS
    from carepost.audit.service import SYSTEM
    from tests.conftest import secret_value

    tenant, keys = fuzz_tenant
    with runtime.bound_session(keys) as session:
        _key, secret = apikeys.create_api_key(
            session,
            tenant_id=tenant.id,
            name="fuzzer",
            scopes=sorted(PERMISSIONS),
            creator_permissions=frozenset(PERMISSIONS),
            actor=SYSTEM,
        )
    secret_value(secret)
    secret_value(secret.split("_", 2)[2])
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi(f"{API_PREFIX}/openapi.json", app)


def _documented_operations() -> dict[tuple[str, str], bool]:
    """(method, path) of every API operation -> whether it takes any input, read at
    collection time from the API router alone (no database needed); checked against
    the served document by ``test_every_served_operation_is_fuzzed``."""
    from fastapi import FastAPI

    from carepost.api.app import api_router

    bare = FastAPI()
    bare.include_router(api_router())
    return {
        (method.upper(), path): bool(spec.get("parameters") or spec.get("requestBody"))
        for path, operations in bare.openapi()["paths"].items()
        for method, spec in operations.items()
    }


OPERATIONS = _documented_operations()
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for (method, path), takes_input in sorted(OPERATIONS.items())
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # Without any input there is nothing to make invalid.
    if takes_input or mode is GenerationMode.POSITIVE
]


def test_every_served_operation_is_fuzzed(api_schema):
    served = sorted(
        (operation.method.upper(), operation.path)
        for operation in (result.ok() for result in api_schema.get_all_operations())
    )
    assert served == sorted(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_operation_survives_fuzzing(api_schema, fuzz_credentials, existing_ids, method, path, mode):
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    parameters = {name: existing_ids[name] for name in PARAMETER.findall(path)}
    if parameters and mode is GenerationMode.POSITIVE:
        strategy = strategy | operation.as_strategy(
            generation_mode=mode, path_parameters=parameters
        )

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        case.call_and_validate(headers=fuzz_credentials, checks=CHECKS)

    run()
