"""A deep data dir and a 64-character session id still give a reachable sandbox (sun_path is 108 bytes)."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from runtime.base import ExecuteRequest, SandboxSpec
from runtime.events import ExecutionResult, OutputChunk
from runtime.process import ProcessRuntime
from runtime.tests.conftest import needs_bwrap


@needs_bwrap
def test_a_socket_path_past_the_unix_limit_is_reachable():
    data_dir = tempfile.mkdtemp(dir="/tmp", prefix="deep-data-dir-" + "d" * 50)
    runtime = ProcessRuntime(data_dir=data_dir)
    handle = runtime.create(SandboxSpec(session_id="s" * 64, image="-", token="long-path-token"))
    try:
        assert len(handle.endpoint.encode()) > 108
        events = list(
            runtime.execute(handle, ExecuteRequest(execution_id="e1", language="python", code="print(7)"))
        )
        assert isinstance(events[-1], ExecutionResult) and events[-1].status == "completed"
        assert [e.data for e in events if isinstance(e, OutputChunk)] == ["7\n"]
    finally:
        runtime.destroy(handle)
        shutil.rmtree(data_dir, ignore_errors=True)
    assert runtime.list_managed() == []


def test_an_unreachable_long_path_is_a_clear_failure():
    from runtime.base import RuntimeFailure
    from runtime.client import ExecutorClient

    client = ExecutorClient("/tmp/" + "n" * 120 + "/executor.sock", "token", connect_timeout=1)
    with pytest.raises(RuntimeFailure, match="executor"):
        client.health()
