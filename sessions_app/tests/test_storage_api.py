"""Files that outlive the sandbox, through the API, real sandboxes (bubblewrap and Docker) and moto's S3 server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tracemalloc
import urllib.request
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from runtime import RuntimeFailure
from runtime.process import record as pr
from runtime.registry import get_runtime
from sandbox_site.testing import wait_until
from sessions_app.files import files_download, files_upload
from sessions_app.lifecycle import sessions_probe, sessions_sweep
from sessions_app.models import SandboxSession
from sessions_app.sandboxes import handle_for
from sessions_app.services import session_terminate
from sessions_app.storage import ensure_bucket

pytestmark = pytest.mark.django_db(transaction=True)

CSV = b"city,amount\nOslo,10.5\nLima,4\nOslo,2.5\nPune,7\n"
PANDAS_HANDLER = """
import json, os
import pandas as pd

def handler(event, context):
    df = pd.read_csv("inputs/sales.csv")
    result = {
        "rows": int(len(df)),
        "total": float(df["amount"].sum()),
        "by_city": {k: float(v) for k, v in df.groupby("city")["amount"].sum().items()},
    }
    os.makedirs("out", exist_ok=True)
    with open("out/result.json", "w") as fh:
        json.dump(result, fh, sort_keys=True)
    return result
"""
LEAKS = """
import os
os.symlink("/etc/passwd", "leak")
os.symlink("/etc", "etc-dir")
os.makedirs("out", exist_ok=True)
open("out/result.json", "w").write('{"ok": true}')
"""


def create(api, **body):
    response = api.post("/api/v1/sessions", {"template_id": "python-basic", **body}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def execute(api, session_id, code):
    response = api.post(
        f"/api/v1/sessions/{session_id}/execute-sync", {"code": code, "language": "python"}, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()


def upload(api, session_id, path, content):
    return api.post(
        f"/api/v1/sessions/{session_id}/files/upload?path={path}",
        {"file": SimpleUploadedFile(os.path.basename(path), content)},
        format="multipart",
    )


def download(api, session_id, path):
    response = api.get(f"/api/v1/sessions/{session_id}/files/{path}")
    body = b"".join(response.streaming_content) if response.status_code == 200 else response.content
    return response.status_code, body


def stored_keys(s3, session_id):
    listing = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=f"sessions/{session_id}/")
    return sorted(
        obj["Key"][len(f"sessions/{session_id}/workspace/") :] for obj in listing.get("Contents", [])
    )


@pytest.mark.usefixtures("real_runtime")
def test_a_csv_goes_through_pandas_and_the_result_comes_back_from_storage(api, s3_storage, real_runtime):
    """The issue's end-to-end case, on both runtimes: the result is downloaded after the sandbox is gone."""
    if real_runtime == "docker":
        session = create(api, template_id="python-datascience")
    else:  # the host's Python has no pandas: the session installs it, as an agent would
        session = create(api, memory="1Gi", dependencies=[{"name": "pandas"}])
        assert session["dependency_install_status"] == "completed", session["dependency_install_error"]
    sid = session["id"]
    assert upload(api, sid, "inputs/sales.csv", CSV).status_code == 201
    body = execute(api, sid, PANDAS_HANDLER)
    assert body["status"] == "completed", body["stderr"]
    expected = {"by_city": {"Lima": 4.0, "Oslo": 13.0, "Pune": 7.0}, "rows": 4, "total": 24.0}
    assert body["return_value"] == expected
    assert api.post(f"/api/v1/sessions/{sid}/terminate").json()["status"] == "terminated"
    assert not [h for h in get_runtime(real_runtime).list_managed() if h.session_id == sid]

    status, content = download(api, sid, "out/result.json")
    assert status == 200 and json.loads(content) == expected
    assert "out/result.json" in stored_keys(s3_storage, sid)
    listing = api.get(f"/api/v1/sessions/{sid}/files?path=out").json()
    assert [(f["name"], f["size"]) for f in listing["files"]] == [("out/result.json", len(content))]


@pytest.mark.usefixtures("real_runtime")
def test_symlinks_out_of_the_workspace_never_reach_storage(api, other_api, s3_storage):
    sid = create(api)["id"]
    assert upload(api, sid, "data.bin", b"\x00\x01" * 1000).status_code == 201
    assert execute(api, sid, LEAKS)["status"] == "completed"
    api.post(f"/api/v1/sessions/{sid}/terminate")

    assert stored_keys(s3_storage, sid) == ["data.bin", "out/result.json"]
    names = [f["name"] for f in api.get(f"/api/v1/sessions/{sid}/files").json()["files"]]
    assert names == ["data.bin", "out/result.json"]
    for path in ("leak", "etc-dir/passwd", "etc-dir"):
        status, body = download(api, sid, path)
        assert status == 404 and b"root:" not in body
    assert download(api, sid, "data.bin") == (200, b"\x00\x01" * 1000)
    # The stored copy is read-only, and as private as the session.
    assert upload(api, sid, "new.txt", b"x").status_code == 409
    assert api.delete(f"/api/v1/sessions/{sid}/files/data.bin").status_code == 409
    assert other_api.get(f"/api/v1/sessions/{sid}/files").status_code == 404
    assert other_api.get(f"/api/v1/sessions/{sid}/files/data.bin").status_code == 404


