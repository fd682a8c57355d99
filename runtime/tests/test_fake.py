"""FakeRuntime keeps the runtime contract the control plane relies on, and what a test states is what happens."""

from __future__ import annotations

import io

import pytest

from runtime.base import ExecuteRequest, Resources, RuntimeFailure, SandboxSpec
from runtime.events import ExecutionResult, ExecutionStarted, FileChange, OutputChunk
from runtime.fake import FakeRuntime
from runtime.registry import get_runtime, reset_runtimes


def _spec(session_id: str = "s1") -> SandboxSpec:
    return SandboxSpec(session_id=session_id, image="python-basic", token="tok")


def _run(runtime, handle, execution_id="e1"):
    request = ExecuteRequest(execution_id=execution_id, language="python", code="anything at all")
    return list(runtime.execute(handle, request))


def test_create_inspect_list_and_destroy_agree():
    runtime = FakeRuntime()
    handle = runtime.create(_spec())
    assert handle.backend == "fake" and handle.session_id == "s1" and handle.token == "tok"
    assert runtime.inspect(handle).running
    assert runtime.list_managed() == [handle]
    with pytest.raises(RuntimeFailure) as info:
        runtime.create(_spec())  # a second sandbox for a running session
    assert info.value.permanent
    runtime.destroy(handle)
    runtime.destroy(handle)  # idempotent
    assert runtime.inspect(handle).exists is False and runtime.list_managed() == []


def test_with_nothing_queued_an_execution_completes_silently():
    runtime = FakeRuntime()
    events = _run(runtime, runtime.create(_spec()))
    assert events == [
        ExecutionStarted(execution_id="e1", pid=2),
        ExecutionResult(execution_id="e1", status="completed", exit_code=0, metrics=events[-1].metrics),
    ]
    assert runtime.sandboxes["s1"].executions[0].code == "anything at all"


def test_queued_outcomes_are_served_in_order_the_sessions_own_first():
    runtime = FakeRuntime()
    handle = runtime.create(_spec())
    runtime.queue_outcome(
        stdout="out\n", stderr="Killed\n", status="crashed", error="killed by signal SIGKILL"
    )
    runtime.queue_outcome("s1", return_value=0)
    runtime.queue_outcome("other-session", return_value="not for s1")

    first = _run(runtime, handle, "a")
    assert isinstance(first[-1], ExecutionResult) and first[-1].return_value == 0
    second = _run(runtime, handle, "b")
    assert second[1:3] == [OutputChunk("stdout", "out\n"), OutputChunk("stderr", "Killed\n")]
    assert (second[-1].status, second[-1].exit_code, second[-1].error) == (
        "crashed",
        -9,
        "killed by signal SIGKILL",
    )
    assert _run(runtime, handle, "c")[-1].return_value is None  # the other session's outcome stays queued


def test_an_outcomes_files_land_in_the_workspace_and_in_the_result_with_sizes():
    runtime = FakeRuntime()
    handle = runtime.create(_spec())
    client = runtime.executor(handle)
    client.upload("keep.txt", io.BytesIO(b"v1"), 2)
    client.upload("old.txt", io.BytesIO(b"bye"), 3)
    runtime.queue_outcome(files={"out/new.json": b"{}", "keep.txt": b"v1 and v2", "old.txt": None})
    assert _run(runtime, handle)[-1].files == (
        FileChange("out/new.json", "created", 2),
        FileChange("keep.txt", "modified", 9),
        FileChange("old.txt", "deleted", None),
    )
    assert b"".join(client.download("keep.txt")) == b"v1 and v2"
    with pytest.raises(FileNotFoundError):
        client.download("old.txt")


def test_refusals_raise_at_execute_and_a_broken_stream_raises_mid_way():
    runtime = FakeRuntime()
    handle = runtime.create(_spec())
    runtime.queue_outcome(failure=RuntimeFailure("executor vanished"))
    with pytest.raises(RuntimeFailure, match="vanished"):
        runtime.execute(handle, ExecuteRequest(execution_id="a", language="python", code="x"))
    with pytest.raises(RuntimeFailure, match="exists") as duplicate:
        runtime.execute(handle, ExecuteRequest(execution_id="a", language="python", code="x"))
    assert duplicate.value.permanent

    runtime.queue_outcome(stdout="partial", breaks=True)
    events = runtime.execute(handle, ExecuteRequest(execution_id="b", language="python", code="x"))
    assert [next(events), next(events)] == [ExecutionStarted("b", 2), OutputChunk("stdout", "partial")]
    with pytest.raises(RuntimeFailure, match="without a result"):
        next(events)


def test_injected_create_failures_and_lost_sandboxes():
    runtime = FakeRuntime()
    runtime.fail_next_create("no capacity", times=2)
    for _ in range(2):
        with pytest.raises(RuntimeFailure, match="no capacity") as info:
            runtime.create(_spec())
        assert not info.value.permanent
    handle = runtime.create(_spec())
    runtime.lose(handle)
    state = runtime.inspect(handle)
    assert state.exists and not state.running
    with pytest.raises(RuntimeFailure, match="unreachable"):
        _run(runtime, handle)
    runtime.lose(handle, vanish=True)
    assert runtime.inspect(handle).exists is False and runtime.list_managed() == []


def test_a_wrong_token_is_refused_like_a_401():
    runtime = FakeRuntime()
    handle = runtime.create(_spec())
    forged = type(handle)(**{**handle.__dict__, "token": "wrong"})
    with pytest.raises(RuntimeFailure) as info:
        runtime.executor(forged).health()
    assert info.value.permanent


def test_files_round_trip_through_the_fake_client():
    runtime = FakeRuntime()
    client = runtime.executor(runtime.create(_spec()))
    assert client.upload("data/in.csv", io.BytesIO(b"a,b\n"), 4) == {"path": "data/in.csv", "size": 4}
    assert [(f["name"], f["is_dir"]) for f in client.list_files()] == [("data", True)]
    assert client.list_files("data")[0]["size"] == 4
    assert b"".join(client.download("data/in.csv")) == b"a,b\n"
    client.delete("data")
    with pytest.raises(FileNotFoundError):
        client.download("data/in.csv")


def test_update_resources_and_the_registry_name():
    reset_runtimes()
    runtime = get_runtime("fake")
    assert isinstance(runtime, FakeRuntime)
    handle = runtime.create(_spec("r1"))
    runtime.update_resources(handle, Resources(memory_mb=1024))
    assert runtime.sandboxes["r1"].resources.memory_mb == 1024
    reset_runtimes()
