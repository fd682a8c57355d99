"""Attacks on the host from inside a process-backend sandbox: host root, sysctls, kernel syscalls, other
sessions' host directories, the executor's memory, /tmp's cap (the attacks every backend must withstand are
in contract/).

Each test runs what a hostile session would under real bubblewrap and checks, from the host, that it got
nowhere. The sandboxes are made once per module where the tests do not interfere.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import tempfile
import uuid

import pytest

from runtime import loop_workspace as lw
from runtime.base import Resources, RuntimeFailure, SandboxSpec
from runtime.process import ProcessRuntime, seccomp
from runtime.process.record import read_record
from runtime.tests.conftest import needs_bwrap, run_code
from sandbox_site.testing import wait_until

pytestmark = needs_bwrap
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="per-session host uids need a root control plane")

# x86-64 syscall numbers, and the arguments that make each call do what the filter must refuse.
SYSCALLS = {
    "io_uring_setup": (425, 1, 0),
    "io_uring_enter": (426, 0, 0, 0, 0, 0),
    "io_uring_register": (427, 0, 0, 0, 0),
    "bpf": (321, 0, 0, 0),
    "perf_event_open": (298, 0, 0, -1, -1, 0),
    "userfaultfd": (323, 0),
    "keyctl": (250, 0, 0),
    "add_key": (248, 0, 0, 0, 0, 0),
    "request_key": (249, 0, 0, 0, 0),
    "mount": (165, 0, 0, 0, 0, 0),
    "umount2": (166, 0, 0),
    "pivot_root": (155, 0, 0),
    "fsopen": (430, 0, 0),
    "fsmount": (432, 0, 0, 0),
    "fsconfig": (431, 0, 0, 0, 0, 0),
    "move_mount": (429, 0, 0, 0, 0, 0),
    "open_tree": (428, 0, 0, 0),
    "fspick": (433, 0, 0, 0),
    "mount_setattr": (442, 0, 0, 0, 0, 0),
    "unshare(CLONE_NEWUSER)": (272, 0x10000000),
    "unshare(CLONE_NEWNS)": (272, 0x00020000),
    "clone(CLONE_NEWUSER)": (56, 0x10000000 | 17, 0, 0, 0, 0),
    "setns": (308, 0, 0),
    "kexec_load": (246, 0, 0, 0, 0),
    "kexec_file_load": (320, 0, 0, 0, 0, 0),
    "init_module": (175, 0, 0, 0),
    "finit_module": (313, 0, 0, 0),
    "delete_module": (176, 0, 0),
    "reboot": (169, 0, 0, 0, 0),
    "swapon": (167, 0, 0),
    "swapoff": (168, 0),
    "clock_settime": (227, 0, 0),
    "clock_adjtime": (305, 0, 0),
    "settimeofday": (164, 0, 0),
    "adjtimex": (159, 0),
    "acct": (163, 0),
    "quotactl": (179, 0, 0, 0, 0),
    "lookup_dcookie": (212, 0, 0, 0),
    "personality(ADDR_NO_RANDOMIZE)": (135, 0x0040000),
    "personality(READ_IMPLIES_EXEC)": (135, 0x0400000),
    "open_by_handle_at": (304, 0, 0, 0),
    "name_to_handle_at": (303, 0, 0, 0, 0, 0),
    "syslog": (103, 3, 0, 0),
    "vhangup": (153,),
    "nfsservctl": (180, 0, 0, 0),
    "iopl": (172, 3),
    "ioperm": (173, 0, 1, 1),
    "create_module": (174, 0, 0),
    "get_kernel_syms": (177, 0),
    "query_module": (178, 0, 0, 0, 0, 0),
    "uselib": (134, 0),
    "ustat": (136, 0, 0),
    "sysfs": (139, 1, 0),
    "_sysctl": (156, 0),
    "kcmp": (312, 0, 0, 0, 0, 0),
    "sethostname": (170, 0, 0),
}

CALL_ALL = """
import ctypes, errno, json
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
results = {}
for name, (number, *args) in CALLS.items():
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    results[name] = "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def runtime():
    data_dir = tempfile.mkdtemp(prefix="sbh-", dir="/tmp")
    rt = ProcessRuntime(data_dir=data_dir)
    yield rt
    for handle in rt.list_managed():
        rt.destroy(handle)
    shutil.rmtree(data_dir, ignore_errors=True)


