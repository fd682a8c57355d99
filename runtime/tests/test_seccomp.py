"""Without libseccomp the process runtime refuses to start sandboxes, naming the setting that allows it.

Each case runs in a fresh interpreter in which the binding cannot be imported (as on a host without
libseccomp.so.2: pyseccomp raises at import), so the filter cache of this test process plays no part.
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

SCRIPT = r"""
import json, sys
sys.modules["pyseccomp"] = None  # import fails, as it does when libseccomp.so.2 is missing
sys.path.insert(0, sys.argv[3])
from runtime.base import ExecuteRequest, RuntimeFailure, SandboxSpec
from runtime.events import OutputChunk
from runtime.process import ProcessRuntime

runtime = ProcessRuntime(data_dir=sys.argv[1], allow_no_seccomp=sys.argv[2] == "allow")
try:
    handle = runtime.create(SandboxSpec(session_id="noseccomp", image="python-basic", token="t" * 32))
except RuntimeFailure as exc:
    print(json.dumps({"refused": exc.message, "permanent": exc.permanent}))
    raise SystemExit(0)
events = list(runtime.executor(handle).execute(ExecuteRequest(
    execution_id="e", language="python", code="print(open('/proc/self/status').read().count('Seccomp:\t0'))",
    event={}, timeout=20,
)))
runtime.destroy(handle)
print(json.dumps({"stdout": "".join(e.data for e in events if isinstance(e, OutputChunk) and e.stream == "stdout")}))
"""


def _run(mode: str) -> dict:
    data_dir = tempfile.mkdtemp(prefix="sbs-", dir="/tmp")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, data_dir, mode, ROOT], capture_output=True, text=True, timeout=120
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_bwrap
def test_without_libseccomp_sandboxes_are_refused_with_the_setting_named():
    report = _run("refuse")
    assert report["permanent"] and "SANDBOX_ALLOW_NO_SECCOMP" in report["refused"]


@needs_bwrap
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="checks the filter's absence via /proc only")
def test_the_operator_may_allow_sandboxes_without_a_filter():
    assert _run("allow")["stdout"].strip() == "1"  # started, and really without a filter
