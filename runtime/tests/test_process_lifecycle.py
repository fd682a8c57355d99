"""ProcessRuntime lifecycle under real bubblewrap: create, inspect, list after restart, destroy, failure."""

from __future__ import annotations

import logging
import os
import secrets
import socket

import pytest

from runtime.base import Resources, RuntimeFailure, SandboxHandle, SandboxSpec
from runtime.process import ProcessRuntime
from runtime.process.record import alive, read_record
from runtime.tests.conftest import host_processes_mentioning, needs_bwrap, run_code


def _cgroups_named(runtime: ProcessRuntime, session_id: str) -> list[str]:
    assert runtime.cgroups is not None
    bases = [b for b in runtime.cgroups.bases.values() if os.path.isdir(b)]  # pruned when empty
    return [n for b in bases for n in os.listdir(b) if n.endswith("-" + session_id)]


def _assert_gone(runtime: ProcessRuntime, handle: SandboxHandle, meta: dict) -> None:
    root = runtime.session_dir(handle.session_id)
    assert not os.path.exists(root)
    assert not alive(meta["pid"], meta["start_time"])
    assert host_processes_mentioning(root) == []
    for path in (meta.get("cgroup") or {}).get("paths", {}).values():
        assert not os.path.exists(path), path


@needs_bwrap
def test_create_then_destroy_leaves_no_process_cgroup_or_directory(process_runtime, make_sandbox):
    handle = make_sandbox()
    root = process_runtime.session_dir(handle.session_id)
    meta = read_record(root)
    assert meta is not None and alive(meta["pid"], meta["start_time"])
    assert handle.backend == "process" and handle.sandbox_id == handle.session_id
    assert handle.endpoint == os.path.join(root, "run", "executor.sock")
    assert handle.workspace_path == process_runtime.workspace_dir(handle.session_id)
    assert handle.node == socket.gethostname()
    if process_runtime.cgroups.available:
        assert meta["cgroup"] and all(os.path.isdir(p) for p in meta["cgroup"]["paths"].values())
        procs = set()
        for path in meta["cgroup"]["paths"].values():
            with open(os.path.join(path, "cgroup.procs")) as fh:
                procs |= {int(line) for line in fh}
        assert meta["pid"] in procs  # the supervisor itself is inside, so everything it starts is too
    state = process_runtime.inspect(handle)
    assert state.exists and state.running

    process_runtime.destroy(handle)

    _assert_gone(process_runtime, handle, meta)
    assert process_runtime.inspect(handle).exists is False
    process_runtime.destroy(handle)  # idempotent


@needs_bwrap
def test_a_new_runtime_instance_finds_and_destroys_a_running_sandbox(data_dir, make_sandbox):
    first = ProcessRuntime(data_dir=data_dir)
    handle = make_sandbox(runtime=first)
    meta = read_record(first.session_dir(handle.session_id))

    restarted = ProcessRuntime(data_dir=data_dir)  # what a control-plane restart sees
    found = {h.session_id: h for h in restarted.list_managed()}
    assert set(found) == {handle.session_id}
    assert found[handle.session_id].endpoint == handle.endpoint
    assert restarted.inspect(found[handle.session_id]).running
    client = restarted.executor(handle)  # the token comes from the session row, not from disk
    assert client.health()["status"] == "ok"

    restarted.destroy(found[handle.session_id])
    _assert_gone(restarted, handle, meta)
    assert restarted.list_managed() == []


@needs_bwrap
def test_list_managed_includes_a_sandbox_whose_executor_died(process_runtime, make_sandbox):
    handle = make_sandbox()
    meta = read_record(process_runtime.session_dir(handle.session_id))
    os.killpg(meta["pgid"], 9)
    process_runtime._children[handle.session_id].wait(5)
    assert [h.session_id for h in process_runtime.list_managed()] == [handle.session_id]
    state = process_runtime.inspect(handle)
    assert state.exists and not state.running
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
def test_a_failed_start_cleans_up_and_reports_the_executors_stderr(data_dir):
    runtime = ProcessRuntime(data_dir=data_dir, max_output=-1)  # the executor refuses this option
    with pytest.raises(RuntimeFailure) as info:
        runtime.create(SandboxSpec(session_id="broken", image="x", token="t0ken"))
    assert "--max-output must be zero or more" in info.value.message
    assert not os.path.exists(runtime.session_dir("broken"))
    assert host_processes_mentioning(runtime.session_dir("broken")) == []
    if runtime.cgroups.available:
        assert _cgroups_named(runtime, "broken") == []


