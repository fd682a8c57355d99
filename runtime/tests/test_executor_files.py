"""The executor's workspace: file endpoints (with path safety) and the files an execution changed."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import time

import pytest

from runtime.events import FileChange
from runtime.tests.test_executor_support import TOKEN, run, running_daemon


@pytest.fixture(scope="module")
def executor():
    with running_daemon() as daemon:
        yield daemon


class Sized(io.RawIOBase):
    """A readable producing `size` bytes without holding them; records the largest read asked of it."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.largest_read = max(self.largest_read, n)
        n = self.remaining if n < 0 else min(n, self.remaining)
        self.remaining -= n
        return bytes(i % 251 for i in range(n))


def test_upload_list_download_delete_roundtrip(executor):
    client = executor.client
    saved = client.upload("docs/notes.txt", io.BytesIO(b"hello files"), 11)
    assert saved == {"path": "docs/notes.txt", "size": 11}
    assert (executor.workspace / "docs" / "notes.txt").read_bytes() == b"hello files"

    listing = client.list_files("docs")
    assert [(f["name"], f["path"], f["size"], f["is_dir"]) for f in listing] == [
        ("notes.txt", "docs/notes.txt", 11, False)
    ]
    assert listing[0]["modified_time"].endswith("+00:00")
    root = {f["name"]: f for f in client.list_files()}
    assert root["docs"]["is_dir"] is True

    assert b"".join(client.download("docs/notes.txt")) == b"hello files"
    client.delete("docs/notes.txt")
    assert not (executor.workspace / "docs" / "notes.txt").exists()
    with pytest.raises(FileNotFoundError):
        client.delete("docs/notes.txt")
    client.delete("docs")  # directories go with their contents
    assert not (executor.workspace / "docs").exists()


def test_large_files_stream_both_ways(executor):
    size = 8 * 1024 * 1024 + 123
    source = Sized(size)
    assert executor.client.upload("big/blob.bin", source, size)["size"] == size
    assert source.largest_read <= 64 * 1024  # the client streamed it
    received = 0
    chunks = 0
    expected = bytes(i % 251 for i in range(64 * 1024))
    for chunk in executor.client.download("big/blob.bin"):
        assert len(chunk) <= 64 * 1024
        received += len(chunk)
        chunks += 1
    assert received == size
    assert chunks > 1
    first = next(iter(executor.client.download("big/blob.bin")))
    assert first == expected[: len(first)]
    executor.client.delete("big")


def test_upload_replaces_atomically_and_leaves_no_temp_files(executor):
    executor.client.upload("same.txt", io.BytesIO(b"one"), 3)
    executor.client.upload("same.txt", io.BytesIO(b"second version"), 14)
    assert (executor.workspace / "same.txt").read_bytes() == b"second version"
    assert not [p for p in os.listdir(executor.workspace) if p.startswith(".upload-")]
    executor.client.delete("same.txt")


def test_an_upload_shorter_than_its_size_is_refused_by_the_client(executor):
    with pytest.raises(ValueError):
        executor.client.upload("short.txt", io.BytesIO(b"abc"), 10)
    assert not (executor.workspace / "short.txt").exists()


def test_an_interrupted_upload_leaves_nothing_behind(executor):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(executor.socket))
    sock.sendall(
        f"PUT /files/partial.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Length: 1000000\r\n\r\n".encode()
        + b"x" * 1000
    )
    sock.close()
    executor.client.health()  # the daemon is fine
    for _ in range(50):
        leftovers = [p for p in os.listdir(executor.workspace) if p.startswith((".upload-", "partial"))]
        if not leftovers:
            break
        time.sleep(0.02)
    assert leftovers == []


def test_missing_files_are_404(executor):
    with pytest.raises(FileNotFoundError):
        executor.client.download("nope.txt")
    with pytest.raises(FileNotFoundError):
        executor.client.list_files("no-such-dir")


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "a\x00b", "..", "sub/.."])
def test_unsafe_paths_are_400(executor, path):
    client = executor.client
    with pytest.raises(ValueError):
        client.download(path)
    with pytest.raises(ValueError):
        client.upload(path, io.BytesIO(b"x"), 1)
    with pytest.raises(ValueError):
        client.delete(path)
    with pytest.raises(ValueError):
        client.list_files(path)


