"""Client-chosen session ids are per owner: another tenant's choice of id is neither a collision nor an oracle.

The attack: tenant B asks for an id tenant A holds. It used to answer 409 duplicate_id, telling B that A has a
session of that name. Now B simply gets a session of its own under that name, and every lookup by id (REST,
files, executions, console) resolves the caller's own session; another owner's id, chosen or internal, is 404.
"""

from __future__ import annotations

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from sessions_app.models import SandboxSession

pytestmark = pytest.mark.django_db(transaction=True)


def create(api, **body):
    return api.post("/api/v1/sessions", {"template_id": "python-basic", **body}, format="json")


def created(api, **body):
    response = create(api, **body)
    assert response.status_code == 201, response.json()
    return response.json()


def internal_id(owner, client_id: str) -> str:
    return SandboxSession.objects.get(owner=owner, client_id=client_id).pk


@pytest.mark.usefixtures("fake_runtime")
def test_two_owners_both_create_build_1_and_each_sees_only_their_own(api, other_api, user, other_user):
    mine = created(api, id="build-1", metadata={"team": "a"})
    theirs = created(other_api, id="build-1", metadata={"team": "b"})
    assert mine["id"] == theirs["id"] == "build-1"
    assert theirs["metadata"] == {"team": "b"}

    assert api.get("/api/v1/sessions/build-1").json()["metadata"] == {"team": "a"}
    assert other_api.get("/api/v1/sessions/build-1").json()["metadata"] == {"team": "b"}
    assert [s["metadata"] for s in api.get("/api/v1/sessions").json()["items"]] == [{"team": "a"}]
    assert [s["metadata"] for s in other_api.get("/api/v1/sessions").json()["items"]] == [{"team": "b"}]

    # Two sandboxes with two internal ids: names, directories and stored files never meet.
    a, b = internal_id(user, "build-1"), internal_id(other_user, "build-1")
    assert a != b and a.startswith("sess_") and b.startswith("sess_")
    # Ending one owner's "build-1" leaves the other's running.
    assert other_api.post("/api/v1/sessions/build-1/terminate").json()["status"] == "terminated"
    assert api.get("/api/v1/sessions/build-1").json()["status"] == "running"


@pytest.mark.usefixtures("fake_runtime")
def test_creating_an_id_another_owner_holds_reveals_nothing(api, other_api):
    created(api, id="taken-by-a")
    # B's create of A's id answers exactly as B's create of an id nobody has.
    held = create(other_api, id="taken-by-a")
    fresh = create(other_api, id="never-used")
    assert (held.status_code, fresh.status_code) == (201, 201)
    assert set(held.json()) == set(fresh.json())
    assert held.json()["id"] == "taken-by-a" and held.json()["metadata"] == {}


@pytest.mark.usefixtures("fake_runtime")
def test_your_own_live_or_ended_session_still_collides(api, other_api):
    created(api, id="build-1")
    live = create(api, id="build-1")
    assert live.status_code == 409 and live.json()["error"] == "duplicate_id"
    api.post("/api/v1/sessions/build-1/terminate")
    ended = create(api, id="build-1")
    assert ended.status_code == 409 and ended.json()["error"] == "duplicate_id"
    # A session created without an id has its internal id as its id; that collides for its owner too.
    generated = created(api)["id"]
    assert create(api, id=generated).json()["error"] == "duplicate_id"
    assert create(other_api, id=generated).status_code == 201


@pytest.mark.usefixtures("fake_runtime")
def test_another_owners_client_id_or_internal_id_is_404_everywhere(api, other_api, user):
    created(api, id="build-1")
    hidden = internal_id(user, "build-1")
    for ident in ("build-1", hidden):
        for method, url in [
            ("get", f"/api/v1/sessions/{ident}"),
            ("post", f"/api/v1/sessions/{ident}/terminate"),
            ("post", f"/api/v1/sessions/{ident}/keepalive"),
            ("get", f"/api/v1/sessions/{ident}/files"),
            ("get", f"/api/v1/sessions/{ident}/executions"),
            ("post", f"/api/v1/sessions/{ident}/execute"),
            ("delete", f"/api/v1/sessions/{ident}"),
        ]:
            response = getattr(other_api, method)(url, {"code": "print(1)"} if method == "post" else None)
            assert response.status_code == 404, (method, url, response.content)
            assert response.json()["error"] == "session_not_found"
    # B's restore_from with A's id finds nothing of B's.
    refused = create(other_api, restore_from="build-1")
    assert refused.status_code == 404 and refused.json()["error"] == "restore_source_not_found"
    # The owner reaches it by either id (console links use the internal one).
    assert api.get(f"/api/v1/sessions/{hidden}").json()["id"] == "build-1"
    assert api.get("/api/v1/sessions/build-1").status_code == 200


@pytest.mark.usefixtures("fake_runtime")
def test_staff_resolve_internal_ids_and_unambiguous_client_ids(api, other_api, staff_api, user, other_user):
    created(api, id="build-1")
    created(other_api, id="build-1")
    created(other_api, id="only-b")
    # "build-1" names two owners' sessions: staff use the internal id (the console and admin show it).
    assert staff_api.get("/api/v1/sessions/build-1").status_code == 404
    for owner in (user, other_user):
        pk = internal_id(owner, "build-1")
        assert staff_api.get(f"/api/v1/sessions/{pk}").json()["id"] == "build-1"
    assert staff_api.get("/api/v1/sessions/only-b").json()["id"] == "only-b"
    # Staff's own "build-1" is theirs, however many tenants also chose it.
    created(staff_api, id="build-1", metadata={"team": "ops"})
    assert staff_api.get("/api/v1/sessions/build-1").json()["metadata"] == {"team": "ops"}


