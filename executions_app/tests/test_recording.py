"""execution_run records what the runtime streams, field by field, on the fake runtime with outcomes the tests
state; what real code does in a real sandbox is in test_services.py."""

from __future__ import annotations

import pytest

from executions_app.models import Execution, ExecutionOutputChunk
from executions_app.services import execution_run, execution_submit
from runtime.fake import FakeExecutorClient
from sessions_app.sandboxes import runtime_for
from sessions_app.services import session_create, session_provision

pytestmark = pytest.mark.django_db


@pytest.fixture
def live_session(fake_runtime, user, python_template):
    session = session_provision(session=session_create(owner=user, template=python_template))
    assert session.status == "running", session.status_detail
    return session


def run(session) -> Execution:
    execution = execution_submit(session=session, language="python", code="stated by the test")
    execution_run(execution.id)
    return Execution.objects.get(pk=execution.id)


def test_a_result_is_recorded_with_its_output_metrics_and_artifacts(live_session, monkeypatch):
    listings: list[str] = []
    monkeypatch.setattr(FakeExecutorClient, "list_files", lambda self, path="": listings.append(path) or [])
    runtime_for(live_session).queue_outcome(
        stdout="out\n",
        stderr="Traceback ...\nValueError: bad\n",
        status="failed",
        exit_code=1,
        error="ValueError: bad",
        files={"report.txt": b"done", "out/data.bin": bytes(1000)},
    )
    execution = run(live_session)
    assert (execution.status, execution.exit_code, execution.error_message) == (
        "failed",
        1,
        "ValueError: bad",
    )
    assert (execution.stdout, execution.stderr) == ("out\n", "Traceback ...\nValueError: bad\n")
    assert execution.metrics == {"duration_ms": 1.0, "cpu_time_ms": 1.0, "peak_memory_mb": 10.0}
    assert execution.artifacts == [
        {"path": "out/data.bin", "size": 1000, "change": "created"},
        {"path": "report.txt", "size": 4, "change": "created"},
    ]
    assert listings == []  # the sizes came with the result: the workspace is not listed again
    chunks = ExecutionOutputChunk.objects.filter(execution=execution).order_by("seq")
    assert [(c.seq, c.stream, c.data) for c in chunks] == [
        (1, "stdout", "out\n"),
        (2, "stderr", "Traceback ...\nValueError: bad\n"),
    ]


def test_a_return_value_and_the_truncation_flags_are_kept(live_session):
    runtime_for(live_session).queue_outcome(return_value=0)
    execution = run(live_session)
    assert (execution.status, execution.exit_code, execution.return_value) == ("completed", 0, 0)
    assert (execution.stdout_truncated, execution.stderr_truncated, execution.artifacts) == (False, False, [])


def test_an_executor_lost_mid_stream_ends_crashed_with_the_output_kept(live_session):
    runtime_for(live_session).queue_outcome(stdout="partial\n", breaks=True)
    execution = run(live_session)
    assert execution.status == "crashed" and execution.exit_code is None
    assert "lost the sandbox's executor" in execution.error_message
    assert "without a result" in execution.error_message
    assert execution.stdout == "partial\n"
