"""Per-session Python dependencies: validation, the pending -> installing -> completed | failed machine, and
real installs with pip outside the sandbox on both runtimes (the sandbox itself never gets network)."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from runtime import RuntimeFailure
from runtime.fake import FakeRuntime
from runtime.registry import get_runtime
from sandbox_site.testing import wait_until
from sessions_app.dependencies import install_request, requirement, session_install_dependencies
from sessions_app.models import SandboxSession
from sessions_app.sandboxes import handle_for, runtime_for

pytestmark = pytest.mark.django_db(transaction=True)


def fake() -> FakeRuntime:
    runtime = get_runtime("fake")
    assert isinstance(runtime, FakeRuntime)
    return runtime


BAD_DEPENDENCIES = [
    {"name": "../x"},
    {"name": "--index-url=evil"},
    {"name": "-e"},
    {"name": "git+https://github.com/psf/requests"},
    {"name": "https://evil.example/pkg.tar.gz"},
    {"name": "/etc/passwd"},
    {"name": "evil.whl"},
    {"name": "pkg.tar.gz"},
    {"name": "a b"},
    {"name": "six", "version": "1.0; rm -rf /"},
    {"name": "six", "version": "@ https://evil.example/six.whl"},
    {"name": "six", "version": "--index-url=evil"},
    {"name": "six", "version": "1.0 --pre"},
]


def create(api, **body):
    return api.post("/api/v1/sessions", {"template_id": "python-basic", **body}, format="json")


def install(api, session_id, dependencies, **extra):
    return api.post(
        f"/api/v1/sessions/{session_id}/dependencies/install",
        {"dependencies": dependencies, **extra},
        format="json",
    )


def run(api, session_id, code):
    response = api.post(
        f"/api/v1/sessions/{session_id}/execute-sync", {"code": code, "language": "python"}, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()


@pytest.mark.parametrize("dep", BAD_DEPENDENCIES, ids=lambda d: f"{d['name']} {d.get('version', '')}")
@pytest.mark.usefixtures("fake_runtime")
def test_names_and_versions_that_could_steer_pip_are_400(api, dep):
    response = create(api, dependencies=[dep])
    assert response.status_code == 400, response.json()
    assert "dependencies" in response.json()["detail"]
    session_id = create(api).json()["id"]
    response = install(api, session_id, [dep])
    assert response.status_code == 400, response.json()


@pytest.mark.parametrize(
    "extra",
    [
        {"python_package_index_url": "file:///etc/passwd"},
        {"python_package_index_url": "ftp://mirror.example/simple"},
        {"python_package_index_url": "not a url"},
        {"python_package_ca_bundle": "not a certificate"},
        {"python_package_ca_bundle": 42},
    ],
)
@pytest.mark.usefixtures("fake_runtime")
def test_bad_index_urls_and_ca_bundles_are_400(api, extra):
    assert create(api, dependencies=[{"name": "six"}], **extra).status_code == 400
    session_id = create(api).json()["id"]
    assert install(api, session_id, [{"name": "six"}], **extra).status_code == 400


def test_requirements_pin_bare_versions_and_keep_specifiers():
    assert requirement({"name": "pyfiglet", "version": "1.0.2"}) == "pyfiglet==1.0.2"
    assert requirement({"name": "requests", "version": ">=2.31,<3"}) == "requests>=2.31,<3"
    assert requirement({"name": "six"}) == "six"


@pytest.mark.usefixtures("fake_runtime")
def test_installs_go_pending_to_completed_and_a_bad_pin_fails_keeping_the_earlier_set(api):
    body = create(api, dependencies=[{"name": "pyfiglet", "version": "1.0.2"}]).json()
    session_id = body["id"]
    session = SandboxSession.objects.get(pk=session_id)
    assert session.dependency_install_status == "completed"
    assert session.installed_dependencies == [{"name": "pyfiglet", "version": "1.0.2"}]

    assert install(api, session_id, [{"name": "six", "version": "0.0.0"}]).status_code == 202
    session.refresh_from_db()
    assert session.dependency_install_status == "failed"
    assert "No matching distribution found for six==0.0.0" in session.dependency_install_error
    assert session.installed_dependencies == [{"name": "pyfiglet", "version": "1.0.2"}]
    assert fake().sandboxes[session_id].packages == {"pyfiglet": "1.0.2"}

    response = install(api, session_id, [{"name": "six", "version": "1.16.0"}])
    assert response.status_code == 202
    assert response.json()["requested_dependencies"] == [
        {"name": "pyfiglet", "version": "1.0.2"},
        {"name": "six", "version": "1.16.0"},
    ]
    detail = api.get(f"/api/v1/sessions/{session_id}").json()
    assert detail["dependency_install_status"] == "completed" and detail["dependency_install_error"] == ""
    assert detail["installed_dependencies"] == [
        {"name": "pyfiglet", "version": "1.0.2"},
        {"name": "six", "version": "1.16.0"},
    ]


@pytest.mark.usefixtures("fake_runtime")
def test_a_running_install_answers_409_until_it_is_stale(api, settings):
    session_id = create(api).json()["id"]
    SandboxSession.objects.filter(pk=session_id).update(
        dependency_install_status="installing", dependency_install_started_at=timezone.now()
    )
    response = install(api, session_id, [{"name": "six"}])
    assert response.status_code == 409 and response.json()["error"] == "install_in_progress"
    # An install whose worker died never finishes; past the install timeout it stops blocking new requests.
    long_ago = timezone.now() - timedelta(seconds=settings.SANDBOX_INSTALL_TIMEOUT + 120)
    SandboxSession.objects.filter(pk=session_id).update(dependency_install_started_at=long_ago)
    assert install(api, session_id, [{"name": "six"}]).status_code == 202


@pytest.mark.usefixtures("fake_runtime")
def test_an_install_is_claimed_once(api):
    session_id = create(api).json()["id"]
    SandboxSession.objects.filter(pk=session_id).update(
        requested_dependencies=[{"name": "six"}], dependency_install_status="pending"
    )
    assert session_install_dependencies(session_id=session_id).dependency_install_status == "completed"
    assert session_install_dependencies(session_id=session_id) is None


@pytest.mark.usefixtures("fake_runtime")
def test_another_owners_session_is_404(api, other_api):
    session_id = create(api).json()["id"]
    assert install(other_api, session_id, [{"name": "six"}]).status_code == 404


OFFLINE_CHECK = """
import fcntl, socket, struct
import pyfiglet

