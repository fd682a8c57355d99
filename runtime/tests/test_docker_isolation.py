"""Attacks from inside a Docker sandbox: network, host files, other sessions, writes, processes, privileges, token.

Each test runs hostile code as a session would and checks, from inside and from the host, that it achieved
nothing.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

from runtime.tests.conftest import run_code
from runtime.tests.test_docker_support import PYTHON_IMAGE, Sandboxes, require


@pytest.fixture
def sbx(data_dir):
    require(PYTHON_IMAGE)
    with Sandboxes(data_dir) as sandboxes:
        yield sandboxes


@pytest.fixture
def listeners():
    """TCP servers on the host's loopback and on every address (so the bridge gateway would answer too)."""
    servers = []
    for host in ("127.0.0.1", "0.0.0.0"):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind((host, 0))
        server.listen(8)
        server.setblocking(False)
        servers.append(server)
    yield servers
    for server in servers:
        server.close()


def _json(sbx, handle, code: str):
    out = run_code(sbx.runtime, handle, code, timeout=30)
    assert out.status == "completed", (out.result, out.stderr)
    return json.loads(out.stdout)


def test_sandboxed_code_cannot_reach_a_tcp_server_on_the_hosts_loopback(sbx, listeners):
    loopback, anywhere = (server.getsockname()[1] for server in listeners)
    probe = socket.create_connection(("127.0.0.1", loopback), timeout=2)  # the server does answer the host
    listeners[0].accept()[0].close()
    probe.close()
    handle = sbx.make()
    results = _json(
        sbx,
        handle,
        f"""
import json, socket
results = {{}}
for host, port in (("127.0.0.1", {loopback}), ("127.0.0.1", {anywhere}), ("172.17.0.1", {anywhere}),
                   ("10.0.2.2", {anywhere}), ("1.1.1.1", 443)):
    try:
        socket.create_connection((host, port), timeout=2).close()
        results[f"{{host}}:{{port}}"] = "CONNECTED"
    except OSError as exc:
        results[f"{{host}}:{{port}}"] = type(exc).__name__
try:
    socket.getaddrinfo("pypi.org", 443)
    results["dns"] = "RESOLVED"
except OSError as exc:
    results["dns"] = type(exc).__name__
print(json.dumps(results))
""",
    )
    assert "CONNECTED" not in results.values() and results["dns"] != "RESOLVED", results
    for server in listeners:
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing from the sandbox arrived


def test_the_only_network_interface_is_loopback(sbx):
    handle = sbx.make()
    seen = _json(
        sbx,
        handle,
        """
import json, os, socket
dev = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
print(json.dumps({"sys": sorted(os.listdir("/sys/class/net")), "proc": sorted(dev),
                  "if": sorted(name for _, name in socket.if_nameindex())}))
""",
    )
    assert seen == {"sys": ["lo"], "proc": ["lo"], "if": ["lo"]}


def test_the_process_runs_unprivileged_with_no_capabilities(sbx):
    handle = sbx.make()
    status = _json(
        sbx,
        handle,
        """
import json, os
fields = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
                  **{k: fields[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                                    "NoNewPrivs", "Seccomp")}}))
""",
    )
    assert status["uid"] == status["euid"] == 1000 and status["gid"] == 1000
    assert 0 not in status["groups"]
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[name], 16) == 0, (name, status)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # Docker's default seccomp filter is on


def test_the_root_filesystem_is_read_only_even_where_permissions_would_allow(sbx):
    handle = sbx.make()
    results = _json(
        sbx,
        handle,
        """
import errno, json
results = {}
for path in ("/var/tmp/x", "/evil", "/opt/sandbox/evil", "/run/lock/x"):
    try:
        open(path, "w").close()
        results[path] = "WROTE"
    except OSError as exc:
        results[path] = errno.errorcode.get(exc.errno, str(exc.errno))
root = [line.split() for line in open("/proc/mounts") if line.split()[1] == "/"][0]
results["root_options"] = root[3].split(",")[0]
print(json.dumps(results))
""",
    )
    assert results.pop("root_options") == "ro"
    assert results["/var/tmp/x"] == "EROFS"  # /var/tmp is world-writable: only the read-only mount stops it
    assert "WROTE" not in results.values(), results