def _make(rt: ProcessRuntime, **resources):
    spec = SandboxSpec(
        session_id=f"h{uuid.uuid4().hex[:12]}",
        image="python-basic",
        token=secrets.token_urlsafe(24),
        resources=Resources(**resources),
    )
    return rt.create(spec)


@pytest.fixture(scope="module")
def sandbox(runtime):
    return _make(runtime)


@pytest.fixture(scope="module")
def other_sandbox(runtime):
    return _make(runtime)


def _host_uids(rt: ProcessRuntime, handle) -> dict[int, tuple[int, str]]:
    """host pid -> (real uid, uid_map as the host reads it) of every process of the sandbox but its
    supervisor shell (which joins the cgroups as root, then execs nothing of the sandbox's)."""
    meta = read_record(rt.session_dir(handle.session_id))
    assert meta is not None
    found = {}
    for pid in _descendants(meta["pid"]):
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as fh:
                uid = int(next(line for line in fh if line.startswith("Uid:")).split()[1])
            with open(f"/proc/{pid}/uid_map", encoding="ascii") as fh:
                uid_map = " ".join(fh.read().split())
        except OSError:
            continue
        found[pid] = (uid, uid_map)
    return found


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


@root_only
def test_sandboxed_code_never_runs_as_host_root_and_sessions_get_different_uids(
    runtime, sandbox, other_sandbox
):
    first, second = _host_uids(runtime, sandbox), _host_uids(runtime, other_sandbox)
    assert first and second
    first_uids = {uid for uid, _ in first.values()}
    second_uids = {uid for uid, _ in second.values()}
    assert 0 not in first_uids | second_uids
    assert len(first_uids) == 1 and len(second_uids) == 1 and first_uids != second_uids
    low, high = runtime.uids.first, runtime.uids.last
    assert all(low <= uid <= high for uid in first_uids | second_uids)
    # Seen from the host, the sandbox's uid 1000 maps onto the session's uid, never onto host uid 0.
    (uid,) = first_uids
    innermost = [uid_map for _, uid_map in first.values() if uid_map.startswith("1000 ")]
    assert innermost and all(m == f"1000 {uid} 1" for m in innermost), first
    assert read_record(runtime.session_dir(sandbox.session_id))["uid"] == uid


def test_core_pattern_cannot_be_written_and_no_sysctl_is_writable(runtime, sandbox):
    with open("/proc/sys/kernel/core_pattern") as fh:
        before = fh.read()
    # The attack wrote "|<script> %p"; writing the host's own value back proves the same access without
    # changing the host when it succeeds (as it did before this boundary existed). Restored regardless.
    try:
        out = run_code(
            runtime,
            sandbox,
            f"BEFORE = {before!r}\n" + CORE_PATTERN_PROBE,
        )
    finally:
        with open("/proc/sys/kernel/core_pattern") as fh:
            changed = fh.read() != before
        if changed:
            with open("/proc/sys/kernel/core_pattern", "w") as fh:
                fh.write(before)
    assert out.status == "completed", out
    result = json.loads(out.stdout)
    assert result["core_pattern"] != "WROTE"
    assert result["checked"] > 100 and result["writable"] == []
    assert not changed


CORE_PATTERN_PROBE = """
import json, os
result = {}
try:
    with open("/proc/sys/kernel/core_pattern", "w") as fh:
        fh.write(BEFORE)
    result["core_pattern"] = "WROTE"
except OSError as exc:
    result["core_pattern"] = type(exc).__name__
writable, checked = [], 0
for top, dirs, files in os.walk("/proc/sys"):
    for name in files:
        path = os.path.join(top, name)
        checked += 1
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            continue
        os.close(fd)
        writable.append(path)
result["writable"] = writable
result["checked"] = checked
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def syscall_results(runtime, sandbox):
    out = run_code(runtime, sandbox, f"CALLS = {SYSCALLS!r}\n" + CALL_ALL)
    assert out.status == "completed", out
    return json.loads(out.stdout)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are x86-64's")
@pytest.mark.parametrize("name", sorted(SYSCALLS))
def test_the_seccomp_filter_refuses_each_dangerous_syscall_with_eperm(syscall_results, name):
    assert syscall_results[name] == "EPERM"


def test_the_filter_lists_at_least_dockers_refusals():
    assert {
        "bpf",
        "io_uring_setup",
        "perf_event_open",
        "userfaultfd",
        "keyctl",
        "mount",
        "kexec_load",
    } <= set(seccomp.REFUSED)
    assert len(seccomp.compiled()) > 0 and seccomp.compiled() is seccomp.compiled()  # built once, cached


def test_ordinary_programs_still_work_under_the_filter(runtime, sandbox):
    out = run_code(
        runtime,
        sandbox,
        """