def up(name):
    # SIOCGIFFLAGS: a pod keeps its interface, taken down before the sandbox starts; only IFF_UP counts.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", name.encode(), 0)
        return bool(struct.unpack("16sH22x", fcntl.ioctl(sock, 0x8913, request))[1] & 1)

def handler(event, context):
    reached = []
    try:
        socket.create_connection(("127.0.0.1", event["port"]), timeout=2).close()
        reached.append("host loopback")
    except OSError:
        pass
    try:
        socket.getaddrinfo("pypi.org", 443)
        reached.append("dns")
    except OSError:
        pass
    return {
        "banner": pyfiglet.figlet_format("ok"),
        "version": pyfiglet.__version__,
        "interfaces": sorted(name for _, name in socket.if_nameindex() if up(name)),
        "reached": reached,
    }
"""


@pytest.fixture
def host_listener():
    """A TCP listener on the host's loopback: a sandbox with any network path to the host would reach it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


@pytest.mark.usefixtures("real_runtime")
def test_pyfiglet_installs_outside_and_the_sandbox_stays_offline(api, host_listener):
    body = create(api, dependencies=[{"name": "pyfiglet", "version": "1.0.2"}]).json()
    assert body["dependency_install_status"] == "completed", body["dependency_install_error"]
    session_id = body["id"]
    detail = api.get(f"/api/v1/sessions/{session_id}").json()
    assert {"name": "pyfiglet", "version": "1.0.2"} in detail["installed_dependencies"]

    def check() -> dict:
        response = api.post(
            f"/api/v1/sessions/{session_id}/execute-sync",
            {"code": OFFLINE_CHECK, "language": "python", "event": {"port": host_listener}},
            format="json",
        )
        result = response.json()
        assert result["status"] == "completed", result["stderr"]
        return result["return_value"]

    first = check()
    assert first["version"] == "1.0.2" and "|" in first["banner"]
    assert first["interfaces"] == ["lo"] and first["reached"] == []
    # The installed files are read-only for the sandbox.
    tamper = run(api, session_id, "import pyfiglet, os\nopen(os.path.dirname(pyfiglet.__file__) + '/x', 'w')")
    assert tamper["status"] == "failed" and "Read-only file system" in tamper["stderr"]

    # A pin that does not exist fails with pip's own words and leaves pyfiglet working.
    assert install(api, session_id, [{"name": "six", "version": "0.0.0"}]).status_code == 202
    detail = api.get(f"/api/v1/sessions/{session_id}").json()
    assert detail["dependency_install_status"] == "failed"
    assert "No matching distribution found for six==0.0.0" in detail["dependency_install_error"]
    assert {"name": "pyfiglet", "version": "1.0.2"} in detail["installed_dependencies"]
    again = check()
    assert again["version"] == "1.0.2" and again["reached"] == []


REPLACED_CHECK = """
import json, os, pyfiglet, six
packages = os.path.dirname(six.__file__)
try:
    open(os.path.join(packages, "planted.py"), "w")
    written = True
except OSError as exc:
    written = exc.strerror
print(json.dumps({
    "versions": [pyfiglet.__version__, six.__version__],
    "pyfiglet": sorted(name for name in os.listdir(packages) if name.startswith("pyfiglet-")),
    "hidden": sorted(name for name in os.listdir(packages) if name.startswith(".")),
    "written": written,
}))
"""


