"""Per-session dependencies cannot reach other tenants or the control plane: a package index of our own on
127.0.0.1 serves a genuine wheel and a hostile sdist whose build step would poison the cache, write a
marker and connect to the host's loopback. Wheels only are downloaded (the sdist is refused by name and
none of its code runs), into a store and trees no sandbox can write; tenant index URLs that point at
loopback, private or link-local addresses are a 400, and the egress proxy refuses any host an allowed index
links or redirects to that the policy does not allow."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker
import pytest

from runtime.docker import installer as docker_installer
from runtime.packages import index_policy
from sessions_app.models import SandboxSession

pytestmark = pytest.mark.django_db(transaction=True)


def make_wheel(name: str, version: str, files: dict[str, str]) -> tuple[str, bytes]:
    """A pure-Python wheel built by hand (no build backend runs anywhere in these tests)."""
    filename = f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    contents = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        record = []
        for path, text in contents.items():
            archive.writestr(path, text)
            record.append(f"{path},,")
        archive.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return filename, buffer.getvalue()


def make_sdist(name: str, version: str, backend: str) -> tuple[str, bytes]:
    """An sdist with an in-tree build backend and no build requirements: pip would import `backend` (the
    tenant's code) as soon as it prepared the package's metadata."""
    filename = f"{name}-{version}.tar.gz"
    buffer = io.BytesIO()
    pyproject = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, text in {
            f"{name}-{version}/pyproject.toml": pyproject,
            f"{name}-{version}/backend.py": backend,
            f"{name}-{version}/PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        }.items():
            data = text.encode()
            member = tarfile.TarInfo(path)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return filename, buffer.getvalue()


@dataclass
class Index:
    """A PEP 503 simple index served over HTTP on 127.0.0.1; `links_to` sends file links to another host."""

    projects: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    links_to: str = ""
    redirect_to: str = ""
    requests: list[str] = field(default_factory=list)
    url: str = ""
    port: int = 0

    def add(self, project: str, filename: str, data: bytes) -> None:
        self.projects.setdefault(project, []).append((filename, data))

    def sha256(self, filename: str) -> str:
        for files in self.projects.values():
            for name, data in files:
                if name == filename:
                    return hashlib.sha256(data).hexdigest()
        raise KeyError(filename)


def serve(index: Index) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            index.requests.append(self.path)
            if index.redirect_to:
                self.send_response(302)
                self.send_header("Location", index.redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            body, kind = None, "text/html"
            if len(parts) == 2 and parts[0] == "simple" and parts[1] in index.projects:
                base = index.links_to or ""
                links = [
                    f'<a href="{base}/files/{name}#sha256={hashlib.sha256(data).hexdigest()}">{name}</a>'
                    for name, data in index.projects[parts[1]]
                ]
                body = ("<html><body>" + "".join(links) + "</body></html>").encode()
            elif len(parts) == 2 and parts[0] == "files":
                for files in index.projects.values():
                    for name, data in files:
                        if name == parts[1]:
                            body, kind = data, "application/octet-stream"
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    index.port = server.server_address[1]
    index.url = f"http://127.0.0.1:{index.port}/simple"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on the host's loopback that records every connection it gets."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    seen: list[bytes] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            seen.append(b"connected")
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], seen
    server.close()


HOSTILE_BACKEND = """
import glob, os, socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
except OSError:
    pass
try:
    open({marker!r}, "w").write("build code ran")
except OSError:
    pass
for path in glob.glob({store!r} + "/**/*", recursive=True):
    if "genuine" in path and os.path.isfile(path):
        try:
            os.chmod(path, 0o666)
            open(path, "w").write("VALUE = 'poisoned'\\n")
        except OSError:
            pass
def get_requires_for_build_wheel(config_settings=None):
    return []
"""


@pytest.fixture
def hostile_index(settings, tmp_path, listener) -> Iterator[tuple[Index, str, list[bytes]]]:
    """An allowed local index: `genuine` as a wheel, `poison` as an sdist whose build backend attacks."""
    port, seen = listener
    marker = str(tmp_path / "build-code-ran")
    settings.SANDBOX_PIP_CACHE_DIR = str(tmp_path / "store")
    index = Index()
    index.add("genuine", *make_wheel("genuine", "1.0", {"genuine.py": "VALUE = 'genuine'\n"}))
    backend = HOSTILE_BACKEND.format(marker=marker, port=port, store=settings.SANDBOX_PIP_CACHE_DIR)
    index.add("poison", *make_sdist("poison", "1.0", backend))
    server = serve(index)
    settings.SANDBOX_PACKAGE_INDEX_ALLOW = "127.0.0.1"
    yield index, marker, seen
    server.shutdown()
    server.server_close()


def create(api, **body):
    return api.post("/api/v1/sessions", {"template_id": "python-basic", **body}, format="json")


def install(api, session_id, dependencies, **extra):
    return api.post(
        f"/api/v1/sessions/{session_id}/dependencies/install",
        {"dependencies": dependencies, **extra},
        format="json",
    )


def value_of_genuine(api, session_id) -> str:
    response = api.post(
        f"/api/v1/sessions/{session_id}/execute-sync",
        {"code": "import genuine\nprint(genuine.VALUE)", "language": "python"},
        format="json",
    )
    result = response.json()
    assert result["status"] == "completed", result["stderr"]
    return result["stdout"].strip()


def assert_nothing_writable_by_sandboxes(store: str) -> None:
    """Every file and directory in the store is the control plane's, with no write bit for anyone else;
    files have no write bit at all."""
    owner = os.getuid()
    checked = 0
    for kind in ("wheels", "trees"):
        for current, dirs, files in os.walk(os.path.join(store, kind)):
            for name in dirs + files:
                st = os.lstat(os.path.join(current, name))
                if stat.S_ISLNK(st.st_mode):
                    continue
                checked += 1
                assert st.st_uid == owner, (current, name)
                assert not st.st_mode & 0o022, (current, name, oct(st.st_mode))
                if stat.S_ISREG(st.st_mode):
                    assert not st.st_mode & 0o222, (current, name, oct(st.st_mode))
    assert checked > 0


@pytest.mark.usefixtures("real_runtime")
def test_a_tenants_sdist_cannot_poison_what_another_tenant_installs(api, other_api, hostile_index, settings):
    index, marker, seen = hostile_index
    genuine = [{"name": "genuine", "version": "1.0"}]
    first = create(other_api, dependencies=genuine, python_package_index_url=index.url).json()
    assert first["dependency_install_status"] == "completed", first["dependency_install_error"]
    assert value_of_genuine(other_api, first["id"]) == "genuine"

    attacker = create(api, dependencies=[{"name": "poison"}], python_package_index_url=index.url).json()
    assert attacker["dependency_install_status"] == "failed"
    assert "package poison has no wheel for this interpreter" in attacker["dependency_install_error"]
    assert "only wheels are installed" in attacker["dependency_install_error"]
    # The attacker also asks for genuine alongside poison: still nothing of poison's runs.
    response = install(
        api, attacker["id"], [*genuine, {"name": "poison"}], python_package_index_url=index.url
    )
    assert response.status_code == 202
    assert SandboxSession.objects.get(pk=attacker["id"]).dependency_install_status == "failed"
    assert not os.path.exists(marker), "the sdist's build code ran"
    assert seen == [], "install-time code reached the host's loopback"

    second = create(other_api, dependencies=genuine, python_package_index_url=index.url).json()
    assert second["dependency_install_status"] == "completed", second["dependency_install_error"]
    assert value_of_genuine(other_api, second["id"]) == "genuine"
    assert value_of_genuine(other_api, first["id"]) == "genuine"
    assert_nothing_writable_by_sandboxes(settings.SANDBOX_PIP_CACHE_DIR)


@pytest.mark.usefixtures("real_runtime")
def test_wheels_are_kept_by_sha256_and_their_hashes_recorded(api, hostile_index, settings):
    index, _, _ = hostile_index
    session = create(
        api, dependencies=[{"name": "genuine", "version": "1.0"}], python_package_index_url=index.url
    ).json()
    assert session["dependency_install_status"] == "completed", session["dependency_install_error"]
    sha = index.sha256("genuine-1.0-py3-none-any.whl")
    stored = os.path.join(
        settings.SANDBOX_PIP_CACHE_DIR, "wheels", "sha256", sha[:2], sha, "genuine-1.0-py3-none-any.whl"
    )
    with open(stored, "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == sha
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o444
    manifests = []
    for root, _, files in os.walk(os.path.join(settings.SANDBOX_PIP_CACHE_DIR, "trees")):
        manifests += [os.path.join(root, f) for f in files if f == "packages.json"]
    assert len(manifests) == 1
    assert sha in open(manifests[0]).read()
    # A second identical request reuses the sealed tree: nothing is downloaded again.
    before = list(index.requests)
    again = create(
        api, dependencies=[{"name": "genuine", "version": "1.0"}], python_package_index_url=index.url
    ).json()
    assert again["dependency_install_status"] == "completed", again["dependency_install_error"]
    assert index.requests == before
    assert value_of_genuine(api, again["id"]) == "genuine"


@pytest.mark.usefixtures("fake_runtime")
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/simple",
        "http://localhost:8000/simple",
        "http://[::1]:5432/simple",
        "http://[::ffff:127.0.0.1]:3306/simple",
        "http://10.1.2.3/simple",
        "http://192.168.1.1/simple",
        "http://172.16.0.1/simple",
        "http://169.254.169.254/latest/",
        "http://0.0.0.0:8000/simple",
        "http://224.0.0.1/simple",
    ],
)
def test_an_index_on_loopback_private_or_link_local_addresses_is_400(api, url, settings):
    settings.SANDBOX_PACKAGE_INDEX_ALLOW = ""
    response = create(api, dependencies=[{"name": "six"}], python_package_index_url=url)
    assert response.status_code == 400, response.json()
    body = response.json()
    assert set(body) >= {"error", "message", "detail", "request_id"}
    assert body["detail"]["python_package_index_url"] == [index_policy.REFUSED_MESSAGE]
    session_id = create(api).json()["id"]
    response = install(api, session_id, [{"name": "six"}], python_package_index_url=url)
    assert response.status_code == 400
    assert response.json()["detail"]["python_package_index_url"] == [index_policy.REFUSED_MESSAGE]


@pytest.mark.usefixtures("fake_runtime")
def test_this_hosts_own_addresses_are_refused_and_the_answer_is_the_same_for_every_port(api, settings):
    settings.SANDBOX_PACKAGE_INDEX_ALLOW = ""
    own = [a for a in index_policy.own_addresses() if a.version == 4 and not a.is_loopback]
    assert own, "this host has no non-loopback address"
    url = f"http://{own[0]}:9/simple"
    response = create(api, dependencies=[{"name": "six"}], python_package_index_url=url)
    assert response.status_code == 400
    unresolvable = create(api, python_package_index_url="http://no-such-host.invalid/simple").json()
    assert response.json()["detail"] == unresolvable["detail"]
    # This machine's own name resolves to one of its addresses: refused by name as well.
    named = create(api, python_package_index_url=f"http://{socket.gethostname()}:8000/simple")
    assert named.status_code == 400
    assert index_policy.REFUSED_MESSAGE in named.json()["detail"]["python_package_index_url"]


@pytest.mark.usefixtures("fake_runtime")
def test_an_operator_allowed_loopback_index_is_accepted(api, settings):
    settings.SANDBOX_PACKAGE_INDEX_ALLOW = "127.0.0.1:3141, mirror.internal"
    assert create(api, python_package_index_url="http://127.0.0.1:3141/simple").status_code == 201
    assert create(api, python_package_index_url="http://127.0.0.1:3142/simple").status_code == 400
    assert create(api, python_package_index_url="https://pypi.org/simple").status_code == 201


@pytest.mark.usefixtures("sessions_on_process")
def test_an_allowed_index_linking_files_to_a_loopback_host_is_refused_by_the_egress_proxy(
    api, settings, tmp_path
):
    settings.SANDBOX_PIP_CACHE_DIR = str(tmp_path / "store")
    files = Index()
    files.add("genuine", *make_wheel("genuine", "1.0", {"genuine.py": "VALUE = 'genuine'\n"}))
    files_server = serve(files)
    index = Index(projects=files.projects, links_to=f"http://127.0.0.1:{files.port}")
    index_server = serve(index)
    try:
        settings.SANDBOX_PACKAGE_INDEX_ALLOW = f"127.0.0.1:{index.port}"  # the index, not its files host
        body = create(api, dependencies=[{"name": "genuine"}], python_package_index_url=index.url).json()
        assert body["dependency_install_status"] == "failed"
        assert "download refused: 127.0.0.1 is not an allowed destination" in body["dependency_install_error"]
        assert index.requests and files.requests == []
    finally:
        for server in (files_server, index_server):
            server.shutdown()
            server.server_close()


@pytest.mark.usefixtures("sessions_on_process")
def test_an_allowed_index_redirecting_to_a_loopback_host_is_refused_by_the_egress_proxy(
    api, settings, tmp_path
):
    settings.SANDBOX_PIP_CACHE_DIR = str(tmp_path / "store")
    target = Index()
    target.add("genuine", *make_wheel("genuine", "1.0", {"genuine.py": "VALUE = 'genuine'\n"}))
    target_server = serve(target)
    index = Index(redirect_to=f"http://127.0.0.1:{target.port}")
    index_server = serve(index)
    try:
        settings.SANDBOX_PACKAGE_INDEX_ALLOW = f"127.0.0.1:{index.port}"
        body = create(api, dependencies=[{"name": "genuine"}], python_package_index_url=index.url).json()
        assert body["dependency_install_status"] == "failed"
        assert "download refused: 127.0.0.1 is not an allowed destination" in body["dependency_install_error"]
        assert index.requests and target.requests == []
    finally:
        for server in (target_server, index_server):
            server.shutdown()
            server.server_close()


def test_the_docker_installer_container_has_no_network(tmp_path):
    options = docker_installer.container_options(
        name="sandbox-install-x",
        session_id="sess_x",
        data_dir=str(tmp_path),
        staging=str(tmp_path / "staging"),
        wheel_dir=str(tmp_path / "wheels"),
        pip_dir=str(tmp_path / "pip"),
        uid=65534,
    )
    assert options["network_mode"] == "none"
    assert {v["mode"] for k, v in options["volumes"].items() if not k.endswith("staging")} == {"ro"}
    assert options["user"] == "65534:65534"


@pytest.mark.usefixtures("sessions_on_process")
def test_an_index_linking_to_a_file_url_cannot_make_the_download_read_the_hosts_files(
    api, settings, tmp_path
):
    """pip copies `file:` links it finds on an index page; the download runs as an unprivileged uid, so a
    private wheel on the host (here in a 0700 directory, as the store is in the 0700 data dir) stays out."""
    settings.SANDBOX_PIP_CACHE_DIR = str(tmp_path / "store")
    secret_dir = tmp_path / "private"
    (secret_dir / "files").mkdir(mode=0o700, parents=True)
    filename, data = make_wheel("secret", "1.0", {"secret.py": "TOKEN = 'private'\n"})
    (secret_dir / "files" / filename).write_bytes(data)
    index = Index(links_to=f"file://{secret_dir}")
    index.add("secret", filename, data)
    server = serve(index)
    try:
        settings.SANDBOX_PACKAGE_INDEX_ALLOW = f"127.0.0.1:{index.port}"
        body = create(api, dependencies=[{"name": "secret"}], python_package_index_url=index.url).json()
        assert body["dependency_install_status"] == "failed"
        assert body["installed_dependencies"] == []
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("sessions_on_docker")
def test_the_docker_installer_containers_are_attached_to_no_network(api, hostile_index):
    """The engine's own record: every network an installer container joined during a real install."""
    index, _, _ = hostile_index
    client = docker.from_env()
    since = int(time.time()) - 1
    body = create(api, dependencies=[{"name": "genuine"}], python_package_index_url=index.url).json()
    assert body["dependency_install_status"] == "completed", body["dependency_install_error"]
    until = int(time.time()) + 1
    created = {
        event["Actor"]["ID"]
        for event in client.events(
            since=since,
            until=until,
            filters={"type": "container", "event": "create", "label": "sandbox.installer=true"},
            decode=True,
        )
    }
    assert created, "no installer container was created"
    joined = [
        event["Actor"]["Attributes"]["name"]
        for event in client.events(
            since=since, until=until, filters={"type": "network", "event": "connect"}, decode=True
        )
        if event["Actor"]["Attributes"].get("container") in created
    ]
    assert joined and set(joined) == {"none"}


NON_ROOT_DOWNLOAD = """
import sys
sys.path.insert(0, sys.argv[1])
from runtime import PackageInstall, RuntimeFailure
from runtime.packages import installer
from runtime.packages import wheels
tags = wheels._parse_probe(wheels.probe_host_interpreter(sys.executable, installer.pip_source_dir()))
request = PackageInstall(
    requirements=(sys.argv[4],), index_url=sys.argv[2], cache_dir=sys.argv[3], index_allow=sys.argv[5]
)
try:
    found = wheels.download(request, tags, uid=None)
    print("DOWNLOADED", [w.filename for w in found])
except RuntimeFailure as exc:
    print("FAILED", exc.message)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the control plane as nobody with setpriv")
def test_a_non_root_control_planes_download_cannot_read_its_own_private_files():
    """A control plane that is not root runs pip download under bubblewrap: an index's `file:` link to a
    wheel the control plane's uid can read (as it can read its data dir) finds nothing."""
    import shutil
    import subprocess
    import sys
    import tempfile

    nobody = 65534
    base = tempfile.mkdtemp(prefix="scp-nonroot-")
    os.chmod(base, 0o755)
    private = os.path.join(base, "private")
    os.makedirs(os.path.join(private, "files"), 0o700)
    filename, data = make_wheel("secret", "1.0", {"secret.py": "TOKEN = 'private'\n"})
    with open(os.path.join(private, "files", filename), "wb") as fh:
        fh.write(data)
    store = os.path.join(base, "store")
    os.mkdir(store, 0o700)
    for path in (private, os.path.join(private, "files"), os.path.join(private, "files", filename), store):
        os.chown(path, nobody, nobody)
    linked = Index(links_to=f"file://{private}")
    linked.add("secret", filename, data)
    linked.add("genuine", *make_wheel("genuine", "1.0", {"genuine.py": "VALUE = 'genuine'\n"}))
    plain = Index(projects=linked.projects)
    servers = [serve(linked), serve(plain)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # The host's interpreter (with its own pip): the project's venv may live where nobody cannot read.
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

    def download(index: Index, requirement: str) -> str:
        command = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", "--"]
        command += [python, "-s", "-c", NON_ROOT_DOWNLOAD, root, index.url, store, requirement]
        command += [f"127.0.0.1:{index.port}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=base)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    try:
        assert download(plain, "genuine").startswith("DOWNLOADED ['genuine-1.0-py3-none-any.whl']")
        assert download(linked, "secret").startswith("FAILED")
        assert not [
            f for _, _, files in os.walk(os.path.join(store, "wheels")) for f in files if "secret" in f
        ]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        shutil.rmtree(base, ignore_errors=True)
