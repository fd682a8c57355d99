"""An execute-sync request's database work is a fixed handful of statements (the hot path of the API)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sessions_app.services import session_create, session_provision

pytestmark = pytest.mark.django_db

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


def statements_of(captured: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"] for q in captured.captured_queries if not q["sql"].upper().startswith(TRANSACTION_CONTROL)
    ]


def test_an_execute_sync_request_runs_at_most_six_statements(
    fake_runtime, make_api_client, user, python_template
):
    client = make_api_client(user)
    session = session_provision(session=session_create(owner=user, template=python_template))
    url = f"/api/v1/sessions/{session.client_id}/execute-sync"
    body = {"language": "python", "code": "def handler(event, context):\n    return 1\n"}
    assert client.post(url, body, format="json").status_code == 200
    with CaptureQueriesContext(connection) as captured:
        response = client.post(url, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "completed"
    # The key, the session, the owner's lock and in-flight count, the execution's row, its result.
    statements = statements_of(captured)
    assert 4 <= len(statements) <= 6, "\n".join(statements)
    # One transaction (the submit); the result is one autocommitted UPDATE.
    begins = [q for q in captured.captured_queries if q["sql"].upper().startswith("BEGIN")]
    assert len(begins) <= 1, begins
