"""Execution artifacts: the files an execution created or modified, with sizes, downloadable after the end."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from executions_app.services import _artifacts
from runtime import FileChange

pytestmark = pytest.mark.django_db(transaction=True)

WRITER = """
import os
os.makedirs("out/deep", exist_ok=True)
open("out/report.txt", "w").write("hello")
open("out/deep/data.bin", "wb").write(bytes(range(250)) * 4)
open("existing.txt", "a").write(" and more")
os.remove("gone.txt")
"""


def test_artifacts_keep_the_executors_order_and_unknown_sizes_stay_null():
    files = (
        FileChange("a.txt", "created", 3),
        FileChange("b.txt", "created", None),  # from an executor that reports no sizes
        FileChange("c.txt", "modified", 7),
        FileChange("a.txt.bak", "deleted"),
    )
    assert _artifacts(files) == [
        {"path": "a.txt", "size": 3, "change": "created"},
        {"path": "b.txt", "size": None, "change": "created"},
        {"path": "c.txt", "size": 7, "change": "modified"},
        {"path": "a.txt.bak", "size": None, "change": "deleted"},
    ]


@pytest.mark.usefixtures("real_runtime")
def test_artifacts_have_sizes_and_download_after_the_session_ended(api, other_api, s3_storage):
    session_id = api.post("/api/v1/sessions", {"template_id": "python-basic"}, format="json").json()["id"]
    for name, content in (("existing.txt", b"before"), ("gone.txt", b"bye")):
        api.post(
            f"/api/v1/sessions/{session_id}/files/upload",
            {"file": SimpleUploadedFile(name, content)},
            format="multipart",
        )
    body = api.post(
        f"/api/v1/sessions/{session_id}/execute-sync", {"code": WRITER, "language": "python"}, format="json"
    ).json()
    assert body["status"] == "completed", body["stderr"]
    expected = [
        {"path": "out/deep/data.bin", "size": 1000, "change": "created"},
        {"path": "out/report.txt", "size": 5, "change": "created"},
        {"path": "existing.txt", "size": len(b"before and more"), "change": "modified"},
        {"path": "gone.txt", "size": None, "change": "deleted"},
    ]
    assert body["artifacts"] == expected
    assert api.get(f"/api/v1/executions/{body['id']}").json()["artifacts"] == expected

    assert api.post(f"/api/v1/sessions/{session_id}/terminate").json()["status"] == "terminated"
    for artifact in expected[:3]:
        response = api.get(f"/api/v1/sessions/{session_id}/files/{artifact['path']}")
        assert response.status_code == 200, artifact
        assert len(b"".join(response.streaming_content)) == artifact["size"]
    assert api.get(f"/api/v1/sessions/{session_id}/files/gone.txt").status_code == 404
    assert other_api.get(f"/api/v1/sessions/{session_id}/files/out/report.txt").status_code == 404