def test_symlinks_pointing_outside_the_workspace_are_400(executor, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (executor.workspace / "escape").symlink_to(outside)
    (executor.workspace / "escape-file").symlink_to(outside / "secret.txt")
    try:
        client = executor.client
        for path in ("escape/secret.txt", "escape-file"):
            with pytest.raises(ValueError):
                client.download(path)
        with pytest.raises(ValueError):
            client.list_files("escape")
        with pytest.raises(ValueError):
            client.upload("escape/new.txt", io.BytesIO(b"x"), 1)
        with pytest.raises(ValueError):
            client.delete("escape/secret.txt")
        assert not (outside / "new.txt").exists()
        assert (outside / "secret.txt").exists()
    finally:
        (executor.workspace / "escape").unlink()
        (executor.workspace / "escape-file").unlink()


def test_symlinks_inside_the_workspace_are_followed(executor):
    (executor.workspace / "real.txt").write_text("real content")
    (executor.workspace / "alias.txt").symlink_to("real.txt")
    try:
        assert b"".join(executor.client.download("alias.txt")) == b"real content"
        executor.client.delete("alias.txt")  # removes the link, not its target
        assert (executor.workspace / "real.txt").exists()
    finally:
        (executor.workspace / "real.txt").unlink()


def test_directories_cannot_be_downloaded_or_overwritten(executor):
    (executor.workspace / "adir").mkdir()
    try:
        with pytest.raises(ValueError):
            executor.client.download("adir")
        with pytest.raises(ValueError):
            executor.client.upload("adir", io.BytesIO(b"x"), 1)
    finally:
        (executor.workspace / "adir").rmdir()


def test_percent_encoded_names_roundtrip(executor):
    name = "dir with space/ünïcode #1?.txt"
    executor.client.upload(name, io.BytesIO(b"odd name"), 8)
    assert b"".join(executor.client.download(name)) == b"odd name"
    assert [f["name"] for f in executor.client.list_files("dir with space")] == ["ünïcode #1?.txt"]
    executor.client.delete("dir with space")


# -- what executions changed --


def test_an_execution_reports_files_created_modified_and_deleted(executor):
    (executor.workspace / "keep.txt").write_text("v1")
    (executor.workspace / "old.txt").write_text("bye")
    (executor.workspace / "untouched.txt").write_text("same")
    source = (
        "import os\n"
        "os.makedirs('out/deep', exist_ok=True)\n"
        "open('out/deep/new.json', 'w').write('{}')\n"
        "open('keep.txt', 'a').write(' and v2')\n"
        "os.remove('old.txt')\n"
    )
    try:
        assert run(executor.client, source).result.files == (
            FileChange("out/deep/new.json", "created", size=2),
            FileChange("keep.txt", "modified", size=len("v1 and v2")),
            FileChange("old.txt", "deleted", size=None),
        )
    finally:
        for name in ("keep.txt", "untouched.txt"):
            (executor.workspace / name).unlink()
        shutil.rmtree(executor.workspace / "out")


def test_a_replaced_file_counts_as_modified(executor):
    (executor.workspace / "swap.txt").write_text("abc")
    source = "import os\nopen('swap.tmp', 'w').write('xyz')\nos.replace('swap.tmp', 'swap.txt')"
    try:
        assert run(executor.client, source, language="python").result.files == (
            FileChange("swap.txt", "modified", size=3),
        )
    finally:
        (executor.workspace / "swap.txt").unlink()


def test_a_shell_execution_reports_its_files(executor):
    files = run(executor.client, "echo data > from_shell.txt", language="shell").files("created")
    try:
        assert files == ["from_shell.txt"]
    finally:
        (executor.workspace / "from_shell.txt").unlink()


def test_a_huge_workspace_is_not_walked_in_full():
    with running_daemon() as daemon:
        many = daemon.workspace / "many"
        many.mkdir()
        for i in range(10_050):
            (many / f"f{i}").touch()
        result = run(daemon.client, "open('after.txt', 'w').write('x')")
        assert result.status == "completed"
        assert (result.result.files, result.result.files_truncated) == ((), True)


def test_the_raw_file_listing_shape(executor):
    (executor.workspace / "shape.txt").write_text("12345")
    try:
        import http.client

        class Conn(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(executor.socket))

        conn = Conn("x")
        conn.request("GET", "/files?path=", headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        entry = next(f for f in body["files"] if f["name"] == "shape.txt")
        assert set(entry) == {"name", "path", "size", "modified_time", "is_dir"}
        assert entry["size"] == 5
    finally:
        (executor.workspace / "shape.txt").unlink()


@pytest.mark.parametrize(
    "path", ["../outside.txt", "%2e%2e/outside.txt", "a/%2E%2E/%2e%2e/outside.txt", "%2Fetc%2Fpasswd"]
)
def test_the_daemon_itself_refuses_traversal(executor, path):
    import http.client

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(executor.socket))

    conn = Conn("x")
    conn.request("PUT", f"/files/{path}", body=b"data", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    assert resp.status == 400
    assert json.loads(resp.read())["error"] == "bad_path"
    # The small body was read and dropped, so the same connection still serves a request.
    conn.request("GET", "/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert conn.getresponse().status == 200
    conn.close()
    assert not (executor.workspace.parent / "outside.txt").exists()
