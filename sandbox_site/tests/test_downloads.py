"""Under ASGI a file download leaves chunk by chunk while the file is still being read, instead of being read
whole into the web process's memory first (sandbox_site/downloads.py)."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator

from sandbox_site.asgi import application
from sandbox_site.testing import asgi_get_scope
from sessions_app.models import ApiKey
from sessions_app.services import session_create, session_provision

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def held_file(monkeypatch):
    """files_download of a file whose second chunk is read only once the test lets it."""
    release, read_to_end = threading.Event(), threading.Event()

    def files_download(*, session, path):
        def chunks():
            yield b"first chunk "
            release.wait(30)
            yield b"second chunk"
            read_to_end.set()

        return chunks()

    monkeypatch.setattr("sessions_app.api.files.files_download", files_download)
    return release, read_to_end


def test_the_first_chunk_reaches_the_client_before_the_file_is_read_to_the_end(
    fake_runtime, user, python_template, held_file
):
    release, read_to_end = held_file
    session = session_provision(session=session_create(owner=user, template=python_template))
    _, raw = ApiKey.objects.create_key(owner=user, name="download")
    path = f"/api/v1/sessions/{session.client_id}/files/out.bin"
    scope = asgi_get_scope(path, [(b"authorization", f"Bearer {raw}".encode())])

    async def exchange() -> bytes:
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await communicator.receive_output(20)
        assert start["status"] == 200, start
        first = await communicator.receive_output(20)
        # Sent while the rest of the file is still unread: nothing waits for the whole file.
        assert first["body"] == b"first chunk " and not read_to_end.is_set()
        release.set()
        body = first["body"]
        while True:
            message = await communicator.receive_output(20)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await communicator.wait(20)
        return body

    assert async_to_sync(exchange)() == b"first chunk second chunk"