@needs_bwrap
def test_a_start_that_times_out_leaves_nothing_behind(data_dir):
    runtime = ProcessRuntime(data_dir=data_dir, startup_timeout=0.0)
    with pytest.raises(RuntimeFailure, match="did not become healthy"):
        runtime.create(SandboxSpec(session_id="slow", image="x", token="t0ken"))
    assert not os.path.exists(runtime.session_dir("slow"))
    assert host_processes_mentioning(runtime.session_dir("slow")) == []
    if runtime.cgroups.available:
        assert _cgroups_named(runtime, "slow") == []


@needs_bwrap
def test_it_refuses_a_second_sandbox_for_a_running_session(process_runtime, make_sandbox):
    handle = make_sandbox()
    with pytest.raises(RuntimeFailure, match="already running"):
        process_runtime.create(SandboxSpec(session_id=handle.session_id, image="x", token="other"))
    assert process_runtime.inspect(handle).running


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", ".hidden", "x" * 200])
def test_it_refuses_session_ids_that_are_not_plain_names(data_dir, bad):
    runtime = ProcessRuntime(data_dir=data_dir)
    with pytest.raises(RuntimeFailure) as info:
        runtime.create(SandboxSpec(session_id=bad, image="x", token="t"))
    assert info.value.permanent
    assert os.listdir(data_dir) in ([], ["sandboxes"])


@needs_bwrap
def test_it_refuses_environment_that_would_steer_the_daemon(data_dir):
    runtime = ProcessRuntime(data_dir=data_dir)
    for env in ({"LD_PRELOAD": "/workspace/x.so"}, {"SANDBOX_EXECUTOR_TOKEN": "x"}, {"bad name": "1"}):
        with pytest.raises(RuntimeFailure) as info:
            runtime.create(SandboxSpec(session_id="envcheck", image="x", token="t", env=env))
        assert info.value.permanent
    assert runtime.list_managed() == []


@needs_bwrap
def test_spec_env_reaches_code_and_home_and_cwd_are_the_workspace(process_runtime, make_sandbox):
    handle = make_sandbox(env={"GREETING": "hello world", "PYTHONDONTWRITEBYTECODE": "1"})
    out = run_code(
        process_runtime,
        handle,
        "\n".join(
            [
                "import os, pathlib",
                "print(os.environ['GREETING'])",
                "print(os.environ['HOME'], os.getcwd(), os.environ.get('PYTHONDONTWRITEBYTECODE'))",
                "pathlib.Path('made-inside.txt').write_text('from the sandbox')",
            ]
        ),
    )
    assert out.status == "completed", out
    assert out.stdout == "hello world\n/workspace /workspace 1\n"
    host_file = os.path.join(process_runtime.workspace_dir(handle.session_id), "made-inside.txt")
    with open(host_file) as fh:  # written by sandboxed code, readable by the control plane
        assert fh.read() == "from the sandbox"
    # Owned by the session's host uid: the control plane's own only when it is not root.
    assert os.stat(host_file).st_uid == read_record(process_runtime.session_dir(handle.session_id))["uid"]
    shell = run_code(process_runtime, handle, 'echo "$GREETING from $(pwd)"', language="shell")
    assert shell.stdout == "hello world from /workspace\n"
    node = run_code(
        process_runtime, handle, "console.log(process.env.GREETING, process.cwd())", language="javascript"
    )
    assert node.status == "completed" and node.stdout == "hello world /workspace\n", node


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