@pytest.mark.parametrize(
    ("url", "codes"),
    [
        ("files/..%2F..%2Fetc%2Fpasswd", (400, 404)),
        ("files/%2Fetc%2Fpasswd", (400, 404)),
        ("files/a%00b", (400, 404)),
        ("files?path=../x", (400,)),
        ("files?path=/etc", (400,)),
        ("files?path=data.txt", (400,)),
        ("files/missing.txt", (404,)),
        ("files?path=missing", (404,)),
    ],
)
@pytest.mark.usefixtures("sessions_on_process")
def test_bad_paths_on_the_stored_copy(api, s3_storage, url, codes):
    sid = create(api)["id"]
    upload(api, sid, "data.txt", b"x")
    api.post(f"/api/v1/sessions/{sid}/terminate")
    response = api.get(f"/api/v1/sessions/{sid}/{url}")
    assert response.status_code in codes
    content = b"".join(response.streaming_content) if response.status_code == 200 else response.content
    assert b"root:" not in content


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a%00b"])
@pytest.mark.usefixtures("sessions_on_process")
def test_bad_paths_in_every_live_file_endpoint_are_refused(api, s3_storage, path):
    sid = create(api)["id"]
    quoted = path.replace("/", "%2F")
    assert api.get(f"/api/v1/sessions/{sid}/files?path={quoted}").status_code == 400
    assert api.delete(f"/api/v1/sessions/{sid}/files/{quoted}").status_code in (400, 404)
    assert upload(api, sid, quoted, b"x").status_code == 400
    response = api.get(f"/api/v1/sessions/{sid}/files/{quoted}")
    assert response.status_code in (400, 404) and b"root:" not in response.content
    ensure_bucket()
    assert stored_keys(s3_storage, sid) == []


@pytest.mark.usefixtures("sessions_on_process")
def test_a_file_named_upload_is_a_file_like_any_other(api, s3_storage):
    sid = create(api)["id"]
    assert upload(api, sid, "upload", b"named upload").status_code == 201
    assert download(api, sid, "upload") == (200, b"named upload")
    api.post(f"/api/v1/sessions/{sid}/terminate")
    assert download(api, sid, "upload") == (200, b"named upload")
    assert api.delete(f"/api/v1/sessions/{sid}/files/upload").status_code == 409


@pytest.mark.usefixtures("real_runtime")
def test_idle_and_lifetime_endings_save_the_workspace(api, s3_storage):
    idle, old = create(api)["id"], create(api)["id"]
    upload(api, idle, "idle.txt", b"idle")
    upload(api, old, "old.txt", b"old")
    # Written only in the sandbox: whatever the save stores came from the sandbox at the ending.
    execute(api, idle, "open('later.txt', 'w').write('after upload')")
    past = timezone.now() - timedelta(seconds=1)
    SandboxSession.objects.filter(pk=idle).update(idle_deadline_at=past)
    SandboxSession.objects.filter(pk=old).update(expires_at=past)
    sessions_sweep()
    assert api.get(f"/api/v1/sessions/{idle}").json()["termination_reason"] == "idle_timeout"
    assert api.get(f"/api/v1/sessions/{old}").json()["status"] == "timeout"
    assert stored_keys(s3_storage, idle) == ["idle.txt", "later.txt"]
    assert stored_keys(s3_storage, old) == ["old.txt"]
    assert download(api, idle, "later.txt") == (200, b"after upload")


@pytest.mark.usefixtures("sessions_on_process")
def test_a_crashed_sandbox_is_saved_from_its_directory_without_following_symlinks(api, s3_storage, settings):
    sid = create(api)["id"]
    upload(api, sid, "data.txt", b"data")
    execute(api, sid, LEAKS + "\nopen('made.txt', 'w').write('made')")
    runtime = get_runtime("process")
    record = pr.read_record(runtime.session_dir(sid))
    os.killpg(record["pgid"], signal.SIGKILL)  # the executor dies; the workspace stays on disk
    client = runtime.executor(handle_for(SandboxSession.objects.get(pk=sid)))

    def executor_gone() -> bool:
        try:
            client.health()
        except RuntimeFailure:
            return True
        return False

    wait_until(executor_gone, what="the killed executor to stop answering")
    settings.SANDBOX_HEALTH_FAILURES = 1
    assert sessions_probe()["lost"] == 1
    session = api.get(f"/api/v1/sessions/{sid}").json()
    assert (session["status"], session["termination_reason"]) == ("failed", "container_lost")
    assert stored_keys(s3_storage, sid) == ["data.txt", "made.txt", "out/result.json"]
    assert download(api, sid, "leak")[0] == 404