@pytest.mark.usefixtures("real_runtime")
def test_a_new_install_replaces_the_set_in_a_package_dir_the_sandbox_cannot_write(api):
    session_id = create(api, dependencies=[{"name": "pyfiglet", "version": "1.0.2"}]).json()["id"]
    new_set = [{"name": "pyfiglet", "version": "1.0.1"}, {"name": "six", "version": "1.16.0"}]
    assert install(api, session_id, new_set).status_code == 202
    detail = api.get(f"/api/v1/sessions/{session_id}").json()
    assert detail["dependency_install_status"] == "completed", detail["dependency_install_error"]
    assert sorted(detail["installed_dependencies"], key=lambda d: d["name"]) == new_set
    result = run(api, session_id, REPLACED_CHECK)
    assert result["status"] == "completed", result["stderr"]
    assert json.loads(result["stdout"]) == {
        "versions": ["1.0.1", "1.16.0"],
        "pyfiglet": ["pyfiglet-1.0.1.dist-info"],  # nothing of the earlier set is left beside it
        "hidden": [],
        "written": "Read-only file system",
    }


@pytest.mark.usefixtures("sessions_on_process")
def test_a_request_during_a_real_install_is_409(api, settings):
    # No reuse of an installed tree: pip really runs, so the install lasts long enough to be seen running.
    settings.SANDBOX_PACKAGE_CACHE_TTL = 0
    session_id = create(api).json()["id"]
    SandboxSession.objects.filter(pk=session_id).update(
        requested_dependencies=[{"name": "pyfiglet", "version": "1.0.2"}], dependency_install_status="pending"
    )
    outcome: list = []

    def work() -> None:
        try:
            outcome.append(session_install_dependencies(session_id=session_id))
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    wait_until(
        lambda: SandboxSession.objects.get(pk=session_id).dependency_install_status == "installing",
        interval=0.01,
        what="the install to be claimed",
    )
    response = install(api, session_id, [{"name": "six"}])
    worker.join(timeout=120)
    assert response.status_code == 409, response.json()
    assert outcome[0].dependency_install_status == "completed", outcome[0].dependency_install_error


@pytest.mark.usefixtures("real_runtime")
def test_a_second_session_installing_the_same_package_reuses_the_installed_tree(api, settings, tmp_path):
    """The first install runs pip (cold: empty caches); the second, identical one runs neither the download
    nor pip. How much time that saves is measured by bench/dependency_install.py."""
    settings.SANDBOX_PIP_CACHE_DIR = str(tmp_path / "pip-cache")  # empty: nothing downloaded or kept yet
    first_id = create(api).json()["id"]
    SandboxSession.objects.filter(pk=first_id).update(
        requested_dependencies=[{"name": "pyfiglet", "version": "1.0.2"}], dependency_install_status="pending"
    )
    first = session_install_dependencies(session_id=first_id)
    assert first.dependency_install_status == "completed", first.dependency_install_error
    assert first.installed_dependencies == [{"name": "pyfiglet", "version": "1.0.2"}]
    second = SandboxSession.objects.get(pk=create(api).json()["id"])
    second.requested_dependencies = [{"name": "pyfiglet", "version": "1.0.2"}]
    result = runtime_for(second).install_packages(handle_for(second), install_request(second))
    assert result.log.startswith("reused installed tree"), result.log
    assert ("pyfiglet", "1.0.2") in result.packages
    for session_id in (first_id, second.id):
        assert run(api, session_id, "import pyfiglet\nprint(pyfiglet.__version__)")["stdout"] == "1.0.2\n"


@pytest.mark.usefixtures("sessions_on_process")
def test_without_tree_reuse_pip_runs_every_time(api, settings, tmp_path):
    settings.SANDBOX_PACKAGE_CACHE_TTL = 0
    settings.SANDBOX_PIP_CACHE_DIR = str(tmp_path / "pip-cache")
    session = SandboxSession.objects.get(pk=create(api).json()["id"])
    session.requested_dependencies = [{"name": "pyfiglet", "version": "1.0.2"}]
    runtime, handle = runtime_for(session), handle_for(session)
    for _ in range(2):
        result = runtime.install_packages(handle, install_request(session))
        assert "Successfully installed pyfiglet-1.0.2" in result.log
    assert not (tmp_path / "pip-cache" / "trees").exists()


@pytest.mark.usefixtures("real_runtime")
def test_an_install_past_its_time_limit_is_stopped_and_changes_nothing(api, tmp_path):
    session = SandboxSession.objects.get(pk=create(api).json()["id"])
    session.requested_dependencies = [{"name": "pyfiglet", "version": "1.0.2"}]
    request = dataclasses.replace(
        install_request(session), cache_dir=str(tmp_path / "cache"), timeout=0.2, reuse_ttl=0
    )
    with pytest.raises(RuntimeFailure) as stopped:
        runtime_for(session).install_packages(handle_for(session), request)
    assert "time limit" in stopped.value.message
    assert run(api, session.id, "import pyfiglet")["status"] == "failed"
