"""GET /sessions/{id}/files as the original API lists: recursive by default, each `name` the path relative to
the workspace, `path` and `limit`; one directory level with recursive=false. Live and from storage alike."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

# Sessions are provisioned by a task enqueued after commit: these tests commit for real.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fake_runtime")]

TREE = {"b.txt": b"bb", "a.txt": b"a", "out/a.txt": b"xxx", "out/deep/z.txt": b"zz"}
ORDER = ["a.txt", "b.txt", "out/a.txt", "out/deep/z.txt"]


@pytest.fixture
def session_id(api):
    sid = api.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json").json()["id"]
    for path, data in TREE.items():
        url = f"/api/v1/sessions/{sid}/files/upload?path={path}"
        assert api.post(url, {"file": SimpleUploadedFile("f", data)}, format="multipart").status_code == 201
    return sid


def listing(api, sid, query=""):
    response = api.get(f"/api/v1/sessions/{sid}/files{query}")
    assert response.status_code == 200, response.json()
    return response.json()


def test_the_listing_is_recursive_by_default_with_workspace_relative_names(api, session_id):
    body = listing(api, session_id)
    assert [f["name"] for f in body["files"]] == ORDER
    assert body["count"] == 4 and body["truncated"] is False and body["session_id"] == session_id
    entry = body["files"][2]
    assert entry["container_path"] == "/workspace/out/a.txt" and entry["size"] == 3
    assert entry["path"] == "out/a.txt" and entry["is_dir"] is False and entry["modified_time"]
    assert [f["name"] for f in listing(api, session_id, "/?path=out")["files"]] == [
        "out/a.txt",
        "out/deep/z.txt",
    ]


def test_limit_cuts_the_listing_and_says_so(api, session_id):
    body = listing(api, session_id, "?limit=3")
    assert [f["name"] for f in body["files"]] == ORDER[:3] and body["count"] == 3 and body["truncated"]
    assert listing(api, session_id, "?limit=4")["truncated"] is False


def test_one_directory_level_on_request(api, session_id):
    body = listing(api, session_id, "?recursive=false")
    assert [(f["name"], f["is_dir"]) for f in body["files"]] == [
        ("a.txt", False),
        ("b.txt", False),
        ("out", True),
    ]
    out = listing(api, session_id, "?recursive=false&path=out&limit=1")
    assert [f["name"] for f in out["files"]] == ["a.txt"] and out["truncated"] is True


def test_bad_listing_parameters_are_400(api, session_id):
    for query in ("?limit=0", "?limit=10001", "?limit=x", "?recursive=maybe"):
        response = api.get(f"/api/v1/sessions/{session_id}/files{query}")
        assert response.status_code == 400 and response.json()["error"] == "validation_error", query


def test_an_ended_sessions_stored_files_are_listed_the_same_way(api, session_id):
    live = listing(api, session_id)["files"]
    assert api.post(f"/api/v1/sessions/{session_id}/terminate").json()["status"] == "terminated"
    stored = listing(api, session_id)
    assert [(f["name"], f["size"]) for f in stored["files"]] == [(f["name"], f["size"]) for f in live]
    assert listing(api, session_id, "?limit=1")["truncated"] is True
    assert [f["name"] for f in listing(api, session_id, "?recursive=false")["files"]] == [
        "a.txt",
        "b.txt",
        "out",
    ]


def test_another_owners_listing_is_404(other_api, session_id):
    assert other_api.get(f"/api/v1/sessions/{session_id}/files").status_code == 404
