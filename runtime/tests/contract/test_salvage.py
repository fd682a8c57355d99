"""Salvaging a dead sandbox's workspace (Runtime.salvage_files): regular files only, no symlink followed, and
nothing from a sandbox on another host."""

from __future__ import annotations

import dataclasses
import time

from runtime.base import RuntimeFailure
from runtime.tests.contract.backends import Backend
from runtime.tests.contract.conftest import run_json

MAKE_FILES = """
import json, os
os.makedirs("out")
open("out/a.txt", "w").write("a")
open("top.txt", "w").write("top")
os.symlink("/etc/passwd", "leak")
os.mkfifo("pipe")
print(json.dumps(sorted(os.listdir("."))))
"""


def _wait_dead(backend: Backend, handle) -> None:
    client = backend.runtime.executor(handle)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            client.health()
        except RuntimeFailure:
            return
        time.sleep(0.05)
    raise AssertionError("the killed sandbox's executor still answers")


def test_a_dead_sandboxs_files_are_salvaged_without_following_symlinks(backend: Backend):
    handle = backend.make()
    assert run_json(backend, handle, MAKE_FILES) == ["leak", "out", "pipe", "top.txt"]
    backend.kill(handle)
    _wait_dead(backend, handle)
    files = backend.runtime.salvage_files(handle)
    if not handle.workspace_path:  # a workspace that lived inside the sandbox (Docker's tmpfs) died with it
        assert files is None
        return
    assert files is not None
    assert {path: opener().read() for path, opener in files} == {"out/a.txt": b"a", "top.txt": b"top"}


def test_nothing_is_salvaged_from_a_sandbox_on_another_host(backend: Backend):
    handle = backend.make()
    elsewhere = dataclasses.replace(handle, node="another-host")
    assert backend.runtime.salvage_files(elsewhere) is None
