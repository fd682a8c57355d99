"""The process backend's offline installer sandbox (runtime/process/installer.py), entered for real: whatever runs
where pip runs has no network, is host uid 65534 with no capabilities, and can write only its staging dir."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest

from runtime import bwrap as bw
from runtime.process import installer

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("bwrap") or not shutil.which("setpriv"),
    reason="needs root, bubblewrap and setpriv",
)

PROBE = """
import json, os, socket, sys
port = int(sys.argv[1])
seen = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
seen["interfaces"] = sorted(name for _, name in socket.if_nameindex())
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    seen["loopback"] = "reached"
except OSError as exc:
    seen["loopback"] = type(exc).__name__
for line in open("/proc/self/status"):
    if line.startswith(("CapEff", "CapPrm", "NoNewPrivs")):
        key, value = line.split(":")
        seen[key] = value.strip()
def writable(path):
    try:
        with open(path, "a"):
            return True
    except OSError:
        return False
seen["wheel_writable"] = writable("/wheels/x-1-py3-none-any.whl")
seen["core_pattern_writable"] = writable("/proc/sys/kernel/core_pattern")
seen["staging_writable"] = writable("/target/ok")
print(json.dumps(seen))
"""


def test_the_installer_sandbox_has_no_network_and_no_privilege(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    staging, wheel_dir = tmp_path / "staging", tmp_path / "wheels"
    staging.mkdir()
    os.chown(staging, installer.INSTALLER_UID, installer.INSTALLER_UID)
    wheel_dir.mkdir()
    (wheel_dir / "x-1-py3-none-any.whl").write_bytes(b"zip")
    os.chmod(wheel_dir / "x-1-py3-none-any.whl", 0o444)
    (tmp_path / "passwd").write_text(installer.PASSWD)
    (tmp_path / "group").write_text(installer.GROUP)
    paths = {
        "staging": str(staging),
        "wheels": str(wheel_dir),
        "pip": installer.pip_source_dir(),
        "passwd": str(tmp_path / "passwd"),
        "group": str(tmp_path / "group"),
    }
    interpreter = bw.resolve_interpreter(
        "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
    )
    command = installer.bwrap_command(
        bwrap=shutil.which("bwrap") or "bwrap",
        interpreter=interpreter,
        paths=paths,
        uid=installer.INSTALLER_UID,
    )
    # The same sandbox, with the probe in pip's place.
    command = command[: command.index("-s", command.index(interpreter.executable))]
    command += ["-I", "-c", PROBE, str(listener.getsockname()[1])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing connected
    listener.close()
    assert seen["uid"] == seen["gid"] == installer.INSTALLER_UID and seen["groups"] in ([], [65534])
    assert seen["interfaces"] == ["lo"] and seen["loopback"] != "reached"
    assert seen["CapEff"] == seen["CapPrm"] == "0000000000000000" and seen["NoNewPrivs"] == "1"
    assert not seen["wheel_writable"] and not seen["core_pattern_writable"] and seen["staging_writable"]
