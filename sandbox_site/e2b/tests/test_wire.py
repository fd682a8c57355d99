"""The E2B surface's wire pieces on their own: Connect envelopes, envd paths onto the workspace, the bash
script of an envd ProcessConfig, and pids."""

from __future__ import annotations

import json
import struct

import pytest

from sandbox_site.e2b import connect as rpc
from sandbox_site.e2b.paths import workspace_relative
from sandbox_site.e2b.process import command_script, pid_of
from sessions_app.files import BadPath


def test_an_enveloped_message_round_trips_and_the_end_of_stream_carries_the_error():
    frame = rpc.envelope({"event": {"start": {"pid": 7}}})
    assert frame[0] == 0 and struct.unpack(">I", frame[1:5])[0] == len(frame) - 5
    assert rpc.stream_request(frame) == {"event": {"start": {"pid": 7}}}
    end = rpc.end_of_stream(rpc.ConnectError("not_found", "gone"))
    assert end[0] == rpc.END_STREAM
    assert json.loads(end[5:]) == {"error": {"code": "not_found", "message": "gone"}}
    assert json.loads(rpc.end_of_stream()[5:]) == {}


@pytest.mark.parametrize("body", [b"", b"\x00\x00\x00", b"\x01\x00\x00\x00\x02{}", b"\x00\x00\x00\x00\x02[]"])
def test_a_malformed_or_compressed_stream_request_is_refused(body):
    with pytest.raises(rpc.ConnectError):
        rpc.stream_request(body)


def test_a_unary_error_has_the_status_of_its_code():
    response = rpc.unary_error(rpc.ConnectError("already_exists", "there"))
    assert response.status_code == 409 and json.loads(response.content)["code"] == "already_exists"


@pytest.mark.parametrize(
    ("path", "relative"),
    [
        ("/home/user/a/b.txt", "a/b.txt"),
        ("/workspace/a/b.txt", "a/b.txt"),
        ("~/a.txt", "a.txt"),
        ("a/./b.txt", "a/b.txt"),
        ("/home/user", ""),
        ("", ""),
    ],
)
def test_envd_paths_name_workspace_files(path, relative):
    assert workspace_relative(path) == relative


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "/home/user/../x", "/workspacex/a", "a\x00b", "/home/username/a"]
)
def test_paths_outside_the_workspace_are_refused(path):
    with pytest.raises(BadPath):
        workspace_relative(path)


def test_the_sdks_bash_command_becomes_its_script_with_envs_and_cwd():
    script = command_script(
        {
            "cmd": "/bin/bash",
            "args": ["-l", "-c", "echo $A"],
            "envs": {"A": "x y", "1BAD": "z"},
            "cwd": "/home/user/d",
        }
    )
    assert script.splitlines() == [
        "exec </dev/null",
        "export A='x y'",
        "cd /workspace/d || exit 1",
        "echo $A",
    ]
    assert command_script({"cmd": "ls", "args": ["-l", "a b"]}).splitlines()[-1] == "ls -l 'a b'"


def test_pids_are_stable_and_differ_between_executions():
    assert pid_of("exec_a") == pid_of("exec_a") != pid_of("exec_b")
    assert 1000 <= pid_of("exec_a") < 2**31


def test_the_installed_sdks_are_the_tested_releases():
    """A bump of the pins must come with a run of the SDK tests and the docs' version range."""
    from importlib.metadata import version

    from sandbox_site.e2b import TESTED_SDK_VERSIONS

    for package, release in TESTED_SDK_VERSIONS.items():
        assert version(package).startswith(release + "."), (package, version(package))
