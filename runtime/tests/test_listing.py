"""Recursive listings: the executor's own walk (limits, refusals) and the walk made of one-level listings that
serves older executors, the fake runtime and stored workspaces, in the same order."""

from __future__ import annotations

import io
from typing import Any

import pytest

from runtime.base import SandboxSpec
from runtime.client import ExecutorClient
from runtime.fake import FakeRuntime
from runtime.listing import walk_listing
from runtime.tests.test_executor_support import TOKEN, running_daemon

TREE = {"b.txt": b"bb", "a.txt": b"a", "a/x.txt": b"xxx", "a/y/z.txt": b"zz", "c/d/e/f.txt": b"f"}
ORDER = ["a.txt", "b.txt", "a/x.txt", "a/y/z.txt", "c/d/e/f.txt"]


class OldExecutorClient(ExecutorClient):
    """Talks to a real executor, but hears its answers as an executor from before recursive listings would
    give them: `recursive` and `limit` unknown, so one level of `path`."""

    def _json_call(self, method: str, url: str, **kwargs: Any) -> Any:
        answer = super()._json_call(method, url.replace("&recursive=1", "&recursive=0"), **kwargs)
        answer.pop("recursive", None)
        answer.pop("truncated", None)
        return answer


@pytest.fixture(scope="module")
def executor():
    with running_daemon() as daemon:
        for path, data in TREE.items():
            daemon.client.upload(path, io.BytesIO(data), len(data))
        yield daemon


def test_the_executor_walks_in_one_request_and_says_when_it_stopped(executor):
    files, truncated = executor.client.walk_files("", limit=100)
    assert [f["path"] for f in files] == ORDER and not truncated
    assert [f["name"] for f in files] == ["a.txt", "b.txt", "x.txt", "z.txt", "f.txt"]
    assert executor.client.walk_files("", limit=2) == (files[:2], True)
    assert executor.client.walk_files("", limit=len(ORDER)) == (files, False)


def test_a_limit_that_is_not_a_positive_number_is_refused(executor):
    for raw in ("0", "-1", "x"):
        with pytest.raises(ValueError, match="limit"):
            executor.client._json_call("GET", f"/files?path=&recursive=1&limit={raw}", files=True)


def test_an_executor_from_before_recursive_listings_is_walked_from_the_client(executor):
    old = OldExecutorClient(str(executor.socket), TOKEN, read_timeout=15.0)
    assert old.walk_files("", limit=100) == executor.client.walk_files("", limit=100)
    assert old.walk_files("a", limit=100) == executor.client.walk_files("a", limit=100)
    assert old.walk_files("", limit=3) == executor.client.walk_files("", limit=3)
    with pytest.raises(FileNotFoundError):
        old.walk_files("nowhere", limit=3)


def test_the_fake_runtime_walks_in_the_executors_order():
    runtime = FakeRuntime()
    handle = runtime.create(SandboxSpec(session_id="s1", image="i", token="t"))
    client = runtime.executor(handle)
    for path, data in TREE.items():
        client.upload(path, io.BytesIO(data), len(data))
    files, truncated = client.walk_files("", limit=100)
    assert [f["path"] for f in files] == ORDER and not truncated
    assert [f["path"] for f in client.walk_files("a/", limit=1)[0]] == ["a/x.txt"]


def test_a_walk_of_one_level_listings_skips_directories_that_vanish_but_not_the_one_asked_for():
    tree = {"": [("gone", True), ("k.txt", False)], "gone": None}

    def list_dir(path: str) -> list[dict[str, Any]]:
        if tree.get(path) is None:
            raise FileNotFoundError(path)
        return [
            {"name": name, "path": f"{path}/{name}".lstrip("/"), "is_dir": is_dir}
            for name, is_dir in tree[path]
        ]

    assert [f["path"] for f in walk_listing(list_dir, "", 10)[0]] == ["k.txt"]
    with pytest.raises(FileNotFoundError):
        walk_listing(list_dir, "gone", 10)