@pytest.mark.usefixtures("fake_runtime")
def test_executions_name_their_session_by_its_client_id(api, other_api):
    created(api, id="build-1")
    created(other_api, id="build-1")
    accepted = api.post(
        "/api/v1/sessions/build-1/execute", {"code": "print(1)", "language": "python"}, format="json"
    )
    assert accepted.status_code == 201, accepted.json()
    assert accepted.json()["session_id"] == "build-1"
    execution = api.get(f"/api/v1/executions/{accepted.json()['execution_id']}").json()
    assert execution["session_id"] == "build-1"
    listed = api.get("/api/v1/sessions/build-1/executions").json()["items"]
    assert [e["session_id"] for e in listed] == ["build-1"]
    assert other_api.get("/api/v1/sessions/build-1/executions").json()["items"] == []
    assert other_api.get(f"/api/v1/executions/{accepted.json()['execution_id']}").status_code == 404


@pytest.mark.usefixtures("fake_runtime")
def test_console_shows_client_ids_and_hides_other_owners_sessions(api, other_api, user, other_user):
    created(api, id="build-1")
    created(other_api, id="build-1")
    mine, theirs = internal_id(user, "build-1"), internal_id(other_user, "build-1")
    console = Client()
    console.force_login(user)
    page = console.get(f"/sessions/{mine}/")
    assert page.status_code == 200 and b"build-1" in page.content
    assert console.get("/sessions/build-1/").status_code == 200
    assert console.get(f"/sessions/{theirs}/").status_code == 404
    assert console.get(f"/sessions/{theirs}/executions/").status_code in (404, 405)
    # The list searches the ids its owner knows and links each by internal id, the owner's own only.
    listing = console.get("/sessions/?q=build").content.decode()
    assert f"/sessions/{mine}/" in listing and theirs not in listing


def upload(api, session_id, path, content):
    response = api.post(
        f"/api/v1/sessions/{session_id}/files/upload?path={path}",
        {"file": SimpleUploadedFile(os.path.basename(path), content)},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    return response.json()


def download(api, session_id, path):
    response = api.get(f"/api/v1/sessions/{session_id}/files/{path}")
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


@pytest.mark.usefixtures("sessions_on_process")
def test_two_owners_build_1_sandboxes_and_stored_files_stay_apart(
    api, other_api, user, other_user, file_storage
):
    """End to end on real bubblewrap sandboxes and the local workspace storage."""
    created(api, id="build-1")
    created(other_api, id="build-1")
    assert upload(api, "build-1", "owner.txt", b"alice")["session_id"] == "build-1"
    upload(other_api, "build-1", "owner.txt", b"bob")
    for client, expected in ((api, "alice"), (other_api, "bob")):
        run = client.post(
            "/api/v1/sessions/build-1/execute-sync",
            {"code": "print(open('owner.txt').read())", "language": "python"},
            format="json",
        ).json()
        assert run["status"] == "completed", run["stderr"]
        assert run["stdout"].strip() == expected and run["session_id"] == "build-1"

    for client in (api, other_api):
        assert client.post("/api/v1/sessions/build-1/terminate").json()["status"] == "terminated"
    # Ended: files are served from storage, keyed by internal id, one owner's never the other's.
    assert download(api, "build-1", "owner.txt") == b"alice"
    assert download(other_api, "build-1", "owner.txt") == b"bob"
    mine, theirs = internal_id(user, "build-1"), internal_id(other_user, "build-1")
    assert (file_storage / f"sessions/{mine}/workspace/owner.txt").read_bytes() == b"alice"
    assert (file_storage / f"sessions/{theirs}/workspace/owner.txt").read_bytes() == b"bob"
    assert not (file_storage / "sessions/build-1").exists()

    # Restoring "build-1" means the caller's own.
    restored = created(api, id="build-2", restore_from="build-1")
    assert restored["restore_from"] == "build-1"
    assert download(api, "build-2", "owner.txt") == b"alice"
    api.post("/api/v1/sessions/build-2/terminate")


def test_the_database_refuses_one_owner_two_sessions_of_the_same_id(make_session, user, other_user):
    """Two concurrent creates both past the service's check: the unique (owner, client_id) decides."""
    from django.db import IntegrityError, transaction

    make_session(user, client_id="build-1")
    make_session(other_user, client_id="build-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_session(user, client_id="build-1")


def test_existing_sessions_keep_their_id_as_their_client_id_after_the_migration(user, python_template):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("sessions_app", "0004_workspace_restore_and_installs")]
    after = [("sessions_app", "0005_client_id_per_owner")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps.get_model("sessions_app", "SandboxSession")
        old.objects.create(id="run-42", owner_id=user.pk, template_id=python_template.pk)
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new = executor.loader.project_state(after).apps.get_model("sessions_app", "SandboxSession")
        assert list(new.objects.values_list("pk", "client_id")) == [("run-42", "run-42")]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