@pytest.mark.usefixtures("real_runtime")
def test_a_new_session_can_start_from_a_saved_workspace(api, other_api, s3_storage):
    first = create(api)["id"]
    upload(api, first, "inputs/data.csv", CSV)
    execute(api, first, "import os\nos.makedirs('out')\nopen('out/n.txt', 'w').write('42')")
    api.post(f"/api/v1/sessions/{first}/terminate")

    second = create(api, restore_from=first)
    assert second["status"] == "running" and second["restore_from"] == first
    body = execute(api, second["id"], "print(open('out/n.txt').read(), len(open('inputs/data.csv').read()))")
    assert body["stdout"].split() == ["42", str(len(CSV))]
    # Restored files are the new session's own from now on.
    assert download(api, second["id"], "out/n.txt") == (200, b"42")


@pytest.mark.usefixtures("sessions_on_process")
def test_restore_from_refuses_live_missing_and_other_owners_sessions(api, other_api, s3_storage):
    live = create(api)["id"]
    response = api.post(
        "/api/v1/sessions", {"template_id": "python-basic", "restore_from": live}, format="json"
    )
    assert response.status_code == 409 and response.json()["error"] == "restore_source_live"
    api.post(f"/api/v1/sessions/{live}/terminate")
    for client, source in ((other_api, live), (api, "no-such-session"), (api, "../x")):
        response = client.post(
            "/api/v1/sessions", {"template_id": "python-basic", "restore_from": source}, format="json"
        )
        assert response.status_code in (400, 404), response.json()
    assert SandboxSession.objects.count() == 1


@pytest.mark.usefixtures("sessions_on_process")
def test_delete_removes_the_stored_workspace(api, s3_storage):
    sid, neighbour = create(api, id="abc")["id"], create(api, id="abc2")["id"]
    # Stored files are keyed by the internal id; "abc" is only its owner's name for it.
    key = {s.client_id: s.pk for s in SandboxSession.objects.all()}
    upload(api, sid, "a.txt", b"a")
    upload(api, neighbour, "b.txt", b"b")
    api.post(f"/api/v1/sessions/{sid}/terminate")
    assert stored_keys(s3_storage, key[sid]) == ["a.txt"]
    assert api.delete(f"/api/v1/sessions/{sid}").status_code == 204
    assert stored_keys(s3_storage, key[sid]) == []
    # uploads are stored while the session runs
    assert stored_keys(s3_storage, key[neighbour]) == ["b.txt"]
    assert api.delete(f"/api/v1/sessions/{neighbour}").status_code == 204
    assert stored_keys(s3_storage, key[neighbour]) == []


@pytest.mark.usefixtures("sessions_on_process")
def test_big_stored_files_redirect_to_a_presigned_url(api, s3_storage, settings):
    settings.SANDBOX_PRESIGN_OVER = 1000
    sid = create(api)["id"]
    big, small = os.urandom(5000), b"small"
    upload(api, sid, "big.bin", big)
    upload(api, sid, "small.txt", small)
    assert download(api, sid, "big.bin") == (200, big)  # live files always stream
    api.post(f"/api/v1/sessions/{sid}/terminate")
    response = api.get(f"/api/v1/sessions/{sid}/files/big.bin")
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(s3_storage.url) and "Signature" in location
    with urllib.request.urlopen(location, timeout=10) as fetched:
        assert fetched.read() == big
        assert "big.bin" in fetched.headers["Content-Disposition"]
    assert download(api, sid, "small.txt") == (200, small)


@pytest.mark.usefixtures("sessions_on_process")
def test_100_mib_streams_through_the_control_plane_in_chunks(api, s3_storage, tmp_path):
    """Upload (to the sandbox and S3), the save at the end, and the download never hold the file whole."""
    sid = create(api, disk="1Gi")["id"]
    session = SandboxSession.objects.get(pk=sid)
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as fh:
        for _ in range(100):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            fh.write(block)
    # boto3 holds at most two 8 MiB parts (plus the one being read, plus its checksum pass): about 30 MiB
    # measured above a ~14 MiB baseline of clients and caches. Far below the file's 100 MiB.
    limit = 50 * 1024 * 1024
    tracemalloc.start()
    try:
        with open(source, "rb") as fh:
            result = files_upload(session=session, path="big.bin", fileobj=fh, size=100 * 1024 * 1024)
        assert result["size"] == 100 * 1024 * 1024
        assert tracemalloc.get_traced_memory()[1] < limit
        tracemalloc.reset_peak()
        session_terminate(session=session)
        assert tracemalloc.get_traced_memory()[1] < limit
        tracemalloc.reset_peak()
        session.refresh_from_db()
        streamed = hashlib.sha256()
        for chunk in files_download(session=session, path="big.bin"):
            streamed.update(chunk)
        assert tracemalloc.get_traced_memory()[1] < limit
    finally:
        tracemalloc.stop()
    assert streamed.hexdigest() == digest.hexdigest()
