"""Schemathesis against our own OpenAPI schema, in-process: no 5xx, and every response matches the schema.

Sessions run on the fake runtime here: this tests the API contract; the runtimes have their own tests.
Each operation gets at least 50 generated examples, authenticated with a real API key.
"""

from __future__ import annotations

from functools import cache

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@cache
def api_schema():
    from drf_spectacular.generators import SchemaGenerator

    schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    schema.app = get_wsgi_application()
    return schema


def operation_labels() -> list[str]:
    return [result.ok().label for result in api_schema().get_all_operations()]


@pytest.mark.django_db
@pytest.mark.parametrize("label", operation_labels())
def test_the_api_honours_its_schema(
    label, fake_runtime, settings_override, user, make_session, builtin_templates
):
    from sessions_app.models import ApiKey

    _, raw = ApiKey.objects.create_key(owner=user)
    headers = {"Authorization": f"Bearer {raw}"}
    # A live session of this user, so generated requests sometimes meet one that exists.
    make_session(user, status="running", id="fuzz-session")
    operation = api_schema().find_operation_by_label(label)

    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def exercise(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    exercise()


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """Calling the WSGI app directly fires request_started/finished, whose close_old_connections would
    close the test's connection mid-transaction; Django's own test client disconnects them the same way."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def settings_override(settings):
    settings.SANDBOX_MAX_SESSIONS_PER_KEY = 10000
    # Inside the test's transaction no worker can see a new session; answer at once with `creating`.
    settings.SANDBOX_CREATE_WAIT = 0