import ctypes, os, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
print(libc.syscall(135, 0xFFFFFFFF) >= 0)  # personality query
t = threading.Thread(target=lambda: None); t.start(); t.join()  # clone3 -> ENOSYS -> clone
print(subprocess.run(["sh", "-c", "echo child"], capture_output=True, text=True).stdout.strip())
print(open("/proc/self/status").read().count("Seccomp:\\t2"))
""",
    )
    assert out.status == "completed", out
    assert out.stdout.split() == ["True", "child", "1"]
    node = run_code(
        runtime,
        sandbox,
        "const fs = require('fs'); console.log(fs.readdirSync('/').length > 3)",
        language="javascript",
    )
    if node.status != "failed" or "not available" not in (node.result.error or ""):
        assert node.stdout.strip() == "true", node


def test_x32_syscalls_kill_the_caller(runtime, sandbox):
    out = run_code(
        runtime,
        sandbox,
        """
import ctypes
ctypes.CDLL(None).syscall(0x40000000 | 39)  # x32 getpid
print("survived")
""",
    )
    assert out.status == "crashed" and "survived" not in out.stdout, out


@root_only
def test_one_session_cannot_reach_another_sessions_workspace(runtime, sandbox, other_sandbox):
    secret = secrets.token_hex(8)
    run_code(runtime, other_sandbox, f"open('/workspace/secret.txt', 'w').write({secret!r})")
    other_root = runtime.session_dir(other_sandbox.session_id)
    other_meta = read_record(other_root)
    guesses = [
        os.path.join(other_root, "workspace", "secret.txt"),
        os.path.join(other_meta["stage"], "workspace", "secret.txt"),
        os.path.join(runtime.data_dir, "sandboxes"),
    ]
    out = run_code(
        runtime,
        sandbox,
        f"""
import os
for path in {guesses!r}:
    try:
        print(open(path).read() if os.path.isfile(path) else os.listdir(path))
    except OSError as exc:
        print(type(exc).__name__)
""",
    )
    assert out.status == "completed", out
    assert secret not in out.stdout and "secret.txt" not in out.stdout
    # On the host: the workspace is the other session's alone, and the paths above it let nobody list them.
    workspace = os.stat(os.path.join(other_root, "workspace"))
    assert (workspace.st_uid, workspace.st_mode & 0o777) == (other_meta["uid"], 0o700)
    assert os.stat(other_root).st_mode & 0o777 == 0o711 and os.stat(other_root).st_uid == 0
    assert os.stat(os.path.join(other_root, "run")).st_mode & 0o077 == 0
    assert os.stat(os.path.join(other_root, "workspace.img")).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(other_meta["stage"])).st_mode & 0o777 == 0o711


def test_the_executor_and_zygote_memory_and_environment_are_unreadable(runtime, sandbox):
    out = run_code(
        runtime,
        sandbox,
        """
import json, os, time
me = os.getpid()
def daemons():
    found = {}
    for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]:
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if b"-m\\0executor" in cmd:
            found["executor"] = pid
        elif b"zygote_main" in cmd and os.getppid() != int(pid):
            found["zygote"] = pid
        elif b"zygote_main" in cmd:
            found["zygote"] = pid
    return found
deadline = time.monotonic() + 10
found = daemons()
while len(found) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
    found = daemons()
