"""What is specific to the process backend's lifecycle: the supervisor in its cgroups under the session dir,
refusing to start without bubblewrap, the unisolated mode, host uids and cgroup limits (the lifecycle every
backend has is in contract/test_lifecycle.py)."""

from __future__ import annotations

import logging
import os
import secrets

import pytest

from runtime.base import Resources, RuntimeFailure, SandboxHandle, SandboxSpec
from runtime.process import ProcessRuntime
from runtime.process.record import alive, read_record
from runtime.tests.conftest import host_processes_mentioning, needs_bwrap, run_code


def _assert_gone(runtime: ProcessRuntime, handle: SandboxHandle, meta: dict) -> None:
    root = runtime.session_dir(handle.session_id)
    assert not os.path.exists(root)
    assert not alive(meta["pid"], meta["start_time"])
    assert host_processes_mentioning(root) == []
    for path in (meta.get("cgroup") or {}).get("paths", {}).values():
        assert not os.path.exists(path), path


@needs_bwrap
def test_a_sandbox_is_a_supervisor_inside_its_own_cgroups_under_the_session_dir(
    process_runtime, make_sandbox
):
    handle = make_sandbox()
    root = process_runtime.session_dir(handle.session_id)
    meta = read_record(root)
    assert meta is not None and alive(meta["pid"], meta["start_time"])
    assert handle.sandbox_id == handle.session_id
    assert handle.endpoint == os.path.join(root, "run", "executor.sock")
    assert handle.workspace_path == process_runtime.workspace_dir(handle.session_id)
    if process_runtime.cgroups.available:
        assert meta["cgroup"] and all(os.path.isdir(p) for p in meta["cgroup"]["paths"].values())
        procs = set()
        for path in meta["cgroup"]["paths"].values():
            with open(os.path.join(path, "cgroup.procs")) as fh:
                procs |= {int(line) for line in fh}
        assert meta["pid"] in procs  # the supervisor itself is inside, so everything it starts is too
    process_runtime.destroy(handle)
    _assert_gone(process_runtime, handle, meta)


def test_it_refuses_to_start_without_bubblewrap(data_dir):
    runtime = ProcessRuntime(data_dir=data_dir, bwrap_path="/nonexistent/bwrap")
    spec = SandboxSpec(session_id="nobwrap", image="x", token="t0ken")
    with pytest.raises(RuntimeFailure) as info:
        runtime.create(spec)
    assert info.value.permanent and "bubblewrap" in info.value.message
    with pytest.raises(RuntimeFailure):
        runtime.check()
    assert runtime.list_managed() == []
    assert not os.path.exists(runtime.session_dir("nobwrap"))


def test_unisolated_mode_runs_with_a_warning_when_allowed(data_dir, caplog):
    runtime = ProcessRuntime(data_dir=data_dir, bwrap_path="/nonexistent/bwrap", allow_unisolated=True)
    runtime.check()
    spec = SandboxSpec(session_id="open", image="x", token=secrets.token_hex(8), env={"COLOUR": "blue"})
    with caplog.at_level(logging.WARNING, logger="runtime.process"):
        handle = runtime.create(spec)
    try:
        assert any("WITHOUT isolation" in r.getMessage() for r in caplog.records)
        out = run_code(
            runtime, handle, "import os; print(os.environ['COLOUR'], os.getcwd() == os.environ['HOME'])"
        )
        assert out.status == "completed" and out.stdout == "blue True\n"
        assert os.path.realpath(os.environ.get("HOME", "/")) != handle.workspace_path
    finally:
        meta = read_record(runtime.session_dir("open"))
        runtime.destroy(handle)
    _assert_gone(runtime, handle, meta)


@needs_bwrap
def test_files_the_sandbox_writes_belong_to_the_sessions_host_uid(process_runtime, make_sandbox):
    handle = make_sandbox()
    out = run_code(process_runtime, handle, "open('made-inside.txt', 'w').write('from the sandbox')")
    assert out.status == "completed", out.result
    host_file = os.path.join(process_runtime.workspace_dir(handle.session_id), "made-inside.txt")
    # The session's host uid: the control plane's own only when it is not root.
    assert os.stat(host_file).st_uid == read_record(process_runtime.session_dir(handle.session_id))["uid"]


@needs_bwrap
def test_update_resources_rewrites_the_cgroup_limits(process_runtime, make_sandbox):
    handle = make_sandbox(memory_mb=256, max_processes=50)
    if not process_runtime.cgroups.available:
        with pytest.raises(RuntimeFailure):
            process_runtime.update_resources(handle, Resources(memory_mb=512))
        return
    process_runtime.update_resources(handle, Resources(cpu=0.5, memory_mb=512, max_processes=80))
    cgroup = read_record(process_runtime.session_dir(handle.session_id))["cgroup"]["paths"]
    if "memory" in cgroup:
        with open(os.path.join(cgroup["memory"], "memory.limit_in_bytes")) as fh:
            assert int(fh.read()) == 512 * 1024 * 1024
        with open(os.path.join(cgroup["pids"], "pids.max")) as fh:
            assert int(fh.read()) >= 80
        with open(os.path.join(cgroup["cpu"], "cpu.cfs_quota_us")) as fh:
            assert int(fh.read()) == 50_000
    state = process_runtime.inspect(handle)
    assert state.memory_mb is not None and 0 < state.memory_mb < 512
