"""Workspace files on every backend, through the sandbox's executor: upload, list, download, delete, what an
execution reports it changed, and refusals of every path that leads out of the workspace."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from runtime.tests.conftest import run_code
from runtime.tests.contract.conftest import changed_files


def test_upload_list_download_delete_round_trip_seen_by_code_and_host(backend):
    handle = backend.make()
    client = backend.runtime.executor(handle)
    payload = os.urandom(300 * 1024)  # several chunks
    assert client.upload("docs/data.bin", io.BytesIO(payload), len(payload)) == {
        "path": "docs/data.bin",
        "size": len(payload),
    }
    assert backend.read_workspace_file(backend.runtime, handle, "docs/data.bin") == payload
    seen = run_code(
        backend.runtime,
        handle,
        "import hashlib; print(hashlib.sha256(open('docs/data.bin', 'rb').read()).hexdigest())",
    )
    assert seen.stdout.strip() == hashlib.sha256(payload).hexdigest()

    listing = client.list_files("docs")
    assert [(f["name"], f["path"], f["size"], f["is_dir"]) for f in listing] == [
        ("data.bin", "docs/data.bin", len(payload), False)
    ]
    assert {f["name"]: f["is_dir"] for f in client.list_files()} == {"docs": True}
    assert b"".join(client.download("docs/data.bin")) == payload

    client.delete("docs/data.bin")
    assert backend.read_workspace_file(backend.runtime, handle, "docs/data.bin") is None
    with pytest.raises(FileNotFoundError):
        client.delete("docs/data.bin")
    with pytest.raises(FileNotFoundError):
        b"".join(client.download("docs/data.bin"))
    client.delete("docs")  # directories go with their contents
    assert client.list_files() == []


def test_an_execution_reports_the_files_it_created_modified_and_deleted_with_sizes(backend):
    handle = backend.make()
    client = backend.runtime.executor(handle)
    client.upload("old.txt", io.BytesIO(b"old"), 3)
    client.upload("gone.txt", io.BytesIO(b"x"), 1)
    out = run_code(
        backend.runtime,
        handle,
        "import os\nopen('new.txt', 'w').write('12345')\nopen('old.txt', 'a').write('er')\nos.remove('gone.txt')\n",
    )
    assert out.status == "completed", out.result
    assert changed_files(out) == {
        "new.txt": ("created", 5),
        "old.txt": ("modified", 5),
        "gone.txt": ("deleted", None),
    }
    made = run_code(backend.runtime, handle, "echo hi > shell.txt", language="shell")
    assert changed_files(made) == {"shell.txt": ("created", 3)}
    assert b"".join(client.download("shell.txt")) == b"hi\n"


def _not_refused(client, path: str) -> list[str]:
    """The file operations on `path` that the executor did not refuse as outside the workspace."""
    operations = {
        "download": lambda: b"".join(client.download(path)),
        "upload": lambda: client.upload(path, io.BytesIO(b"x"), 1),
        "delete": lambda: client.delete(path),
        "list": lambda: client.list_files(path),
        "walk": lambda: client.walk_files(path, limit=10),
    }
    allowed = []
    for name, operation in operations.items():
        try:
            operation()
        except ValueError:
            continue
        except FileNotFoundError:
            pass
        allowed.append(name)
    return allowed


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "..", "sub/..", "a\x00b"])
def test_paths_outside_the_workspace_are_refused_for_every_file_operation(backend, shared, path):
    assert _not_refused(backend.runtime.executor(shared), path) == []


def test_symlinks_the_code_makes_to_places_outside_the_workspace_are_refused(backend):
    handle = backend.make()
    client = backend.runtime.executor(handle)
    out = run_code(
        backend.runtime,
        handle,
        "import os\nos.symlink('/etc', 'escape')\nos.symlink('/etc/passwd', 'escape-file')\n"
        "os.symlink('/proc/1/root', 'escape-root')\nopen('real.txt', 'w').write('real')\n"
        "os.symlink('real.txt', 'inside')\n",
    )
    assert out.status == "completed", out.result
    for path in ("escape/passwd", "escape/new.txt", "escape-root/etc/passwd"):
        assert _not_refused(client, path) == [], path
    with pytest.raises(ValueError):
        b"".join(client.download("escape-file"))
    client.delete("escape-file")  # the link itself, which is in the workspace
    assert not os.path.exists("/etc/new.txt") and os.path.exists("/etc/passwd")
    assert b"".join(client.download("inside")) == b"real"  # a link within the workspace is followed


def test_a_recursive_listing_walks_every_directory_in_a_fixed_order_up_to_its_limit(backend):
    handle = backend.make()
    client = backend.runtime.executor(handle)
    for path, data in {"b.txt": b"bb", "a.txt": b"a", "a/x.txt": b"xxx", "a/y/z.txt": b"z" * 10}.items():
        client.upload(path, io.BytesIO(data), len(data))
    made = run_code(
        backend.runtime,
        handle,
        "import os\nos.mkdir('empty')\nos.symlink('a', 'link-dir')\nos.mkfifo('pipe')\n",
    )
    assert made.status == "completed", made.result

    files, truncated = client.walk_files("", limit=100)
    # A directory's files by name, then its subdirectories'; the link is listed, not followed; no FIFO.
    assert [f["path"] for f in files] == ["a.txt", "b.txt", "link-dir", "a/x.txt", "a/y/z.txt"]
    assert not truncated and not any(f["is_dir"] for f in files)
    assert {f["path"]: f["size"] for f in files if f["path"] != "link-dir"} == {
        "a.txt": 1,
        "b.txt": 2,
        "a/x.txt": 3,
        "a/y/z.txt": 10,
    }
    assert all(f["modified_time"].endswith("+00:00") for f in files)
    assert [f["path"] for f in client.walk_files("a", limit=100)[0]] == ["a/x.txt", "a/y/z.txt"]
    assert client.walk_files("empty", limit=100) == ([], False)
    cut, truncated = client.walk_files("", limit=4)
    assert [f["path"] for f in cut] == ["a.txt", "b.txt", "link-dir", "a/x.txt"] and truncated
    assert client.walk_files("", limit=5)[1] is False
    with pytest.raises(FileNotFoundError):
        client.walk_files("nowhere", limit=10)
    with pytest.raises(ValueError):
        client.walk_files("a.txt", limit=10)  # a file, not a directory