result = {}
for role, pid in found.items():
    for name in ("mem", "environ", "maps"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as fh:
                fh.read(1)
            result[f"{role} {name}"] = "READ"
        except OSError as exc:
            result[f"{role} {name}"] = type(exc).__name__
print(json.dumps(result))
""",
    )
    assert out.status == "completed", out
    result = json.loads(out.stdout)
    assert set(result) >= {"executor mem", "executor environ", "zygote mem", "zygote environ"}, result
    assert "READ" not in result.values(), result


def test_executions_forked_from_the_zygote_can_still_inspect_themselves(runtime, sandbox):
    out = run_code(
        runtime,
        sandbox,
        """
import os, subprocess
print(len(os.listdir("/proc/self/fd")) > 0, open("/proc/self/status").read().startswith("Name:"))
print(subprocess.run(["cat", f"/proc/{os.getpid()}/status"], capture_output=True).returncode)
""",
    )
    assert out.status == "completed", out
    assert out.stdout.split() == ["True", "True", "0"]


def test_tmp_has_its_own_small_cap(runtime, sandbox):
    out = run_code(
        runtime,
        sandbox,
        """
import os
written = 0
try:
    with open("/tmp/fill", "wb") as fh:
        while written < (512 << 20):
            fh.write(b"y" * (1 << 20))
            written += 1 << 20
            fh.flush()
except OSError as exc:
    print("stopped", exc.strerror)
os.unlink("/tmp/fill")
print(written >> 20)
""",
    )
    assert out.status == "completed", out
    stopped, size = out.stdout.split("\n")[:2]
    assert stopped.startswith("stopped") and int(size) <= runtime.tmp_size_mb


@root_only
def test_a_crashed_sandbox_is_swept_after_a_restart_mounts_loop_device_and_uid_included(runtime):
    handle = _make(runtime, disk_mb=256)
    root = runtime.session_dir(handle.session_id)
    meta = read_record(root)
    image = os.path.join(root, "workspace.img")
    assert lw.mounted(os.path.join(root, "workspace")) and lw.mounted(meta["stage"])
    device = lw.loop_device(image)
    assert device
    # The sandbox dies with no control plane around (the supervisor is killed), then a new control plane
    # (a restart: nothing in memory) finds the leftover through its record and removes it.
    os.killpg(meta["pgid"], signal.SIGKILL)
    restarted = ProcessRuntime(data_dir=runtime.data_dir)
    leftover = [h for h in restarted.list_managed() if h.session_id == handle.session_id]
    assert leftover
    wait_until(
        lambda: not restarted.inspect(leftover[0]).running, what="the killed sandbox to read as stopped"
    )
    restarted.destroy(leftover[0])
    assert not os.path.exists(root)
    assert not lw.mounted(meta["stage"]) and not os.path.exists(meta["stage"])
    assert not lw.mounted(os.path.join(root, "workspace"))
    assert lw.loop_device(image) is None
    with open("/proc/partitions", encoding="ascii") as fh:  # the loop device is detached (autoclear)
        assert os.path.basename(device) not in fh.read().split()
    assert restarted.uids.owner(meta["uid"]) is None


@root_only
def test_a_warm_sandbox_claimed_with_more_disk_grows_and_never_shrinks(runtime):
    if runtime.disk_limit_reason:
        pytest.skip(f"no loop-mounted workspace here: {runtime.disk_limit_reason}")
    handle = _make(runtime, disk_mb=256)
    size = "import os; s = os.statvfs('/workspace'); print(s.f_blocks * s.f_frsize >> 20)"
    try:
        before = int(run_code(runtime, handle, size).stdout)
        assert before <= 256
        try:  # growing needs online ext4 resizing, i.e. CAP_SYS_RESOURCE, which some hosts' root lacks
            runtime.update_resources(handle, Resources(disk_mb=512))
        except RuntimeFailure as exc:
            assert exc.permanent and "Permission denied" in exc.message
            assert int(run_code(runtime, handle, size).stdout) == before  # a refusal changes nothing
        else:
            assert 400 < int(run_code(runtime, handle, size).stdout) <= 512
        with pytest.raises(RuntimeFailure):
            runtime.update_resources(handle, Resources(disk_mb=128))
        assert run_code(runtime, handle, "open('x', 'w').write('ok')").status == "completed"
    finally:
        runtime.destroy(handle)
