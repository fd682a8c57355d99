"""Fixtures shared by every app's tests: users and sessions on the real test database."""

from __future__ import annotations

import itertools
import os

import pytest

_counter = itertools.count()


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username=f"user{next(_counter)}", password="pw-123456789")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username=f"other{next(_counter)}", password="pw-123456789")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_superuser(
        username=f"staff{next(_counter)}", password="pw-123456789"
    )


@pytest.fixture
def builtin_templates(db):
    """The data migration's templates; transactional tests flush tables, so they are re-created here."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("templates_app.migrations.0002_builtin_templates")
    migration.create_builtin(apps, None)
    languages = importlib.import_module("templates_app.migrations.0005_language_runtime_and_sandbox_backend")
    languages.guess_language_runtime(apps, None)
    from templates_app.models import SandboxTemplate

    return {t.id: t for t in SandboxTemplate.objects.all()}


@pytest.fixture
def python_template(builtin_templates):
    return builtin_templates["python-basic"]


@pytest.fixture
def inline_worker(monkeypatch):
    """django-q2 runs each queued task inline when it is enqueued (after the real commit), as a worker would."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def make_session(db, python_template):
    from sessions_app.models import SandboxSession

    def make(owner, **fields):
        fields.setdefault("template", python_template)
        return SandboxSession.objects.create(owner=owner, **fields)

    return make


@pytest.fixture
def fake_runtime(settings, inline_worker):
    """Sessions created in this test run on the in-memory fake runtime."""
    from runtime.registry import reset_runtimes

    settings.SANDBOX_RUNTIME = "fake"
    reset_runtimes()
    yield
    reset_runtimes()


@pytest.fixture
def make_api_client(db, builtin_templates):
    """An APIClient authenticated with a fresh API key of `owner`."""
    from rest_framework.test import APIClient

    from sessions_app.models import ApiKey

    def make(owner, *, header: str = "bearer"):
        _, raw = ApiKey.objects.create_key(owner=owner, name="test")
        client = APIClient()
        if header == "bearer":
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        else:
            client.credentials(HTTP_X_API_KEY=raw)
        client.raw_key = raw
        return client

    return make


@pytest.fixture
def api(make_api_client, user):
    return make_api_client(user)


@pytest.fixture
def other_api(make_api_client, other_user):
    return make_api_client(other_user)


@pytest.fixture
def staff_api(make_api_client, staff_user):
    return make_api_client(staff_user)


def _sessions_on(settings, name: str, prefix: str):
    """SANDBOX_RUNTIME is `name` on a temporary data dir for the test; afterwards every sandbox of that data
    dir is destroyed through the runtime the app itself builds (one instance per backend name and config)."""
    import shutil
    import tempfile
    from pathlib import Path

    from runtime.registry import reset_runtimes
    from sessions_app.sandboxes import runtime_named

    settings.SANDBOX_RUNTIME = name
    data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    settings.DATA_DIR = data_dir
    # Kubernetes scopes list_managed (and so state sync) by an instance label, as the others do by data dir.
    settings.SANDBOX_K8S_INSTANCE = data_dir.name
    reset_runtimes()
    yield
    try:
        runtime = runtime_named(name)
        for handle in runtime.list_managed():  # a backend lists only its own data dir's sandboxes
            runtime.destroy(handle)
    finally:
        reset_runtimes()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def sessions_on_process(settings, inline_worker):
    """Sessions in this test run in real bubblewrap sandboxes under a temporary data dir."""
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed; `make system-deps` installs it")
    yield from _sessions_on(settings, "process", "scp-")


@pytest.fixture
def sessions_on_docker(settings, inline_worker):
    """Sessions in this test run in real Docker containers from the template images."""
    from runtime.tests.test_docker_support import PYTHON_IMAGE, require

    require(PYTHON_IMAGE)
    yield from _sessions_on(settings, "docker", "scd-")


KUBERNETES_TESTS = os.environ.get("SANDBOX_K8S_TESTS") == "1"