def test_sandboxed_code_can_write_only_its_workspace_tmp_and_shm(sbx):
    handle = sbx.make()
    targets = [
        "/workspace/ok.txt",
        "/tmp/ok.txt",
        "/dev/shm/ok",
        "/evil.txt",
        "/usr/evil.txt",
        "/etc/evil.txt",
        "/etc/passwd",
        "/opt/sandbox/executor/evil.py",
        "/opt/packages/evil.py",
        "/run/sandbox/evil",
        "/var/evil.txt",
        "/home/evil.txt",
        "/dev/evil",
        "/proc/sys/kernel/hostname",
        "/sys/evil",
    ]
    results = _json(
        sbx,
        handle,
        f"""
import json
results = {{}}
for path in {targets!r}:
    try:
        with open(path, "a") as fh:
            fh.write("x")
        results[path] = "WROTE"
    except OSError as exc:
        results[path] = type(exc).__name__
print(json.dumps(results))
""",
    )
    assert results.pop("/workspace/ok.txt") == "WROTE" and results.pop("/tmp/ok.txt") == "WROTE"
    # /dev/shm is a size-limited, memory-backed tmpfs like /tmp (POSIX semaphores, multiprocessing need it).
    assert results.pop("/dev/shm/ok") == "WROTE"
    assert "WROTE" not in results.values(), results
    dirs = sbx.runtime.dirs(handle.session_id)
    assert sorted(os.listdir(dirs.run)) == ["executor.sock"] and os.listdir(dirs.packages) == []
    assert os.path.exists(os.path.join(dirs.workspace, "ok.txt"))  # the workspace is the host's view too


def test_sandboxed_code_cannot_read_host_files_or_the_data_dir(sbx):
    handle = sbx.make()
    here = os.path.abspath(__file__)
    project = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    dirs = sbx.runtime.dirs(handle.session_id)
    paths = [
        here,
        os.path.join(project, "pyproject.toml"),
        sbx.runtime.data_dir,
        dirs.root,
        dirs.image,
        "/root/.bash_history",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/var/lib/docker",
    ]
    results = _json(
        sbx,
        handle,
        f"""
import json, os
results = {{}}
for path in {paths!r}:
    try:
        with open(path, "rb") as fh:
            results[path] = "READ " + fh.read(16).hex()
    except OSError as exc:
        results[path] = type(exc).__name__
results["/etc/shadow"] = "READ" if os.access("/etc/shadow", os.R_OK) else "denied"
print(json.dumps(results))
""",
    )
    assert not any(value.startswith("READ") for value in results.values()), results
    assert results[here] == "FileNotFoundError" and results["/var/run/docker.sock"] == "FileNotFoundError"


def test_a_session_cannot_find_or_read_another_sessions_workspace(sbx):
    a, b = sbx.make(), sbx.make()
    secret = "s3cret-" + os.urandom(8).hex()
    assert run_code(sbx.runtime, b, f"open('secret-of-b.txt', 'w').write({secret!r})").status == "completed"
    b_workspace = b.workspace_path or sbx.runtime.dirs(b.session_id).workspace
    out = run_code(
        sbx.runtime,
        a,
        f"""
import os
found = []
for dirpath, dirnames, filenames in os.walk("/"):
    if dirpath in ("/proc", "/sys", "/usr", "/dev"):
        dirnames[:] = []
        continue
    found += [os.path.join(dirpath, f) for f in filenames if "secret-of-b" in f]
print("found:", found)
print(os.path.exists({b_workspace!r}), os.listdir("/workspace"))
""",
        timeout=60,
    )
    assert out.status == "completed", out.result
    assert out.stdout == "found: []\nFalse []\n"
    assert secret not in out.stdout


def test_sandboxed_code_sees_only_its_own_processes(sbx):
    handle = sbx.make()
    seen = _json(
        sbx,
        handle,
        """
import json, os
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print(json.dumps({"pids": pids, "init": open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode()}))
""",
    )
    assert 1 <= len(seen["pids"]) <= 8 and max(seen["pids"]) < 100, seen
    assert os.getpid() not in seen["pids"] or os.getpid() < 100
    assert seen["init"] == "/usr/bin/tini"  # pid 1 is the container's own init, not the host's


def test_the_token_is_invisible_to_sandboxed_code(sbx):
    handle = sbx.make()
    out = run_code(
        sbx.runtime,
        handle,
        """
import os
print("ENV", dict(os.environ))
print("RUN", os.listdir("/run/sandbox"))
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for name in ("environ", "cmdline", "mem"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as fh:
                data = fh.read(1 << 20) if name != "mem" else b"<mem readable>"
            print(pid, name, data)
        except OSError as exc:
            print(pid, name, type(exc).__name__)
""",
    )
    assert out.status == "completed", out.result
    assert handle.token not in out.stdout and handle.token not in out.stderr
    assert "RUN ['executor.sock']" in out.stdout
    assert "SANDBOX_EXECUTOR_TOKEN" not in out.stdout
    assert sbx.runtime.data_dir not in out.stdout  # no host path reaches the sandbox's view
