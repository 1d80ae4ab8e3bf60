"""Password sign-in: one message for every wrong guess, lockout with exponential backoff."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from carepost.accounts import service
from carepost.accounts.models import User
from carepost.api.problems import install_problem_handlers
from carepost.core.errors import AuthenticationFailed, CarepostError, RateLimited
from tests.conftest import new_password


@pytest.fixture
def account(runtime, tenant):
    """(tenant, email, password) of a fresh active analyst."""
    tenant_row, keys = tenant
    password = new_password()
    with runtime.bound_session(keys) as session:
        user, _ = service.create_user(
            session,
            tenant_id=tenant_row.id,
            email="pat@clinic.example",
            role="analyst",
            password=password,
        )
    return tenant, user.id, "pat@clinic.example", password


def attempt(runtime, tenant, email, password) -> User | CarepostError:
    """One sign-in attempt in its own transaction, committed even when it fails
    (as the sign-in page does, so failures count)."""
    tenant_row, keys = tenant
    with runtime.bound_session(keys) as session:
        try:
            return service.authenticate_password(
                session, tenant=tenant_row, email=email, password=password
            )
        except CarepostError as error:
            return error


def user_row(runtime, tenant, user_id) -> User:
    with runtime.bound_session(tenant[1]) as session:
        row = session.get(User, user_id)
        assert row is not None
        return row


def test_wrong_email_and_wrong_password_get_the_same_answer(runtime, account, audit_trail):
    tenant, _user_id, email, password = account
    wrong_password = attempt(runtime, tenant, email, new_password())
    wrong_email = attempt(runtime, tenant, "nobody@clinic.example", password)
    assert isinstance(wrong_password, AuthenticationFailed)
    assert isinstance(wrong_email, AuthenticationFailed)
    assert (wrong_password.detail, wrong_password.status, wrong_password.errors) == (
        wrong_email.detail,
        wrong_email.status,
        wrong_email.errors,
    )
    failures = audit_trail(tenant, "auth.sign_in")
    assert [e.outcome for e in failures] == ["failure", "failure"]
    assert password not in repr([(e.details, e.reason) for e in failures])


def test_five_failures_are_free_then_the_account_locks(runtime, account, clock):
    tenant, user_id, email, password = account
    for _ in range(5):
        assert isinstance(attempt(runtime, tenant, email, new_password()), AuthenticationFailed)
    locked = attempt(runtime, tenant, email, password)
    assert isinstance(locked, RateLimited), "even the right password waits out the lock"
    row = user_row(runtime, tenant, user_id)
    assert row.failed_sign_ins == 5
    remaining = (row.locked_until - clock.now).total_seconds()
    assert remaining == 60
    assert remaining <= locked.retry_after <= remaining + 1


def test_the_lock_doubles_with_each_further_failure(runtime, account, clock):
    tenant, user_id, email, _password = account
    for _ in range(5):
        attempt(runtime, tenant, email, new_password())
    for expected_lock in (120, 240, 480):
        # Wait out the current lock, then fail once more.
        clock.now = user_row(runtime, tenant, user_id).locked_until
        clock.advance(seconds=1)
        assert isinstance(attempt(runtime, tenant, email, new_password()), AuthenticationFailed)
        locked = attempt(runtime, tenant, email, new_password())
        assert isinstance(locked, RateLimited)
        assert expected_lock - 1 <= locked.retry_after <= expected_lock + 1


def test_lock_is_capped_at_an_hour(runtime, account, clock):
    tenant, user_id, email, _password = account
    for _ in range(12):
        clock.now = user_row(runtime, tenant, user_id).locked_until or clock.now
        clock.advance(seconds=1)
        attempt(runtime, tenant, email, new_password())
    locked = attempt(runtime, tenant, email, new_password())
    assert isinstance(locked, RateLimited) and locked.retry_after <= 3601


def test_retry_after_is_honest(runtime, account, clock):
    tenant, _user_id, email, password = account
    for _ in range(5):
        attempt(runtime, tenant, email, new_password())
    locked = attempt(runtime, tenant, email, password)
    assert isinstance(locked, RateLimited)
    clock.advance(seconds=locked.retry_after - 2)
    assert isinstance(attempt(runtime, tenant, email, password), RateLimited)
    clock.advance(seconds=2)
    assert isinstance(attempt(runtime, tenant, email, password), User)


def test_success_resets_the_failure_count(runtime, account, clock):
    tenant, user_id, email, password = account
    for _ in range(4):
        attempt(runtime, tenant, email, new_password())
    assert isinstance(attempt(runtime, tenant, email, password), User)
    row = user_row(runtime, tenant, user_id)
    assert row.failed_sign_ins == 0 and row.locked_until is None
    for _ in range(4):
        attempt(runtime, tenant, email, new_password())
    assert isinstance(attempt(runtime, tenant, email, password), User)


def test_locked_attempts_are_audited(runtime, account, audit_trail):
    tenant, _user_id, email, password = account
    for _ in range(5):
        attempt(runtime, tenant, email, new_password())
    attempt(runtime, tenant, email, password)
    outcomes = [e.outcome for e in audit_trail(tenant, "auth.sign_in")]
    assert outcomes == ["failure"] * 5 + ["locked"]


def test_a_lock_becomes_429_with_retry_after(runtime, account):
    """The problem handler turns RateLimited into 429 and the Retry-After header."""
    tenant, _user_id, email, password = account
    for _ in range(5):
        attempt(runtime, tenant, email, new_password())
    locked = attempt(runtime, tenant, email, password)
    assert isinstance(locked, RateLimited)
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/sign-in")
    def sign_in() -> None:
        raise locked

    response = TestClient(app).post("/sign-in")
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(locked.retry_after)
    assert response.headers["content-type"] == "application/problem+json"


def test_disabled_account_cannot_sign_in(runtime, account):
    tenant, user_id, email, password = account
    with runtime.bound_session(tenant[1]) as session:
        session.get(User, user_id).status = "disabled"
    refused = attempt(runtime, tenant, email, password)
    assert isinstance(refused, AuthenticationFailed)
