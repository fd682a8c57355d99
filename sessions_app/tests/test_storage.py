"""Workspace storage on both stores: S3 (moto's server, through boto3 and django-storages) and local files.

The sandboxes here are the fake runtime's (in-memory files): these tests are about what reaches storage,
under which keys, and how it comes back. test_storage_api.py does the same through real sandboxes.
"""

from __future__ import annotations

import io

import pytest
from botocore.exceptions import ClientError

from runtime.fake import FakeRuntime
from runtime.registry import get_runtime
from sessions_app import storage as st
from sessions_app.models import SessionStatus
from sessions_app.sandboxes import handle_for
from sessions_app.services import session_create, session_delete, session_end, session_provision
from sessions_app.workspaces import (
    stored_download,
    stored_list,
    stored_save,
    workspace_forget,
    workspace_save,
)

pytestmark = pytest.mark.django_db


def fake() -> FakeRuntime:
    runtime = get_runtime("fake")
    assert isinstance(runtime, FakeRuntime)
    return runtime


@pytest.fixture(params=["s3", "file"])
def any_store(request):
    """Each test using this runs on S3 (moto) and on local file storage."""
    if request.param == "s3":
        return request.getfixturevalue("s3_storage")
    return request.getfixturevalue("file_storage")


def save(session_id: str, path: str, data: bytes) -> None:
    stored_save(session_id=session_id, path=path, fileobj=io.BytesIO(data))


def read(session_id: str, path: str) -> bytes:
    return b"".join(stored_download(session_id=session_id, path=path))


def live_session(user, template, files: dict[str, bytes]):
    session = session_provision(session=session_create(owner=user, template=template))
    assert session.status == SessionStatus.RUNNING
    fake().sandboxes[session.id].files.update(files)
    return session


def test_a_missing_bucket_is_created_once(s3_storage):
    with pytest.raises(ClientError):
        s3_storage.client.head_bucket(Bucket=s3_storage.bucket)
    st.ensure_bucket()
    st.ensure_bucket()
    s3_storage.client.head_bucket(Bucket=s3_storage.bucket)


def test_detailed_health_creates_the_bucket(s3_storage, client):
    body = client.get("/api/v1/health/detailed").json()
    assert body["checks"]["storage"]["status"] == "healthy", body["checks"]["storage"]
    s3_storage.client.head_bucket(Bucket=s3_storage.bucket)


def test_detailed_health_names_an_unreachable_store(s3_storage, settings, client):
    import socket

    from conftest import use_storages

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    from botocore.config import Config

    options = dict(settings.STORAGES["default"]["OPTIONS"])
    options["endpoint_url"] = f"http://127.0.0.1:{closed_port}"
    options["client_config"] = Config(retries={"max_attempts": 1}, connect_timeout=1)
    use_storages(
        settings, {**settings.STORAGES, "default": {**settings.STORAGES["default"], "OPTIONS": options}}
    )
    response = client.get("/api/v1/health/detailed")
    assert response.status_code == 503
    body = response.json()
    assert "storage" in body["failing"]
    assert "127.0.0.1" in body["checks"]["storage"]["error"]


def test_session_prefixes_keep_abc_and_abc2_apart(any_store):
    save("abc", "a.txt", b"mine")
    save("abc2", "a.txt", b"neighbour")
    save("abc2", "deep/b.txt", b"neighbour too")
    assert [e["name"] for e in stored_list(session_id="abc", path="")] == ["a.txt"]
    workspace_forget(session_id="abc")
    with pytest.raises(FileNotFoundError):
        read("abc", "a.txt")
    assert read("abc2", "a.txt") == b"neighbour"
    assert read("abc2", "deep/b.txt") == b"neighbour too"


