"""FakeRuntime keeps the runtime contract the control plane relies on, and its injected failures are real."""

from __future__ import annotations

import io

import pytest

from runtime.base import ExecuteRequest, Resources, RuntimeFailure, SandboxSpec
from runtime.fake import FakeRuntime
from runtime.registry import get_runtime, reset_runtimes


def _spec(session_id: str = "s1", **kw) -> SandboxSpec:
    return SandboxSpec(session_id=session_id, image="python-basic", token="tok", **kw)


def _run(runtime, handle, code, language="python", **kw):
    return list(
        runtime.execute(
            handle,
            ExecuteRequest(execution_id=kw.pop("execution_id", "e1"), language=language, code=code, **kw),
        )
    )


def test_create_inspect_list_and_destroy_agree():
    runtime = FakeRuntime()
    handle = runtime.create(_spec())
    assert handle.backend == "fake" and handle.session_id == "s1" and handle.token == "tok"
    assert runtime.inspect(handle).running
    assert runtime.list_managed() == [handle]
    runtime.destroy(handle)
    runtime.destroy(handle)  # idempotent
    assert runtime.inspect(handle).exists is False
    assert runtime.list_managed() == [] and runtime.destroyed == ["s1"]


def test_it_refuses_a_second_sandbox_for_a_running_session():
    runtime = FakeRuntime()
    runtime.create(_spec())
    with pytest.raises(RuntimeFailure) as info:
        runtime.create(_spec())
    assert info.value.permanent


def test_print_streams_stdout_then_one_result():
    runtime = FakeRuntime()
    handle = runtime.create(_spec())
    events = _run(runtime, handle, "print('x')\nprint(1, 2)")
    assert [e["type"] for e in events] == ["started", "stdout", "result"]
    assert events[1]["data"] == "x\n1 2\n"
    assert events[-1]["status"] == "completed" and events[-1]["exit_code"] == 0


def test_handlers_return_literals_or_the_event_and_errors_fail():
    runtime = FakeRuntime()
    handle = runtime.create(_spec())
    echo = _run(runtime, handle, "def handler(event, context):\n    return event", event={"a": 1})
    assert echo[-1]["return_value"] == {"a": 1}
    zero = _run(runtime, handle, "def handler(event, context):\n    return 0", execution_id="e2")
    assert zero[-1]["return_value"] == 0
    failed = _run(runtime, handle, "raise ValueError('bad input')", execution_id="e3")
    assert failed[-1]["status"] == "failed" and failed[-1]["error"] == "ValueError: bad input"
    looped = _run(runtime, handle, "while True:\n    pass", execution_id="e4", timeout=2)
    assert looped[-1]["status"] == "timeout"
    js = _run(runtime, handle, "console.log('hi');", language="javascript", execution_id="e5")
    shell = _run(runtime, handle, "echo hello there", language="shell", execution_id="e6")
    assert js[1]["data"] == "hi\n" and shell[1]["data"] == "hello there\n"


def test_scripted_outcomes_and_failures_are_served_in_order():
    runtime = FakeRuntime()
    handle = runtime.create(_spec())
    runtime.script(status="crashed", stderr="Killed\n", error="killed by signal SIGKILL")
    runtime.script(session_id="s1", events=[{"type": "started"}, {"type": "stdout", "data": "partial"}])
    runtime.script(failure=RuntimeFailure("executor vanished"))
    first = _run(runtime, handle, "anything", execution_id="a")  # the session's own script goes first
    assert first[-1] == {"type": "stdout", "data": "partial"}  # a stream that breaks before its result
    second = _run(runtime, handle, "anything", execution_id="b")
    assert second[-1]["status"] == "crashed" and second[1] == {"type": "stderr", "data": "Killed\n"}
    with pytest.raises(RuntimeFailure, match="vanished"):
        _run(runtime, handle, "anything", execution_id="c")
    assert _run(runtime, handle, "print('back')", execution_id="d")[1]["data"] == "back\n"


def test_injected_create_failures_and_lost_sandboxes():
    runtime = FakeRuntime()
    runtime.fail_next_create("no capacity", permanent=False)
    with pytest.raises(RuntimeFailure, match="no capacity") as info:
        runtime.create(_spec())
    assert not info.value.permanent and runtime.list_managed() == []
    runtime.fail_next_create = "engine down"  # the attribute form: one failure
    with pytest.raises(RuntimeFailure, match="engine down"):
        runtime.create(_spec())
    handle = runtime.create(_spec())
    runtime.lose(handle)
    state = runtime.inspect(handle)
    assert state.exists and not state.running
    with pytest.raises(RuntimeFailure):
        runtime.executor(handle).health()
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
    assert [f["name"] for f in client.list_files()] == ["data"]
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
