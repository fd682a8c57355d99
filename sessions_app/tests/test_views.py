"""Console pages of sessions and API keys: ownership, htmx fragments, polling stops, forms through the API's
serializer, files through sessions_app.files (on the fake runtime; the browser tests use real sandboxes)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from sessions_app.models import ApiKey, SandboxSession
from sessions_app.services import session_create, session_provision

pytestmark = pytest.mark.django_db
# Creating starts the session through a task enqueued after the commit (run inline by `fake_runtime`'s
# worker stand-in), so the tests of the create form commit for real.
COMMITS = pytest.mark.django_db(transaction=True)
HTMX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _templates(builtin_templates):
    """The built-in templates, also after a transactional test elsewhere has flushed the tables."""


@pytest.fixture
def live_session(fake_runtime, user, python_template):
    return session_provision(
        session=session_create(owner=user, template=python_template, metadata={"team": "blue"})
    )


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


def detail_url(session):
    return reverse("sessions:detail", args=[session.id])


@pytest.mark.parametrize(
    "name,args",
    [
        ("sessions:list", []),
        ("sessions:create", []),
        ("sessions:detail", ["sess_x"]),
        ("sessions:api-keys", []),
    ],
)
def test_anonymous_users_are_sent_to_the_login_page(client, name, args):
    url = reverse(name, args=args)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


def test_an_expired_login_on_an_htmx_request_redirects_the_whole_page(client):
    response = client.get(
        reverse("sessions:list"), headers={**HTMX, "HX-Current-URL": "http://testserver/sessions/"}
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/login/?next=/sessions/"


def test_the_list_shows_only_the_users_sessions(logged_in, user, other_user, make_session):
    mine = make_session(user, status="running")
    theirs = make_session(other_user, status="running")
    body = logged_in.get(reverse("sessions:list")).content.decode()
    assert mine.id in body and theirs.id not in body


def test_staff_see_every_session_with_its_owner(client, staff_user, user, other_user, make_session):
    first, second = make_session(user), make_session(other_user)
    client.force_login(staff_user)
    body = client.get(reverse("sessions:list")).content.decode()
    assert first.id in body and second.id in body and other_user.username in body


def test_the_list_filters_by_status_template_and_search(logged_in, user, make_session):
    running = make_session(user, status="running", metadata={"team": "blue"})
    ended = make_session(user, status="terminated", metadata={"team": "red"})
    by_status = logged_in.get(reverse("sessions:list"), {"status": "terminated"}).content.decode()
    assert ended.id in by_status and running.id not in by_status
    by_template = logged_in.get(reverse("sessions:list"), {"template": "nodejs-basic"}).content.decode()
    assert running.id not in by_template and "No sessions match" in by_template
    by_metadata = logged_in.get(reverse("sessions:list"), {"q": "team=red"}).content.decode()
    assert ended.id in by_metadata and running.id not in by_metadata
    by_text = logged_in.get(reverse("sessions:list"), {"q": "blu"}).content.decode()
    assert running.id in by_text and ended.id not in by_text
    by_id = logged_in.get(reverse("sessions:list"), {"q": running.id[-6:]}).content.decode()
    assert running.id in by_id and ended.id not in by_id


def test_the_list_is_paginated(logged_in, user, make_session):
    sessions = [make_session(user, status="terminated") for _ in range(23)]
    first = logged_in.get(reverse("sessions:list")).content.decode()
    second = logged_in.get(reverse("sessions:list"), {"page": 2}).content.decode()
    assert "Page 1 of 2" in first and "Page 2 of 2" in second
    assert sum(s.id in first for s in sessions) == 20 and sum(s.id in second for s in sessions) == 3


def test_the_list_fragment_polls_while_a_session_is_live_and_stops_with_286(logged_in, user, make_session):
    session = make_session(user, status="creating")
    polling = logged_in.get(reverse("sessions:list"), headers=HTMX)
    assert polling.status_code == 200
    body = polling.content.decode()
    assert 'hx-trigger="every 3s"' in body and "<html" not in body
    SandboxSession.objects.filter(pk=session.pk).update(status="failed")
    stopped = logged_in.get(reverse("sessions:list"), headers=HTMX)
    assert stopped.status_code == 286
    assert "hx-trigger" not in stopped.content.decode() and "failed" in stopped.content.decode()


@COMMITS
def test_the_create_form_makes_a_running_session(logged_in, user, fake_runtime):
    response = logged_in.post(
        reverse("sessions:create"),
        {
            "template_id": "python-basic",
            "cpu": "0.5",
            "memory": "256Mi",
            "timeout": "120",
            "env_vars": "GREETING=hello\r\n# comment\r\nEMPTY=",
            "dependencies": "requests\npandas==2.2",
            "metadata": "team=blue",
        },
    )
    session = SandboxSession.objects.get(owner=user)
    assert response.status_code == 302 and response["Location"] == detail_url(session)
    assert session.status == "running"
    assert (session.cpu, session.memory_mb, session.timeout) == ("0.5", 256, 120)
    assert session.env_vars == {"GREETING": "hello", "EMPTY": ""}
    assert session.requested_dependencies == [{"name": "requests"}, {"name": "pandas", "version": "==2.2"}]
    assert session.metadata == {"team": "blue"}


def test_the_create_form_refuses_what_the_api_refuses(logged_in, user, fake_runtime):
    response = logged_in.post(
        reverse("sessions:create"),
        {
            "template_id": "python-basic",
            "cpu": "9",
            "memory": "lots",
            "env_vars": "1BAD=x",
            "dependencies": "no thing",
        },
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "must be between 0.1 and 4 cores" in body
    assert "is not a size" in body
    assert "1BAD" in body
    assert "not a package name" in body
    assert not SandboxSession.objects.exists()


@COMMITS
def test_the_create_form_over_htmx_redirects_the_page_or_swaps_the_form(logged_in, user, fake_runtime):
    bad = logged_in.post(
        reverse("sessions:create"), {"template_id": "python-basic", "env_vars": "nope"}, headers=HTMX
    )
    assert bad.status_code == 200 and "expected NAME=value" in bad.content.decode()
    assert 'id="session-form"' in bad.content.decode() and "<html" not in bad.content.decode()
    good = logged_in.post(reverse("sessions:create"), {"template_id": "python-basic"}, headers=HTMX)
    assert good["HX-Redirect"] == detail_url(SandboxSession.objects.get(owner=user))


@COMMITS
def test_the_create_form_reports_the_quota(logged_in, user, settings, fake_runtime, make_session):
    settings.SANDBOX_MAX_SESSIONS_PER_KEY = 1
    make_session(user, status="running")
    response = logged_in.post(reverse("sessions:create"), {"template_id": "python-basic"})
    assert response.status_code == 400 and "the limit is 1" in response.content.decode()


def test_another_users_session_is_404_everywhere(logged_in, other_user, make_session):
    theirs = make_session(other_user, status="running")
    for name in ("sessions:detail", "sessions:status", "sessions:files", "sessions:file-download"):
        assert logged_in.get(reverse(name, args=[theirs.id]), headers=HTMX).status_code == 404, name
    for name in ("sessions:terminate", "sessions:keepalive", "sessions:file-delete"):
        assert logged_in.post(reverse(name, args=[theirs.id])).status_code == 404, name
    assert logged_in.get(reverse("sessions:detail", args=["sess_missing"])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "running"


def test_the_detail_page_shows_resources_env_dependencies_and_usage(logged_in, live_session):
    SandboxSession.objects.filter(pk=live_session.pk).update(
        env_vars={"GREETING": "hello"},
        requested_dependencies=[{"name": "requests", "version": "==2.32"}],
        dependency_install_status="failed",
        dependency_install_error="no such version",
    )
    body = logged_in.get(detail_url(live_session)).content.decode()
    assert "GREETING" in body and "hello" in body
    assert "requests==2.32" in body and "no such version" in body and "status-failed" in body
    assert "MiB of 512Mi" in body  # memory in use, from the runtime
    assert (
        reverse("executions:session", args=[live_session.id]) in body
    )  # the runner loads from executions_app
    assert 'data-session-status="running"' in body


def test_the_status_fragment_polls_then_reloads_on_change_then_stops_with_286(logged_in, user, make_session):
    session = make_session(user, status="creating")
    url = reverse("sessions:status", args=[session.id])
    polling = logged_in.get(url, {"shown": "creating"}, headers=HTMX)
    assert polling.status_code == 200 and 'hx-trigger="every 1s"' in polling.content.decode()
    SandboxSession.objects.filter(pk=session.pk).update(status="running")
    changed = logged_in.get(url, {"shown": "creating"}, headers=HTMX)
    assert changed["HX-Refresh"] == "true"
    SandboxSession.objects.filter(pk=session.pk).update(status="failed")
    stopped = logged_in.get(url, {"shown": "failed"}, headers=HTMX)
    assert stopped.status_code == 286 and "hx-trigger" not in stopped.content.decode()
    assert logged_in.get(url).status_code == 302  # not a page of its own


def test_terminate_and_keepalive(logged_in, live_session):
    keepalive = logged_in.post(reverse("sessions:keepalive", args=[live_session.id]), headers=HTMX)
    assert keepalive.status_code == 200 and "Idle clock reset." in keepalive.content.decode()
    terminated = logged_in.post(reverse("sessions:terminate", args=[live_session.id]), headers=HTMX)
    assert terminated["HX-Refresh"] == "true"
    live_session.refresh_from_db()
    assert (live_session.status, live_session.termination_reason) == ("terminated", "user_request")
    plain = logged_in.post(reverse("sessions:keepalive", args=[live_session.id]), follow=True)
    assert "not running" in plain.content.decode()
    again = logged_in.post(reverse("sessions:terminate", args=[live_session.id]))
    assert again.status_code == 302  # idempotent


def test_files_upload_list_download_delete(logged_in, live_session):
    upload_url = reverse("sessions:file-upload", args=[live_session.id])
    uploaded = logged_in.post(
        upload_url, {"file": SimpleUploadedFile("notes.txt", b"hello"), "directory": "docs"}, headers=HTMX
    )
    body = uploaded.content.decode()
    assert uploaded.status_code == 200 and "Uploaded docs/notes.txt (5 bytes)" in body
    assert 'id="files"' in body and "<html" not in body
    root = logged_in.get(reverse("sessions:files", args=[live_session.id]), headers=HTMX).content.decode()
    assert "docs/" in root
    listing = logged_in.get(reverse("sessions:files", args=[live_session.id]), {"path": "docs"}, headers=HTMX)
    assert "notes.txt" in listing.content.decode()
    download = logged_in.get(
        reverse("sessions:file-download", args=[live_session.id]), {"path": "docs/notes.txt"}
    )
    assert download.status_code == 200 and b"".join(download.streaming_content) == b"hello"
    assert download["Content-Disposition"] == "attachment; filename*=UTF-8''notes.txt"
    deleted = logged_in.post(
        reverse("sessions:file-delete", args=[live_session.id]), {"path": "docs/notes.txt"}, headers=HTMX
    )
    assert "Deleted docs/notes.txt." in deleted.content.decode()
    missing = logged_in.get(
        reverse("sessions:file-download", args=[live_session.id]), {"path": "docs/notes.txt"}
    )
    assert missing.status_code == 404


def test_file_paths_are_checked_and_plain_posts_redirect(logged_in, live_session):
    bad = logged_in.post(
        reverse("sessions:file-upload", args=[live_session.id]),
        {"file": SimpleUploadedFile("x.txt", b"x"), "directory": "../outside"},
        follow=True,
    )
    assert bad.redirect_chain[0][0].startswith(detail_url(live_session))
    assert "may not contain" in bad.content.decode()
    nothing = logged_in.post(reverse("sessions:file-upload", args=[live_session.id]), {}, headers=HTMX)
    assert "Choose a file" in nothing.content.decode()


def test_an_ended_sessions_saved_files_are_listed_and_downloadable_not_writable(logged_in, live_session):
    logged_in.post(
        reverse("sessions:file-upload", args=[live_session.id]),
        {"file": SimpleUploadedFile("report.txt", b"final"), "directory": ""},
        headers=HTMX,
    )
    logged_in.post(reverse("sessions:terminate", args=[live_session.id]), headers=HTMX)
    body = logged_in.get(detail_url(live_session)).content.decode()
    assert "saved when it ended" in body and "report.txt" in body
    assert 'id="runner"' not in body and 'class="upload"' not in body and ">Delete<" not in body
    download = logged_in.get(
        reverse("sessions:file-download", args=[live_session.id]), {"path": "report.txt"}
    )
    assert b"".join(download.streaming_content) == b"final"


def test_a_creating_sessions_files_are_explained(logged_in, user, make_session):
    creating = make_session(user, status="creating")
    body = logged_in.get(detail_url(creating)).content.decode()
    assert "being built" in body


def test_api_keys_are_shown_once_listed_per_owner_and_revoked(logged_in, user, other_user):
    _, _ = ApiKey.objects.create_key(owner=other_user, name="theirs")
    created = logged_in.post(reverse("sessions:api-keys"), {"name": "ci agent"}, headers=HTMX)
    key = ApiKey.objects.get(owner=user)
    body = created.content.decode()
    assert created["Cache-Control"] == "no-store"
    secret = body.split("data-secret>")[1].split("<")[0]
    assert secret.startswith("scp_") and ApiKey.objects.authenticate(secret) == key
    page = logged_in.get(reverse("sessions:api-keys")).content.decode()
    assert "ci agent" in page and secret not in page and "theirs" not in page
    theirs = ApiKey.objects.get(owner=other_user)
    assert logged_in.post(reverse("sessions:api-key-revoke", args=[theirs.pk])).status_code == 404
    revoked = logged_in.post(reverse("sessions:api-key-revoke", args=[key.pk]), headers=HTMX)
    assert "Revoked" in revoked.content.decode()
    key.refresh_from_db()
    theirs.refresh_from_db()
    assert key.revoked_at is not None and theirs.revoked_at is None
    assert ApiKey.objects.authenticate(secret) is None


def test_staff_see_and_may_revoke_every_key(client, staff_user, other_user):
    key, _ = ApiKey.objects.create_key(owner=other_user, name="theirs")
    client.force_login(staff_user)
    assert "theirs" in client.get(reverse("sessions:api-keys")).content.decode()
    assert client.post(reverse("sessions:api-key-revoke", args=[key.pk])).status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
