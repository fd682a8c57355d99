"""Files API against what sandboxed code can plant: symlinked directories, FIFOs, sockets (real sandboxes).

Whatever the workspace holds, the files endpoints answer promptly with a 2xx or a 400 in the API's error
shape, never a 500 or a hang; special files are neither listed, served nor saved.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("real_runtime")]

# Generous: a call that returns at all returns within a second or two; the bug was a 30 s executor timeout.
DEADLINE = 20.0

PLANT_LINKS = """
import os
os.makedirs('real', exist_ok=True)
open('real/inside.txt', 'w').write('inside')
os.symlink('/etc', 'd')
os.symlink('/workspace/real', 'd2')
os.symlink('loop', 'loop')
"""

PLANT_SPECIAL = """
import os, socket
os.mkfifo('p')
s = socket.socket(socket.AF_UNIX)
s.bind('s')
os.symlink('p', 'to-p')
open('plain.txt', 'w').write('plain')
"""


@pytest.fixture
def session_id(api):
    body = api.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json").json()
    assert body["status"] == "running", body
    yield body["id"]
    api.post(f"/api/v1/sessions/{body['id']}/terminate")


def run(api, session_id: str, code: str) -> None:
    body = api.post(
        f"/api/v1/sessions/{session_id}/execute-sync", {"code": code, "language": "python"}, format="json"
    ).json()
    assert body["status"] == "completed", body


def within_deadline(call: Callable[[], Any]) -> Any:
    """Run `call` in a thread and fail if it has not returned by DEADLINE (it used to hang on a FIFO)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), f"the call did not return within {DEADLINE:g} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def assert_invalid_path(response) -> None:
    assert response.status_code == 400, (response.status_code, getattr(response, "content", b"")[:300])
    body = response.json()
    assert body["error"] == "invalid_path"
    assert set(body) >= {"error", "message", "detail", "request_id"}


def test_a_symlinked_directory_out_of_the_workspace_is_400_for_every_file_call(api, session_id):
    run(api, session_id, PLANT_LINKS)
    base = f"/api/v1/sessions/{session_id}/files"
    assert_invalid_path(api.get(f"{base}?path=d"))
    assert_invalid_path(api.get(f"{base}/d/passwd"))
    assert_invalid_path(api.get(f"{base}/d/x"))
    assert_invalid_path(api.delete(f"{base}/d/passwd"))
    upload = api.post(
        f"{base}/upload?path=d/new.txt", {"file": SimpleUploadedFile("new.txt", b"x")}, format="multipart"
    )
    assert_invalid_path(upload)
    assert_invalid_path(api.get(f"{base}/loop"))
    assert_invalid_path(api.get(f"{base}?path=loop"))


def test_a_symlinked_directory_inside_the_workspace_is_followed(api, session_id):
    run(api, session_id, PLANT_LINKS)
    base = f"/api/v1/sessions/{session_id}/files"
    listing = api.get(f"{base}?path=d2")
    assert listing.status_code == 200, listing.json()
    assert [f["name"] for f in listing.json()["files"]] == ["d2/inside.txt"]
    assert b"".join(api.get(f"{base}/d2/inside.txt").streaming_content) == b"inside"


def test_a_link_out_of_the_workspace_can_be_deleted_and_its_target_stays(api, session_id):
    run(api, session_id, PLANT_LINKS)
    base = f"/api/v1/sessions/{session_id}/files"
    assert api.delete(f"{base}/d").status_code == 204
    names = [f["name"] for f in api.get(base).json()["files"]]
    assert "d" not in names
    assert os.path.exists("/etc/passwd")


def test_special_files_are_not_listed_served_or_saved_and_nothing_hangs(api, session_id):
    run(api, session_id, PLANT_SPECIAL)
    base = f"/api/v1/sessions/{session_id}/files"
    listing = within_deadline(lambda: api.get(base))
    assert listing.status_code == 200, listing.json()
    names = {f["name"] for f in listing.json()["files"]}
    assert "plain.txt" in names
    assert not names & {"p", "s", "to-p"}
    for name in ("p", "s", "to-p"):
        assert_invalid_path(within_deadline(lambda name=name: api.get(f"{base}/{name}")))

    ended = within_deadline(lambda: api.post(f"/api/v1/sessions/{session_id}/terminate"))
    assert ended.status_code == 200, ended.json()
    saved = api.get(base).json()
    assert [f["name"] for f in saved["files"]] == ["plain.txt"]