@pytest.fixture
def sessions_on_kubernetes(settings, inline_worker):
    """Sessions in this test run in pods on the cluster KUBECONFIG names (the test cluster), with an instance
    label of this test's own, so state sync and cleanup touch only the pods this test made. Only with
    SANDBOX_K8S_TESTS=1; a cluster asked for and not there is a failure, not a skip."""
    from runtime.base import RuntimeFailure
    from runtime.kubernetes import KubernetesRuntime

    if not KUBERNETES_TESTS:
        pytest.skip("no Kubernetes cluster asked for (SANDBOX_K8S_TESTS=1 and KUBECONFIG)")
    settings.SANDBOX_K8S_IMAGE_PULL_POLICY = os.environ.get("SANDBOX_K8S_IMAGE_PULL_POLICY", "Never")
    settings.SANDBOX_K8S_NAMESPACE = os.environ.get("SANDBOX_K8S_NAMESPACE", "default")
    try:
        KubernetesRuntime().check()
    except RuntimeFailure as exc:
        pytest.fail(f"SANDBOX_K8S_TESTS=1 but no usable Kubernetes cluster (KUBECONFIG): {exc.message}")
    yield from _sessions_on(settings, "kubernetes", "sck-")


REAL_RUNTIMES = ["process", pytest.param("docker", marks=pytest.mark.docker)]
if KUBERNETES_TESTS:
    REAL_RUNTIMES.append(pytest.param("kubernetes", marks=pytest.mark.kubernetes))


@pytest.fixture(params=REAL_RUNTIMES)
def real_runtime(request):
    """Each test using this runs once on bubblewrap processes and once on Docker containers; with
    SANDBOX_K8S_TESTS=1 once more on Kubernetes pods."""
    request.getfixturevalue(f"sessions_on_{request.param}")
    return request.param


def pytest_collection_modifyitems(config, items):
    """Tests that run sessions in Docker carry the `docker` marker, so `-m "not docker"` leaves them out;
    likewise `kubernetes`."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "sessions_on_docker" in names:
            item.add_marker(pytest.mark.docker)
        if "sessions_on_kubernetes" in names:
            item.add_marker(pytest.mark.kubernetes)


@pytest.fixture
def running_session(db, user, python_template):
    """A provisioned session of the current SANDBOX_RUNTIME; destroyed at the end."""
    from sessions_app.services import session_create, session_provision, session_terminate

    session = session_create(owner=user, template=python_template)
    session = session_provision(session=session)
    assert session.status == "running", session.status_detail
    yield session
    session.refresh_from_db()
    session_terminate(session=session)


def at_once(actions: list) -> list:
    """Call every action in its own thread, all released at the same instant; their results, in any order.

    For races against the real database: each thread closes its own connection when done.
    """
    import threading

    from django.db import connection

    barrier = threading.Barrier(len(actions))
    results: list = []
    lock = threading.Lock()

    def run(action) -> None:
        try:
            barrier.wait(timeout=30)
            result = action()
            with lock:
                results.append(result)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def database_url_of_test_db() -> str:
    """A DATABASE_URL that points another process at this test run's database."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    from urllib.parse import quote

    password = f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else ""
    return (
        f"mysql://{quote(db['USER'])}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}"
    )


