"""What is specific to the Docker backend's lifecycle: container names, labels and flags, live updates of a
container's limits, the engine's failures, the workspace modes (the lifecycle every backend has is in
contract/test_lifecycle.py)."""

from __future__ import annotations

import os

import docker.errors
import pytest

from runtime.base import Resources, RuntimeFailure, SandboxHandle
from runtime.docker import DockerRuntime
from runtime.docker.engine import engine_failure
from runtime.docker.workspace import loop_device
from runtime.tests.conftest import run_code
from runtime.tests.test_docker_support import PYTHON_IMAGE, Sandboxes, engine, require

pytestmark = pytest.mark.docker


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


def test_a_sandbox_is_a_labelled_container_with_a_sealed_run_dir(sbx):
    handle = sbx.make()
    runtime = sbx.runtime
    dirs = runtime.dirs(handle.session_id)
    assert handle.endpoint == dirs.socket
    container = engine().containers.get(handle.sandbox_id)
    assert container.name == f"sandbox-{handle.session_id}"
    assert container.labels["sandbox.managed"] == "true"
    assert container.labels["sandbox.session"] == handle.session_id
    assert container.labels["sandbox.test"] == "docker"  # spec.labels travel too
    state = runtime.inspect(handle)
    assert state.detail == "running"
    assert state.memory_mb is not None and 1 < state.memory_mb < 200
    assert state.cpu_percent is not None and state.cpu_percent >= 0
    assert os.stat(dirs.run).st_uid == 0  # sealed: the sandbox user cannot write there any more
    runtime.destroy(handle)
    _assert_gone(runtime, handle)


def test_loop_workspaces_are_copies_of_one_blank_image_per_size(sbx):
    first, second = sbx.make(disk_mb=64), sbx.make(disk_mb=64)
    if not first.workspace_path:
        pytest.skip("loop workspaces need root and loop devices; this host gets tmpfs ones")
    blanks = os.listdir(os.path.join(sbx.runtime.data_dir, "sandbox-images"))
    assert len(blanks) == 1 and "64m" in blanks[0]  # formatted once, for the first sandbox of that size
    for handle in (first, second):
        assert os.path.ismount(handle.workspace_path)
        assert os.stat(handle.workspace_path).st_uid == 1000
        assert os.listdir(handle.workspace_path) == []  # no lost+found to show up in file listings
        out = run_code(sbx.runtime, handle, "open('f', 'w').write('x'); import os; print(os.listdir('.'))")
        assert out.stdout == "['f']\n"
    assert os.listdir(second.workspace_path) == ["f"]  # copies: the first one's file is not in the second


def test_a_session_id_too_long_for_a_socket_path_gets_a_hashed_directory(sbx):
    session_id = "t" + "x" * 127  # the longest id sessions allow
    handle = sbx.make(session_id=session_id)
    assert len(handle.endpoint.encode()) <= 107 and session_id not in handle.endpoint


def test_spec_env_is_the_containers_env_and_the_token_is_not(sbx):
    handle = sbx.make(env={"GREETING": "hello"})
    attrs = engine().api.inspect_container(handle.sandbox_id)
    assert "GREETING=hello" in attrs["Config"]["Env"]
    assert not any("TOKEN" in item for item in attrs["Config"]["Env"])
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


class _CountedUpdates:
    """Counts the engine's container update calls made through one runtime's client (the call still runs)."""

    def __init__(self, runtime: DockerRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        api = runtime.docker().api
        post_json = api._post_json

        def counted(url: str, *args: object, **kwargs: object) -> object:
            if url.endswith("/update"):
                self.paths.append(url)
            return post_json(url, *args, **kwargs)

        monkeypatch.setattr(api, "_post_json", counted)


def test_update_resources_asks_the_engine_only_when_a_limit_differs(sbx, monkeypatch):
    handle = sbx.make(cpu=1.0, memory_mb=256, max_processes=64, disk_mb=100)
    updates = _CountedUpdates(sbx.runtime, monkeypatch)
    sbx.runtime.update_resources(handle, Resources(cpu=1.0, memory_mb=256, max_processes=64, disk_mb=100))
    assert updates.paths == []
    sbx.runtime.update_resources(handle, Resources(cpu=1.0, memory_mb=256, max_processes=65, disk_mb=100))
    assert len(updates.paths) == 1
    assert engine().api.inspect_container(handle.sandbox_id)["HostConfig"]["PidsLimit"] == 65
    # The limits now in force are the ones compared: asking for them again sends nothing.
    sbx.runtime.update_resources(handle, Resources(cpu=1.0, memory_mb=256, max_processes=65, disk_mb=100))
    assert len(updates.paths) == 1


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


def test_docker_stop_ends_the_executor_with_sigterm_not_sigkill(sbx):
    # How long the stop takes is measured in bench/limit_response.py.
    handle = sbx.make()
    container = engine().containers.get(handle.sandbox_id)
    container.stop(timeout=60)  # SIGTERM to tini, forwarded to the executor; SIGKILL (137) only after 60 s
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


def test_a_program_failing_in_a_helper_container_is_reported_as_such_not_as_an_unreachable_engine():
    require(PYTHON_IMAGE)
    try:
        engine().containers.run(
            PYTHON_IMAGE,
            ["python3", "-c", "import sys; sys.stderr.write('no pip here'); sys.exit(3)"],
            network_mode="none",
            remove=True,
            stdout=True,
            stderr=False,
        )
    except docker.errors.DockerException as exc:
        failure = engine_failure(exc, "cannot probe the wheel tags of image x")
    else:
        pytest.fail("the container was expected to exit with status 3")
    assert failure.permanent
    assert "exited with status 3" in failure.message and "no pip here" in failure.message
    assert "unreachable" not in failure.message


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


def test_a_container_that_exits_at_start_fails_with_its_output_without_waiting_for_the_timeout(data_dir):
    # PYTHONHOME pointing nowhere makes the interpreter die at start: the container exits at once, and the
    # create says so ("exited") instead of waiting out the startup timeout and saying "did not become healthy".
    require(PYTHON_IMAGE)
    with Sandboxes(data_dir, startup_timeout=120) as sbx, pytest.raises(RuntimeFailure) as info:
        sbx.make(session_id="tnostart", env={"PYTHONHOME": "/nonexistent"})
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
        with pytest.raises(RuntimeFailure) as info:  # a tmpfs workspace keeps the size it was made with
            sbx.runtime.update_resources(handle, Resources(disk_mb=32))
        assert info.value.permanent and "fixed size (16 MiB)" in info.value.message