def test_the_stored_copy_lists_like_the_executor_and_serves_files(any_store):
    save("s1", "data.csv", b"a,b\n1,2\n")
    save("s1", "out/result.json", b'{"sum": 3}')
    save("s1", "out/deeper/x.bin", bytes(range(256)) * 1000)
    root = stored_list(session_id="s1", path="")
    assert [(e["name"], e["is_dir"]) for e in root] == [("data.csv", False), ("out", True)]
    entry = root[0]
    assert entry["path"] == "data.csv" and entry["container_path"] == "/workspace/data.csv"
    assert entry["size"] == 8 and entry["modified_time"].endswith("+00:00")
    out = stored_list(session_id="s1", path="out")
    assert [(e["path"], e["is_dir"]) for e in out] == [("out/deeper", True), ("out/result.json", False)]
    assert read("s1", "out/deeper/x.bin") == bytes(range(256)) * 1000
    with pytest.raises(NotADirectoryError):
        stored_list(session_id="s1", path="data.csv")
    with pytest.raises(FileNotFoundError):
        stored_list(session_id="s1", path="nothing")
    with pytest.raises(FileNotFoundError):
        read("s1", "out")  # a directory is not a file
    with pytest.raises(FileNotFoundError):
        read("s1", "missing.txt")


def test_an_ending_saves_the_workspace_and_mirrors_deletions(any_store, user, python_template, fake_runtime):
    session = live_session(user, python_template, {"keep.txt": b"keep", "dir/new.txt": b"new"})
    save(session.id, "stale.txt", b"deleted in the sandbox since it was uploaded")
    session_end(session=session, status=SessionStatus.TIMEOUT, reason="lifetime_exceeded")
    assert read(session.id, "keep.txt") == b"keep"
    assert read(session.id, "dir/new.txt") == b"new"
    with pytest.raises(FileNotFoundError):
        read(session.id, "stale.txt")
    assert session.id not in fake().sandboxes  # saved first, then removed


def test_a_save_that_cannot_reach_the_sandbox_keeps_what_was_stored(
    any_store, user, python_template, fake_runtime
):
    session = live_session(user, python_template, {"a.txt": b"a"})
    save(session.id, "uploaded.txt", b"stored at upload time")
    fake().lose(handle_for(session))
    assert workspace_save(session=session) is None
    assert read(session.id, "uploaded.txt") == b"stored at upload time"


def test_delete_removes_the_stored_copy_and_nothing_else(any_store, user, python_template, fake_runtime):
    session = live_session(user, python_template, {"a.txt": b"a"})
    session_end(session=session, status=SessionStatus.TERMINATED, reason="user_request")
    save(session.id + "x", "a.txt", b"a neighbour whose id starts the same")
    session_delete(session=session)
    with pytest.raises(FileNotFoundError):
        read(session.id, "a.txt")
    assert read(session.id + "x", "a.txt") == b"a neighbour whose id starts the same"


def test_the_s3_keys_are_under_the_session_prefix(s3_storage, user, python_template, fake_runtime):
    session = live_session(user, python_template, {"a.txt": b"a", "b/c.txt": b"c"})
    session_end(session=session, status=SessionStatus.TERMINATED, reason="user_request")
    listing = s3_storage.client.list_objects_v2(Bucket=s3_storage.bucket)
    keys = sorted(obj["Key"] for obj in listing["Contents"])
    assert keys == [f"sessions/{session.id}/workspace/a.txt", f"sessions/{session.id}/workspace/b/c.txt"]


def test_the_host_fallback_walk_skips_fifos_sockets_and_symlinks_without_blocking(tmp_path):
    """The save from the workspace directory (executor gone) yields regular files only, and opens none
    that could block: a FIFO with no writer would hang a plain open() forever."""
    import os
    import socket

    from runtime.host_files import regular_files

    (tmp_path / "kept.txt").write_text("kept")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.txt").write_text("deep")
    os.mkfifo(tmp_path / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    (tmp_path / "link").symlink_to("/etc/passwd")
    try:
        read = {path: opener().read() for path, opener in regular_files(str(tmp_path))}
    finally:
        server.close()
    assert read == {"kept.txt": b"kept", "sub/deep.txt": b"deep"}
