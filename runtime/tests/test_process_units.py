"""The process backend's pure parts: the bwrap command line, environment checks, rlimits, cgroup files."""

from __future__ import annotations

import os
import sys

import pytest

from runtime import bwrap as bw
from runtime.base import Resources
from runtime.limits import address_space_bytes, executor_limit_args
from runtime.process.cgroups import PIDS_OVERHEAD, CgroupManager, SandboxCgroup, _v1_mounts
from runtime.process.record import alive, start_time

PATHS = bw.SandboxPaths(workspace="/data/s/ws", run="/data/s/run", packages="/data/s/pkg", etc="/data/s/etc")


def _command(**kw):
    options, command = bw.bwrap_command(
        paths=PATHS,
        interpreter=bw.Interpreter("/usr/bin/python3.11"),
        executor_package="/src/runtime/executor",
        executor_args=["--socket", "/run/sandbox/executor.sock"],
        env=kw.pop("env", {"FOO": "bar"}),
        **kw,
    )
    return options, command


def _pairs(options, flag):
    return [tuple(options[i + 1 : i + 3]) for i, o in enumerate(options) if o == flag]


def test_the_sandbox_gets_every_namespace_and_no_network_or_capabilities():
    options, _ = _command()
    for flag in (
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ):
        assert flag in options
    assert "--share-net" not in options
    assert options[options.index("--cap-drop") + 1] == "ALL"
    assert options[options.index("--hostname") + 1] == "sandbox"
    assert options[-4:] == ["--remount-ro", "/", "--chdir", bw.EXECUTOR_ROOT]


def test_only_the_sessions_own_directories_are_writable_and_etc_is_never_bound_whole():
    options, _ = _command()
    assert sorted(_pairs(options, "--bind")) == [
        ("/data/s/run", "/run/sandbox"),
        ("/data/s/ws", "/workspace"),
    ]
    ro = dict(_pairs(options, "--ro-bind"))
    assert ro["/data/s/pkg"] == "/opt/packages" and ro["/usr"] == "/usr"
    assert ro["/src/runtime/executor"] == "/opt/sandbox/executor"
    assert "/etc" not in ro and "/etc/shadow" not in ro and "/etc/ssl" not in ro
    assert "/data/s/etc/passwd" in ro
    assert not any(src.startswith(("/root", "/home", "/work")) for src in ro)
    assert ("/tmp" in options) and options[options.index("--tmpfs") + 1] == "/tmp"


def test_the_environment_is_cleared_then_set_and_the_daemon_ignores_python_variables():
    options, command = _command(env={"FOO": "bar", "PYTHONPATH": "/workspace"})
    env = dict(_pairs(options, "--setenv"))
    assert env["HOME"] == "/workspace" and env["FOO"] == "bar" and env["PYTHONPATH"] == "/workspace"
    assert options.index("--clearenv") < options.index("--setenv")
    assert command[:6] == ["/usr/bin/python3.11", "-E", "-s", "-m", "executor", "--socket"]


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "LD_AUDIT", "HOME", "PATH", "SANDBOX_EXECUTOR_TOKEN", "1X", "A-B"]
)
def test_env_that_would_steer_the_daemon_is_refused(name):
    with pytest.raises(ValueError):
        bw.check_env({name: "x"})
    with pytest.raises(ValueError):
        bw.check_env({"OK": "nul\0byte"})


def test_args_fd_holds_the_options_nul_separated():
    fd = bw.args_fd(["--bind", "/a b", "/c"])
    try:
        assert os.read(fd, 100) == b"--bind\0/a b\0/c\0"
    finally:
        os.close(fd)


def test_a_venv_interpreter_is_bound_by_its_base_prefix_never_by_the_venv(tmp_path):
    interpreter = bw.resolve_interpreter(sys.executable)
    assert os.path.realpath(interpreter.executable) == interpreter.executable
    for prefix in interpreter.prefixes:
        assert interpreter.executable.startswith(prefix + "/") and prefix.count("/") >= 2
        assert not os.path.exists(os.path.join(prefix, "pyvenv.cfg"))
    with pytest.raises(ValueError):
        bw.resolve_interpreter(str(tmp_path / "no-python"))


