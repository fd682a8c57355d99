"""What is specific to the process backend's isolation under real bubblewrap (every attack a sandbox must
withstand on any backend is in contract/test_isolation.py)."""

from __future__ import annotations

from runtime.tests.conftest import needs_bwrap, run_code

pytestmark = needs_bwrap


def test_the_hosts_etc_is_never_bound_whole(process_runtime, make_sandbox):
    # bubblewrap binds the few files programs need from the host's /etc, never the directory: the host's
    # shadow files are not even there to be refused.
    handle = make_sandbox()
    out = run_code(process_runtime, handle, "import os\nprint(sorted(os.listdir('/etc')))")
    assert out.status == "completed", out.result
    assert "shadow" not in out.stdout and "gshadow" not in out.stdout and "'passwd'" in out.stdout
