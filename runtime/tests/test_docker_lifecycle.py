"""DockerRuntime lifecycle on a real engine: create, inspect, list after a restart, update, destroy, clean failures."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time

import docker.errors
import pytest

from runtime.base import Resources, RuntimeFailure, SandboxHandle
from runtime.docker import DockerRuntime
from runtime.docker.workspace import loop_device
from runtime.tests.conftest import run_code
from runtime.tests.test_docker_support import PYTHON_IMAGE, Sandboxes, engine, require


@pytest.fixture
def sbx(data_dir):
    require(PYTHON_IMAGE)
    with Sandboxes(data_dir) as sandboxes:
        yield sandboxes


def _assert_gone(runtime: DockerRuntime, handle: SandboxHandle) -> None:
    with pytest.raises(docker.errors.NotFound):
        engine().containers.get(handle.sandbox_id)
    root = runtime.dirs(handle.session_id).root
    assert not os.path.exists(root)
    assert root not in open("/proc/self/mounts").read()
    assert loop_device(os.path.join(root, "workspace.img")) is None


def test_create_then_destroy_leaves_no_container_mount_or_directory(sbx):
    handle = sbx.make()
    runtime = sbx.runtime
    dirs = runtime.dirs(handle.session_id)
    assert handle.backend == "docker" and handle.node == socket.gethostname()
    assert handle.endpoint == dirs.socket and os.path.exists(handle.endpoint)
    assert runtime.executor(handle).health()["status"] == "ok"
    container = engine().containers.get(handle.sandbox_id)
    assert container.name == f"sandbox-{handle.session_id}"
    assert container.labels["sandbox.managed"] == "true"
    assert container.labels["sandbox.session"] == handle.session_id
    assert container.labels["sandbox.test"] == "docker"  # spec.labels travel too
    state = runtime.inspect(handle)
    assert state.exists and state.running and state.detail == "running"
    assert state.memory_mb is not None and 1 < state.memory_mb < 200
    assert state.cpu_percent is not None and state.cpu_percent >= 0
    assert os.listdir(dirs.run) == ["executor.sock"]  # the token file was read and removed
    assert os.stat(dirs.run).st_uid == 0  # sealed: the sandbox user cannot write there any more

    runtime.destroy(handle)

    _assert_gone(runtime, handle)
    assert runtime.inspect(handle).exists is False
    runtime.destroy(handle)  # idempotent


def test_a_new_runtime_instance_finds_and_destroys_a_running_sandbox(sbx, data_dir):
    handle = sbx.make()
    restarted = DockerRuntime(data_dir=data_dir)  # what a control-plane restart sees
    found = {h.session_id: h for h in restarted.list_managed()}
    assert set(found) == {handle.session_id}
    assert found[handle.session_id].sandbox_id == handle.sandbox_id
    assert found[handle.session_id].endpoint == handle.endpoint
    assert found[handle.session_id].workspace_path == handle.workspace_path
    assert restarted.inspect(found[handle.session_id]).running
    assert restarted.executor(handle).health()["status"] == "ok"  # the token comes from the session row
    other = DockerRuntime(data_dir=data_dir + "-elsewhere")
    assert handle.session_id not in {h.session_id for h in other.list_managed()}  # scoped by data dir

    restarted.destroy(found[handle.session_id])
    _assert_gone(restarted, handle)
    assert restarted.list_managed() == []


def test_a_claimed_warm_sandbox_is_destroyed_through_the_claiming_sessions_handle(sbx):
    warm = sbx.make(session_id="twarmrow")
    claimed = dataclasses.replace(warm, session_id="tclaimingsession")  # what the session row stores
    sbx.runtime.update_resources(claimed, Resources(memory_mb=300))
    assert run_code(sbx.runtime, claimed, "print('served')").stdout == "served\n"
    sbx.runtime.destroy(claimed)
    _assert_gone(sbx.runtime, warm)  # the warm row's directory and mount went too


def test_a_session_id_too_long_for_a_socket_path_gets_a_hashed_directory(sbx):
    session_id = "t" + "x" * 127  # the longest id sessions allow
    handle = sbx.make(session_id=session_id)
    assert len(handle.endpoint.encode()) <= 107 and session_id not in handle.endpoint
    assert sbx.runtime.executor(handle).health()["status"] == "ok"
    assert [h.endpoint for h in DockerRuntime(data_dir=sbx.runtime.data_dir).list_managed()] == [
        handle.endpoint
    ]
    sbx.runtime.destroy(handle)
    _assert_gone(sbx.runtime, handle)


def test_the_token_is_on_no_command_line_and_nowhere_in_docker_inspect(sbx):
    handle = sbx.make(env={"GREETING": "hello"})
    attrs = engine().api.inspect_container(handle.sandbox_id)
    assert handle.token not in json.dumps(attrs)
    assert "GREETING=hello" in attrs["Config"]["Env"]
    out = run_code(sbx.runtime, handle, "import os; print(os.environ['GREETING'])")
    assert out.stdout == "hello\n"


def test_the_container_runs_with_the_hardening_flags(sbx):
    handle = sbx.make(cpu=0.5, memory_mb=200, max_processes=77, disk_mb=300)
    host = engine().api.inspect_container(handle.sandbox_id)["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True and not host["Privileged"]
    assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 77
    assert host["Memory"] == host["MemorySwap"] == 200 * 1024 * 1024
    assert "/tmp" in host["Tmpfs"] and "size=" in host["Tmpfs"]["/tmp"]
    assert engine().api.inspect_container(handle.sandbox_id)["Config"]["User"] == "1000:1000"


def test_update_resources_changes_the_limits_of_a_live_container(sbx):
    handle = sbx.make(cpu=1.0, memory_mb=256, max_processes=64, disk_mb=100)
    sbx.runtime.update_resources(handle, Resources(cpu=0.5, memory_mb=384, max_processes=99, disk_mb=100))
    host = engine().api.inspect_container(handle.sandbox_id)["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 99
    assert host["Memory"] == host["MemorySwap"] == 384 * 1024 * 1024
    out = run_code(sbx.runtime, handle, "print(6 * 7)")
    assert out.status == "completed" and out.stdout == "42\n"


def test_a_workspace_never_shrinks_and_a_refused_update_changes_nothing(sbx):
    handle = sbx.make(memory_mb=256, disk_mb=100)
    with pytest.raises(RuntimeFailure) as info:
        sbx.runtime.update_resources(handle, Resources(memory_mb=512, disk_mb=50))
    assert info.value.permanent
    assert engine().api.inspect_container(handle.sandbox_id)["HostConfig"]["Memory"] == 256 * 1024 * 1024
    if not handle.workspace_path:
        return
    size = _workspace_bytes(handle)
    try:  # growing needs online ext4 resizing, i.e. CAP_SYS_RESOURCE, which some hosts' root lacks
        sbx.runtime.update_resources(handle, Resources(memory_mb=256, disk_mb=200))
    except RuntimeFailure as exc:
        assert exc.permanent and "Permission denied" in exc.message
        assert (
            _workspace_bytes(handle) == size
            and os.path.getsize(sbx.runtime.dirs(handle.session_id).image) == 100 << 20
        )
    else:
        assert _workspace_bytes(handle) > size + (90 << 20)
    assert run_code(sbx.runtime, handle, "open('x', 'w').write('ok')").status == "completed"


def _workspace_bytes(handle: SandboxHandle) -> int:
    stat = os.statvfs(handle.workspace_path)
    return stat.f_blocks * stat.f_frsize


def test_docker_stop_takes_well_under_a_second(sbx):
    handle = sbx.make()
    container = engine().containers.get(handle.sandbox_id)
    started = time.monotonic()
    container.stop(timeout=10)  # SIGTERM to tini, forwarded to the executor; SIGKILL only after 10 s
    assert time.monotonic() - started < 1.0
    container.reload()
    assert container.attrs["State"]["ExitCode"] in (0, 143)
    state = sbx.runtime.inspect(handle)
    assert state.exists and not state.running and "exited" in state.detail


def test_a_missing_image_is_a_permanent_failure_and_leaves_nothing(sbx):
    with pytest.raises(RuntimeFailure) as info:
        sbx.make(image="sandbox-template-no-such-template:latest", session_id="tmissingimage")
    assert info.value.permanent
    assert (
        "sandbox-template-no-such-template:latest" in info.value.message
        and "images/build.sh" in info.value.message
    )
    assert not os.path.exists(sbx.runtime.dirs("tmissingimage").root)
    assert sbx.runtime.list_managed() == []


def test_a_down_engine_is_a_transient_failure(data_dir):
    runtime = DockerRuntime(data_dir=data_dir, docker_url="unix:///tmp/no-such-docker.sock")
    with pytest.raises(RuntimeFailure) as info:
        runtime.check()
    assert not info.value.permanent and "/tmp/no-such-docker.sock" in info.value.message
    with pytest.raises(RuntimeFailure):
        Sandboxes(data_dir, docker_url="unix:///tmp/no-such-docker.sock").make()


def test_a_name_clash_with_a_foreign_container_is_a_clear_permanent_failure(sbx):
    require(PYTHON_IMAGE)
    foreign = engine().containers.create(PYTHON_IMAGE, name="sandbox-tclash", command=["true"])
    try:
        with pytest.raises(RuntimeFailure) as info:
            sbx.make(session_id="tclash")
        assert info.value.permanent and "sandbox-tclash" in info.value.message
        foreign.reload()  # untouched
    finally:
        foreign.remove(force=True)


def test_a_second_create_of_a_live_session_is_refused_and_a_dead_one_is_replaced(sbx):
    handle = sbx.make(session_id="ttwice")
    with pytest.raises(RuntimeFailure, match="already running") as info:
        sbx.make(session_id="ttwice")
    assert info.value.permanent
    assert sbx.runtime.executor(handle).health()["status"] == "ok"  # the live one was not disturbed
    engine().containers.get(handle.sandbox_id).kill()
    replacement = sbx.make(session_id="ttwice")
    assert replacement.sandbox_id != handle.sandbox_id
    assert sbx.runtime.executor(replacement).health()["status"] == "ok"


def test_an_executor_that_cannot_start_fails_fast_with_its_output(sbx):
    # PYTHONHOME pointing nowhere makes the interpreter die at start: the container exits at once.
    started = time.monotonic()
    with pytest.raises(RuntimeFailure) as info:
        sbx.make(session_id="tnostart", env={"PYTHONHOME": "/nonexistent"})
    assert time.monotonic() - started < 5
    assert "exited" in info.value.message and "container output" in info.value.message
    assert not os.path.exists(sbx.runtime.dirs("tnostart").root)
    assert sbx.runtime.list_managed() == []


def test_the_tmpfs_workspace_mode_works_where_loop_devices_do_not(data_dir):
    require(PYTHON_IMAGE)
    with Sandboxes(data_dir, workspace="tmpfs") as sbx:
        handle = sbx.make(disk_mb=16)
        assert handle.workspace_path == ""
        out = run_code(
            sbx.runtime, handle, "open('f.txt', 'w').write('x'); import os; print(os.listdir('.'))"
        )
        assert out.stdout == "['f.txt']\n"
        mounts = engine().containers.get(handle.sandbox_id).exec_run(["cat", "/proc/mounts"]).output.decode()
        assert any(
            line.startswith("tmpfs /workspace ") and "size=16384k" in line for line in mounts.splitlines()
        )