def test_rlimits_add_address_space_only_without_a_memory_cgroup():
    resources = Resources(memory_mb=256, disk_mb=100, max_processes=10)
    with_cgroup = executor_limit_args(resources, memory_cgroup=True)
    assert with_cgroup == [
        "--limit",
        "nproc=10",
        "--limit",
        "nofile=1024",
        "--limit",
        f"fsize={100 * 1024 * 1024}",
    ]
    without = executor_limit_args(resources, memory_cgroup=False)
    assert without[-1] == f"as={address_space_bytes(resources)}"
    assert address_space_bytes(resources) >= 1024 * 1024 * 1024  # Node needs ~768 MiB of address space
    # A loop-mounted workspace of the session's size bounds files together; no per-file cap on top.
    assert not any("fsize" in a for a in executor_limit_args(resources, memory_cgroup=True, disk_total=True))


def test_v1_limits_are_written_in_an_order_the_kernel_accepts(tmp_path):
    mem, pids, cpu = (tmp_path / n for n in ("memory", "pids", "cpu"))
    for d in (mem, pids, cpu):
        d.mkdir()
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712")
    (mem / "memory.memsw.limit_in_bytes").write_text("9223372036854771712")
    cgroup = SandboxCgroup(1, {"memory": str(mem), "pids": str(pids), "cpu": str(cpu)})
    cgroup.apply(Resources(cpu=1.5, memory_mb=256, max_processes=20))
    assert (mem / "memory.limit_in_bytes").read_text() == str(256 * 1024 * 1024)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(256 * 1024 * 1024)
    assert (pids / "pids.max").read_text() == str(20 + PIDS_OVERHEAD)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    assert SandboxCgroup.from_json(cgroup.to_json()) == cgroup
    assert SandboxCgroup.from_json(None) is None


def test_v2_limits_use_the_unified_files(tmp_path):
    cgroup = SandboxCgroup(2, {"unified": str(tmp_path)})
    cgroup.apply(Resources(cpu=0.5, memory_mb=64, max_processes=5))
    assert (tmp_path / "memory.max").read_text() == str(64 * 1024 * 1024)
    assert (tmp_path / "pids.max").read_text() == str(5 + PIDS_OVERHEAD)
    assert (tmp_path / "cpu.max").read_text() == "50000 100000"


def test_a_pid_is_alive_only_with_its_recorded_start_time():
    me = os.getpid()
    started = start_time(me)
    assert started is not None and alive(me, started)
    assert not alive(me, started + 1)  # same pid, another process: a reused pid must not be signalled
    assert not alive(None, None) and not alive(2**22 + 1, None)


def test_v1_controllers_are_found_in_mountinfo():
    mounts = _v1_mounts()
    for controller, path in mounts.items():
        assert os.path.isdir(path), (controller, path)


def test_v2_discovery_enables_controllers_and_nests_sandboxes_below_our_cgroup(tmp_path, monkeypatch):
    # A stand-in for a delegated v2 hierarchy (plain files): this checks which files discovery reads and
    # writes, not the kernel's rules, which this cgroup-v1 machine cannot exercise.
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    monkeypatch.setattr("runtime.process.cgroups._own_cgroups", lambda: {"": "/"})
    manager = CgroupManager(mount=str(tmp_path), group="scp")
    assert manager.available and manager.version == 2
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (tmp_path / "scp" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    cgroup = manager.create("tag-s1", Resources(memory_mb=128, max_processes=10))
    assert cgroup.procs_files() == [str(tmp_path / "scp" / "tag-s1" / "cgroup.procs")]
    assert (tmp_path / "scp" / "tag-s1" / "memory.max").read_text() == str(128 * 1024 * 1024)


def test_v2_without_delegated_memory_falls_back_to_rlimits(tmp_path, monkeypatch):
    (tmp_path / "cgroup.controllers").write_text("cpu pids\n")
    monkeypatch.setattr("runtime.process.cgroups._own_cgroups", lambda: {"": "/"})
    manager = CgroupManager(mount=str(tmp_path))
    assert not manager.available and "memory" in manager.reason
