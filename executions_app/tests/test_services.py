"""execution_run against real bubblewrap sandboxes: claiming, batching of output, recording of results."""

from __future__ import annotations

import io
import threading

import pytest

from executions_app.models import Execution, ExecutionOutputChunk
from executions_app.services import ExecutionError, execution_cancel, execution_run, execution_submit
from sandbox_site.testing import wait_until
from sessions_app.files import files_upload

pytestmark = [pytest.mark.django_db]
# Runs in other threads use their own database connections, so these tests commit for real.
THREADED = pytest.mark.django_db(transaction=True)
# How executions end (timeouts, crashes, cancels) goes through each backend's executor transport: those tests
# run on every real backend (real_runtime); the rest on bubblewrap processes.
EVERY_BACKEND = pytest.mark.usefixtures("real_runtime")


@pytest.fixture(autouse=True)
def _sandboxes(request):
    if "real_runtime" not in request.fixturenames:
        request.getfixturevalue("sessions_on_process")


# Prints, then runs until the test drops a file named `go` into the workspace: the test decides when it ends.
EARLY_THEN_WAIT_FOR_GO = (
    "import os, time\nprint('early', flush=True)\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n"
)


def run(session, code, language="python", **fields):
    execution = execution_submit(session=session, language=language, code=code, **fields)
    execution_run(execution.id)
    return Execution.objects.get(pk=execution.id)


def test_a_handler_result_is_recorded(running_session):
    execution = run(
        running_session,
        "def handler(event, context):\n    print('working on', event['n'])\n    return {'double': event['n'] * 2}\n",
        event={"n": 21},
    )
    assert execution.status == "completed"
    assert execution.exit_code == 0
    assert execution.return_value == {"double": 42}
    assert execution.stdout == "working on 21\n"
    assert execution.metrics["duration_ms"] > 0
    assert execution.metrics["peak_memory_mb"] > 0
    assert execution.started_at <= execution.completed_at


@pytest.mark.parametrize("value", ["0", "''", "[]", "False", "{}"])
def test_falsy_return_values_survive(running_session, value):
    execution = run(running_session, f"def handler(event, context):\n    return {value}\n")
    assert execution.status == "completed"
    assert execution.return_value == eval(value)  # noqa: S307 - literal from the parameter list


@EVERY_BACKEND
def test_failures_timeouts_and_crashes_are_told_apart(running_session):
    failed = run(running_session, "def handler(event):\n    raise ValueError('bad input')\n")
    assert failed.status == "failed" and "ValueError: bad input" in failed.error_message
    assert "Traceback" in failed.stderr
    timed_out = run(running_session, "while True: pass\n", timeout=1)
    assert timed_out.status == "timeout"
    crashed = run(running_session, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert crashed.status == "crashed"
    exited = run(running_session, "import sys\nsys.exit(3)\n")
    assert (exited.status, exited.exit_code) == ("failed", 3)


def test_output_is_stored_in_seq_numbered_batches_not_a_row_per_line(running_session):
    execution = run(running_session, "for i in range(2000):\n    print('line', i)\n")
    chunks = list(ExecutionOutputChunk.objects.filter(execution=execution).order_by("seq"))
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    assert len(chunks) < 50
    assert "".join(c.data for c in chunks if c.stream == "stdout") == execution.stdout
    assert execution.stdout.splitlines()[-1] == "line 1999"


def wait_for_first_output(execution_id: str) -> None:
    """Until the code runs in the sandbox (its first output is stored), not merely claimed by execution_run."""
    wait_until(
        lambda: ExecutionOutputChunk.objects.filter(execution_id=execution_id).exists(),
        what="the execution's first output",
    )


def test_changed_files_become_artifacts(running_session):
    execution = run(running_session, "open('report.txt', 'w').write('done')\n")
    assert {"path": "report.txt", "change": "created"}.items() <= execution.artifacts[0].items()


@THREADED
def test_an_execution_is_claimed_once(running_session):
    execution = execution_submit(session=running_session, language="python", code="print('once')")
    results = []
    threads = [threading.Thread(target=lambda: results.append(execution_run(execution.id))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result is not None for result in results) == 1
    assert Execution.objects.get(pk=execution.id).stdout == "once\n"


def test_executions_need_a_running_session(running_session):
    from sessions_app.services import session_terminate

    session_terminate(session=running_session)
    with pytest.raises(ExecutionError, match="executions need a running session"):
        execution_submit(session=running_session, language="python", code="print(1)")


def test_a_pending_execution_on_an_ended_session_is_cancelled(running_session):
    from sessions_app.services import session_terminate

    execution = execution_submit(session=running_session, language="python", code="print(1)")
    session_terminate(session=running_session)
    execution_run(execution.id)
    stored = Execution.objects.get(pk=execution.id)
    assert stored.status == "cancelled" and "terminated" in stored.error_message


@EVERY_BACKEND
@THREADED
def test_cancel_stops_a_running_execution(running_session):
    execution = execution_submit(session=running_session, language="python", code=EARLY_THEN_WAIT_FOR_GO)
    runner = threading.Thread(target=execution_run, args=(execution.id,))
    runner.start()
    wait_for_first_output(execution.id)
    execution_cancel(execution=Execution.objects.get(pk=execution.id))
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert Execution.objects.get(pk=execution.id).status == "cancelled"


def test_cancelling_a_pending_execution_never_runs_it(running_session):
    execution = execution_submit(session=running_session, language="python", code="open('ran','w')")
    execution_cancel(execution=execution)
    assert execution_run(execution.id) is None
    assert Execution.objects.get(pk=execution.id).status == "cancelled"


@EVERY_BACKEND
@THREADED
def test_terminating_the_session_mid_run_cancels_the_execution(running_session):
    from sessions_app.models import SandboxSession
    from sessions_app.services import session_terminate

    execution = execution_submit(session=running_session, language="python", code=EARLY_THEN_WAIT_FOR_GO)
    runner = threading.Thread(target=execution_run, args=(execution.id,))
    runner.start()
    wait_for_first_output(execution.id)
    session_terminate(session=SandboxSession.objects.get(pk=running_session.pk))
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert Execution.objects.get(pk=execution.id).status == "cancelled"


@THREADED
def test_output_followed_by_silence_is_stored_while_the_execution_still_runs(running_session):
    execution = execution_submit(session=running_session, language="python", code=EARLY_THEN_WAIT_FOR_GO)
    runner = threading.Thread(target=execution_run, args=(execution.id,))
    runner.start()
    # The program cannot end before the test releases it: a line stored now was stored while it ran.
    wait_for_first_output(execution.id)
    assert ExecutionOutputChunk.objects.get(execution_id=execution.id).data == "early\n"
    assert Execution.objects.get(pk=execution.id).status == "running"
    files_upload(session=running_session, path="go", fileobj=io.BytesIO(b"go"), size=2)
    runner.join(timeout=60)
    assert Execution.objects.get(pk=execution.id).stdout == "early\n"
