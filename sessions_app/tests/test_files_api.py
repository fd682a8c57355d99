"""File endpoints against real bubblewrap sandboxes: round trips, bad paths, size limits, ownership."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

# Sessions are provisioned by a task enqueued after commit: these tests commit for real.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("real_runtime")]
# execute-sync runs the execution in another thread, with its own connection: these tests commit for real.
THREADED = pytest.mark.django_db(transaction=True)


@pytest.fixture
def session_id(api):
    body = api.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json").json()
    yield body["id"]
    api.post(f"/api/v1/sessions/{body['id']}/terminate")


def upload(api, session_id, name, content, path=None):
    url = f"/api/v1/sessions/{session_id}/files/upload" + (f"?path={path}" if path is not None else "")
    return api.post(url, {"file": SimpleUploadedFile(name, content)}, format="multipart")


def test_upload_list_download_delete_round_trip(api, session_id):
    payload = bytes(range(256)) * 1000
    response = upload(api, session_id, "data.bin", payload, path="inputs/data.bin")
    assert response.status_code == 201, response.json()
    assert response.json() == {"session_id": session_id, "file_path": "inputs/data.bin", "size": len(payload)}
    listing = api.get(f"/api/v1/sessions/{session_id}/files?path=inputs").json()
    assert listing["count"] == 1 and listing["session_id"] == session_id
    entry = listing["files"][0]
    assert entry["name"] == "inputs/data.bin" and entry["size"] == len(payload)
    assert entry["container_path"] == "/workspace/inputs/data.bin" and entry["modified_time"]
    download = api.get(f"/api/v1/sessions/{session_id}/files/inputs/data.bin")
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment;")
    assert b"".join(download.streaming_content) == payload
    assert api.delete(f"/api/v1/sessions/{session_id}/files/inputs/data.bin").status_code == 204
    assert api.get(f"/api/v1/sessions/{session_id}/files/inputs/data.bin").status_code == 404


@THREADED
def test_code_sees_uploaded_files_and_its_files_can_be_downloaded(api, session_id):
    upload(api, session_id, "numbers.txt", b"1 2 3\n")
    body = api.post(
        f"/api/v1/sessions/{session_id}/execute-sync",
        {
            "code": "n = sum(map(int, open('numbers.txt').read().split()))\nopen('sum.txt','w').write(str(n))",
            "language": "python",
        },
        format="json",
    ).json()
    assert body["status"] == "completed", body
    assert b"".join(api.get(f"/api/v1/sessions/{session_id}/files/sum.txt").streaming_content) == b"6"


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.txt", "a/../../outside.txt", "x%00y"])
def test_bad_upload_paths_are_400(api, session_id, path):
    response = upload(api, session_id, "f.txt", b"x", path=path)
    assert response.status_code == 400, response.json()
    assert response.json()["error"] == "invalid_path"


@pytest.mark.parametrize("path", ["..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a%00b"])
def test_bad_download_paths_are_400_or_404(api, session_id, path):
    response = api.get(f"/api/v1/sessions/{session_id}/files/{path}")
    assert response.status_code in (400, 404)
    assert b"root:" not in b"".join(getattr(response, "streaming_content", [response.content]))


@THREADED
def test_a_symlink_out_of_the_workspace_is_refused(api, session_id):
    made = api.post(
        f"/api/v1/sessions/{session_id}/execute-sync",
        {"code": "import os\nos.symlink('/etc', 'etc-link')", "language": "python"},
        format="json",
    )
    assert made.json()["status"] == "completed", made.json()
    response = api.get(f"/api/v1/sessions/{session_id}/files/etc-link/passwd")
    assert response.status_code in (400, 404)


def test_uploads_over_100_mib_are_413_without_reading_them(api, session_id):
    response = api.generic(
        "POST",
        f"/api/v1/sessions/{session_id}/files/upload?path=big.bin",
        data=b"",
        content_type="multipart/form-data; boundary=xyz",
        CONTENT_LENGTH=str(101 * 1024 * 1024),
    )
    assert response.status_code == 413 and response.json()["error"] == "too_large"


def test_upload_without_a_file_is_400(api, session_id):
    response = api.post(f"/api/v1/sessions/{session_id}/files/upload", {"other": "x"}, format="multipart")
    assert response.status_code == 400


def test_an_ended_session_serves_its_saved_files_and_refuses_changes(api, session_id):
    upload(api, session_id, "kept.txt", b"kept")
    api.post(f"/api/v1/sessions/{session_id}/terminate")
    listing = api.get(f"/api/v1/sessions/{session_id}/files").json()
    assert [f["name"] for f in listing["files"]] == ["kept.txt"]
    assert b"".join(api.get(f"/api/v1/sessions/{session_id}/files/kept.txt").streaming_content) == b"kept"
    assert upload(api, session_id, "late.txt", b"x").status_code == 409
    assert api.delete(f"/api/v1/sessions/{session_id}/files/kept.txt").status_code == 409


def test_another_owners_files_are_404(api, other_api, session_id):
    upload(api, session_id, "secret.txt", b"secret")
    assert other_api.get(f"/api/v1/sessions/{session_id}/files").status_code == 404
    assert other_api.get(f"/api/v1/sessions/{session_id}/files/secret.txt").status_code == 404
    assert other_api.delete(f"/api/v1/sessions/{session_id}/files/secret.txt").status_code == 404
    assert upload(other_api, session_id, "x.txt", b"x").status_code == 404