@pytest.fixture
def queued(monkeypatch):
    """Tasks go through the broker to the worker processes, not inline."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


@pytest.fixture
def start_worker(settings):
    """Start real `run_worker` processes (django-q2 clusters and the execution stream pool) against the test
    database; stopped at the end."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from sandbox_site.testing import wait_until

    started: list[subprocess.Popen] = []

    def start(**env_overrides: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
        env.update(
            {
                "DATABASE_URL": database_url_of_test_db(),
                "SANDBOX_DATA_DIR": str(settings.DATA_DIR),
                "SANDBOX_RUNTIME": settings.SANDBOX_RUNTIME,
                "SANDBOX_K8S_INSTANCE": getattr(settings, "SANDBOX_K8S_INSTANCE", "default"),
                "SANDBOX_K8S_NAMESPACE": getattr(settings, "SANDBOX_K8S_NAMESPACE", "default"),
                "SANDBOX_K8S_IMAGE_PULL_POLICY": getattr(
                    settings, "SANDBOX_K8S_IMAGE_PULL_POLICY", "IfNotPresent"
                ),
                "SANDBOX_WORKERS": "2",
                "DJANGO_SECRET_KEY": settings.SECRET_KEY,
                **env_overrides,
            }
        )
        log = open(Path(settings.DATA_DIR) / f"worker-{len(started)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker"],
            cwd=Path(__file__).resolve().parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(proc)
        log_path = Path(log.name)

        def ready() -> bool:
            text = log_path.read_text()
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{text[-3000:]}")
            # Both django-q2 clusters (default and provisioning) and the execution stream pool.
            return text.count("running.") >= 2 and "execution stream pool ready" in text

        wait_until(
            ready, interval=0.1, what="the worker to start", context=lambda: log_path.read_text()[-3000:]
        )
        return proc

    yield start
    for index, _ in enumerate(started):
        # Shown by pytest only when the test fails.
        print(
            f"--- worker {index} log ---\n"
            + (Path(settings.DATA_DIR) / f"worker-{index}.log").read_text()[-4000:]
        )
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """A real S3-compatible server: moto's server mode, as its own process on 127.0.0.1, for the whole run."""
    import socket
    import subprocess
    import sys
    import urllib.request

    from sandbox_site.testing import wait_until

    pytest.importorskip("moto", reason="moto[server] is in the dev extra: `make install-dev`")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"moto's server exited:\n{log_path.read_text()[-2000:]}")
        urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=10).read()
        return True

    try:
        wait_until(
            answers,
            interval=0.1,
            ignoring=(OSError,),
            what="moto's server to answer",
            context=lambda: log_path.read_text()[-2000:],
        )
    except BaseException:
        proc.kill()
        raise
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def use_storages(settings, storages_setting) -> None:
    """Point STORAGES at `storages_setting` and drop every cached storage backend (django's and ours)."""
    from django.core.files.storage import default_storage, storages
    from django.utils.functional import empty

    from sessions_app import storage as workspace_storage

    settings.STORAGES = storages_setting
    storages._backends = None
    storages._storages = {}
    default_storage._wrapped = empty
    workspace_storage._buckets_checked.clear()


@pytest.fixture
def s3_storage(settings, moto_server):
    """STORAGES["default"] is django-storages' S3Storage on the moto server, as in production, with a new
    bucket name per test (the code under test creates the bucket). Gives a boto3 client, the bucket, the URL."""
    import uuid
    from types import SimpleNamespace

    import boto3
    from boto3.s3.transfer import TransferConfig

    bucket = f"test-{uuid.uuid4().hex[:16]}"
    original = settings.STORAGES
    # As settings.py configures it for production: 8 MiB parts, at most two in memory.
    transfer = TransferConfig(
        multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, max_concurrency=2
    )
    transfer.max_in_memory_upload_chunks = 2
    settings.SANDBOX_S3_BUCKET = bucket
    options = {
        "bucket_name": bucket,
        "endpoint_url": moto_server,
        "region_name": "us-east-1",
        "access_key": "testing",
        "secret_key": "testing",
        "addressing_style": "path",
        "default_acl": None,
        "file_overwrite": True,
        "transfer_config": transfer,
    }
    use_storages(
        settings, {**original, "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}}
    )
    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    yield SimpleNamespace(client=client, bucket=bucket, url=moto_server)
    use_storages(settings, original)


@pytest.fixture
def file_storage(settings):
    """The local file storage every test starts with (the embedded default); gives its directory."""
    from pathlib import Path

    return Path(settings.STORAGES["default"]["OPTIONS"]["location"])


@pytest.fixture(autouse=True)
def _workspace_storage_in_tmp(settings, tmp_path_factory):
    """Saved workspaces of every test go to a temporary directory, never into the data dir's media/.

    Tests that need S3 ask for `s3_storage`, which replaces this for their duration.
    """
    original = settings.STORAGES
    location = tmp_path_factory.mktemp("media")
    use_storages(
        settings,
        {
            **original,
            "default": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(location), "allow_overwrite": True},
            },
        },
    )
    yield
    use_storages(settings, original)
