"""The process runtime under a control plane that is not root: sessions still start, run and go away.

The control plane is a subprocess dropped to nobody (65534) with setpriv, with a data dir it owns: no
cgroups it may write, no loop devices, no other uid to hand out. Sandboxes then run as the control plane's
own uid, bubblewrap makes its user namespace unprivileged, and the seccomp filter and read-only /proc/sys
still apply.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from runtime.tests.conftest import needs_bwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOBODY = 65534

SCRIPT = r"""
import dataclasses, json, os, sys, uuid
sys.path.insert(0, sys.argv[2])
from runtime.base import ExecuteRequest, SandboxSpec
from runtime.events import OutputChunk
from runtime.process import ProcessRuntime

runtime = ProcessRuntime(data_dir=sys.argv[1])
runtime.check()
handle = runtime.create(SandboxSpec(session_id="unpriv-" + uuid.uuid4().hex[:8], image="python-basic", token="t" * 32))
code = '''
import ctypes, os
open("/workspace/made.txt", "w").write("hi")
try:
    open("/proc/sys/kernel/core_pattern", "w").write("core")
    sysctl = "WROTE"
except OSError as exc:
    sysctl = type(exc).__name__
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.syscall(165, 0, 0, 0, 0, 0)
print(os.getuid(), sysctl, rc, ctypes.get_errno())
'''
events = list(runtime.executor(handle).execute(
    ExecuteRequest(execution_id=uuid.uuid4().hex, language="python", code=code, event={}, timeout=20)
))
made = os.stat(os.path.join(runtime.workspace_dir(handle.session_id), "made.txt")).st_uid
runtime.destroy(handle)
print(json.dumps({
    "result": dataclasses.asdict(events[-1]),
    "stdout": "".join(e.data for e in events if isinstance(e, OutputChunk) and e.stream == "stdout"),
    "made_uid": made,
    "gone": not os.path.exists(runtime.session_dir(handle.session_id)),
    "cgroups": bool(runtime.cgroups and runtime.cgroups.available),
    "disk_limit_reason": runtime.disk_limit_reason,
}))
"""


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_a_non_root_control_plane_runs_sessions_under_its_own_uid():
    data_dir = tempfile.mkdtemp(prefix="sbu-", dir="/tmp")
    os.chown(data_dir, NOBODY, NOBODY)
    try:
        proc = subprocess.run(
            [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                "--",
                sys.executable,
                "-c",
                SCRIPT,
                data_dir,
                ROOT,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    assert report["result"]["status"] == "completed", report
    uid, sysctl, rc, err = report["stdout"].split()
    assert uid == "1000" and sysctl != "WROTE" and (rc, err) == ("-1", "1")  # mount: EPERM from the filter
    assert report["made_uid"] == NOBODY  # the control plane's own uid: there is no other to give
    assert report["gone"]
    assert report["cgroups"] is False and report["disk_limit_reason"]  # what a non-root control plane lacks
