"""Request bodies against a real served process: refused from the headers, cut off at the limit, memory bounded.

The server is `manage.py serve --no-workers` (what `make run` serves, here with two web processes) on a free
loopback port against this test run's database. Clients speak HTTP over raw sockets, so a test can send the
headers of a 300 MiB request and nothing else, then see whether the answer comes without the body: a server
that waits for the body fails the test at its deadline. Memory is the VmRSS of the server's process tree,
read from /proc.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from served_process import Served, serve_test_database

MIB = 1024 * 1024
ANNOUNCED = 300 * MIB
# Generous for a loaded machine; a server that waits for a 300 MiB body never answers within it.
ANSWER_DEADLINE = 15.0
MEMORY_GROWTH_LIMIT = 50 * MIB
REQUEST_LIMIT = 3 * MIB  # the default of SANDBOX_MAX_REQUEST_BYTES, set explicitly for the server
WEB_PROCESSES = 2

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def served(django_db_setup, django_db_blocker) -> Iterator[Served]:
    with serve_test_database(
        django_db_blocker,
        workers=False,
        SANDBOX_WEB_WORKERS=str(WEB_PROCESSES),
        SANDBOX_MAX_REQUEST_BYTES=str(REQUEST_LIMIT),
    ) as live:
        yield live


@pytest.fixture
def api_key(user) -> str:
    from sessions_app.models import ApiKey

    _, raw = ApiKey.objects.create_key(owner=user, name="body-limits")
    return raw


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool = False

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Sent:
    bytes: int = 0
    answer: Answer | None = None
    stopped_by_server: bool = False
    errors: list[str] = field(default_factory=list)


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse(raw: bytes) -> Answer | None:
    """The first complete response in `raw`, or None while it is incomplete."""
    head, separator, rest = raw.partition(b"\r\n\r\n")
    if not separator:
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if len(rest) < length:
        return None
    return Answer(status=int(status_line.split()[1]), headers=headers, body=rest[:length])


def _connect(served: Served, send_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if send_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.connect(("127.0.0.1", served.port))
    return sock


def headers_only(served: Served, method: str, path: str, headers: dict[str, str]) -> Answer:
    """Send a request's headers and no body; the answer must come (and the connection close) anyway."""
    with _connect(served) as sock:
        sock.sendall(_head(method, path, headers))
        deadline = time.monotonic() + ANSWER_DEADLINE
        raw = b""
        answer = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"no {'end of the connection' if answer else 'answer'} within {ANSWER_DEADLINE} s: "
                    f"the server waits for the body it was told about ({raw[:300]!r})"
                )
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                assert answer is not None, f"the connection closed without an answer: {raw[:300]!r}"
                answer.closed = True
                return answer
            raw += data
            answer = answer or _parse(raw)


def stream_body(
    served: Served,
    path: str,
    headers: dict[str, str],
    *,
    total: int,
    chunked: bool,
    deadline: float,
    chunk: int = 256 * 1024,
    give_up: threading.Event | None = None,
) -> Sent:
    """Send headers, then body bytes until `total`, the server closing, the deadline or `give_up`; read
    meanwhile."""
    outcome = Sent()
    payload = b"x" * chunk
    frame = (b"%x\r\n" % chunk + payload + b"\r\n") if chunked else payload
    with _connect(served, send_buffer=64 * 1024) as sock:
        sock.sendall(_head("POST", path, headers))
        sock.setblocking(False)
        raw = b""
        pending = memoryview(frame)
        sending = True
        while time.monotonic() < deadline and not (give_up and give_up.is_set()):
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 0.5)
            if readable:
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if not data:
                    outcome.stopped_by_server = sending
                    break
                raw += data
                outcome.answer = outcome.answer or _parse(raw)
            if writable and sending:
                try:
                    written = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    outcome.stopped_by_server = True
                    break
                except BlockingIOError:
                    continue
                outcome.bytes += written
                pending = pending[written:]
                if not len(pending):
                    if outcome.bytes >= total:
                        if chunked:
                            sock.setblocking(True)
                            sock.sendall(b"0\r\n\r\n")
                            sock.setblocking(False)
                        sending = False
                    else:
                        pending = memoryview(frame)
        outcome.answer = outcome.answer or _parse(raw)
    return outcome


def assert_api_error(answer: Answer, status: int, code: str) -> dict:
    assert answer.status == status, (answer.status, answer.body[:500])
    body = answer.json()
    assert set(body) >= {"error", "message", "detail", "request_id"}, body
    assert body["error"] == code, body
    assert answer.headers.get("x-request-id") == body["request_id"], (answer.headers, body)
    return body


# --- refused from the headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [{}, {"Authorization": "Bearer scp_not-a-key"}, {"X-API-Key": "scp_not-a-key"}],
    ids=["no-credentials", "unknown-bearer-key", "unknown-x-api-key"],
)
def test_an_unauthenticated_post_announcing_300_mib_is_refused_before_its_body_is_sent(served, credentials):
    answer = headers_only(
        served,
        "POST",
        "/api/v1/sessions",
        {"Content-Type": "application/json", "Content-Length": str(ANNOUNCED), **credentials},
    )
    body = assert_api_error(answer, 401, "unauthorized")
    assert answer.headers.get("www-authenticate") == 'Bearer realm="api"'
    assert ("unknown" in body["message"]) == bool(credentials), body
    assert answer.closed, "the connection stays open for a body nobody will read"


def test_a_request_id_sent_by_the_client_comes_back_on_a_refusal(served):
    answer = headers_only(
        served, "POST", "/api/v1/sessions", {"Content-Length": str(ANNOUNCED), "X-Request-ID": "agent-42.7"}
    )
    assert assert_api_error(answer, 401, "unauthorized")["request_id"] == "agent-42.7"


def test_an_authenticated_upload_announcing_300_mib_gets_413_before_its_body_is_sent(served, api_key):
    answer = headers_only(
        served,
        "POST",
        "/api/v1/sessions/some-session/files/upload",
        {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "multipart/form-data; boundary=b0undary",
            "Content-Length": str(ANNOUNCED),
        },
    )
    body = assert_api_error(answer, 413, "too_large")
    assert "100.06 MiB (104923136 bytes)" in body["message"], body
    assert answer.closed


def test_an_authenticated_json_post_over_the_request_limit_gets_413_before_its_body_is_sent(served, api_key):
    answer = headers_only(
        served,
        "POST",
        "/api/v1/sessions/some-session/execute-sync",
        {"X-API-Key": api_key, "Content-Type": "application/json", "Content-Length": str(4 * MIB)},
    )
    assert "3 MiB" in assert_api_error(answer, 413, "too_large")["message"]
    assert answer.closed


def test_health_schema_and_docs_stay_public_and_answer_normally(served):
    for path in ("/api/v1/health", "/api/v1/health/detailed", "/api/v1/schema/", "/api/docs/"):
        answer = headers_only(served, "GET", path, {"Connection": "close"})
        assert answer.status in (200, 503), (path, answer.status, answer.body[:300])
    anonymous = headers_only(served, "GET", "/api/v1/sessions", {"Connection": "close"})
    assert_api_error(anonymous, 401, "unauthorized")


def test_the_console_upload_needs_a_login_and_keeps_the_upload_limit(served, client, user):
    anonymous = headers_only(
        served,
        "POST",
        "/sessions/some-session/files/upload/",
        {"Content-Type": "multipart/form-data; boundary=b0undary", "Content-Length": str(ANNOUNCED)},
    )
    assert anonymous.status == 302, anonymous
    assert anonymous.headers["location"] == "/login/?next=/sessions/some-session/files/upload/"
    assert anonymous.closed

    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    logged_in = headers_only(
        served,
        "POST",
        "/sessions/some-session/files/upload/",
        {
            "Cookie": cookie,
            "Content-Type": "multipart/form-data; boundary=b0undary",
            "Content-Length": str(ANNOUNCED),
        },
    )
    assert_api_error(logged_in, 413, "too_large")
    # The same login is a credential for the API, as DRF's SessionAuthentication has it.
    api_with_cookie = headers_only(
        served, "POST", "/api/v1/sessions", {"Cookie": cookie, "Content-Length": str(ANNOUNCED)}
    )
    assert_api_error(api_with_cookie, 413, "too_large")


def test_console_posts_other_than_uploads_keep_the_request_limit(served):
    answer = headers_only(
        served,
        "POST",
        "/login/",
        {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(ANNOUNCED)},
    )
    assert_api_error(answer, 413, "too_large")


# --- cut off while streaming -------------------------------------------------------------------------------


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(served, api_key):
    limit = REQUEST_LIMIT
    sent = stream_body(
        served,
        "/api/v1/sessions",
        {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
        total=ANNOUNCED,
        chunked=True,
        deadline=time.monotonic() + 120,
    )
    print(f"{sent.bytes / MIB:.1f} MiB accepted before the server closed")
    assert sent.answer is not None, f"no answer after {sent.bytes} bytes"
    assert_api_error(sent.answer, 413, "too_large")
    assert sent.stopped_by_server, "the server read the whole body"
    # The server cannot decide before the limit; what it took past the limit is what sat in socket buffers.
    assert limit < sent.bytes < limit + 32 * MIB, f"{sent.bytes / MIB:.1f} MiB accepted of {ANNOUNCED // MIB}"


def test_a_chunked_body_within_the_limit_still_reaches_the_api(served, api_key):
    sent = stream_body(
        served,
        "/api/v1/sessions/no-such-session/keepalive",
        {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
        total=512 * 1024,
        chunked=True,
        deadline=time.monotonic() + 60,
        chunk=64 * 1024,
    )
    assert sent.answer is not None
    # The view answered: the body passed the guard and was parsed (it is not JSON, so 400 or 404).
    assert sent.answer.status in (400, 404), (sent.answer.status, sent.answer.body[:300])


# --- memory -------------------------------------------------------------------------------------------------


class PeakSampler:
    """Samples the server's resident memory every few milliseconds until stopped; keeps the peak.

    `over_limit` is set once the growth passes the limit, so clients of a server that does buffer bodies
    stop sending instead of pushing gigabytes into it."""

    def __init__(self, served: Served, baseline: int) -> None:
        self.served = served
        self.baseline = baseline
        self.peak = 0
        self.over_limit = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.served.rss())
            if self.peak - self.baseline >= MEMORY_GROWTH_LIMIT:
                self.over_limit.set()
            self._stop.wait(0.02)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.served.rss())


def _warm_up(served: Served, api_key: str) -> None:
    """Complete requests first, several per web process, so imports and caches are not counted as growth."""
    for _ in range(6 * WEB_PROCESSES):
        for path, headers in (
            ("/api/v1/health", {}),
            ("/api/v1/sessions", {"Authorization": f"Bearer {api_key}"}),
            ("/api/v1/sessions", {}),
        ):
            request = urllib.request.Request(
                f"{served.url}{path}", data=b"{}", method="POST", headers=headers
            )
            try:
                urllib.request.urlopen(request, timeout=30).close()
            except urllib.error.HTTPError as exc:
                exc.close()


def test_ten_clients_sending_300_mib_each_grow_web_memory_by_less_than_50_mb(served, api_key):
    _warm_up(served, api_key)
    baseline = served.rss()
    sampler = PeakSampler(served, baseline)
    outcomes: list[Sent] = [Sent() for _ in range(10)]
    deadline = time.monotonic() + 180

    def client(index: int) -> None:
        # Half anonymous, half with a key to the upload endpoint: refused for credentials and for size.
        headers = {"Content-Type": "multipart/form-data; boundary=b0undary", "Content-Length": str(ANNOUNCED)}
        path = "/api/v1/sessions"
        if index % 2:
            headers["Authorization"] = f"Bearer {api_key}"
            path = "/api/v1/sessions/x/files/upload"
        try:
            outcomes[index] = stream_body(
                served,
                path,
                headers,
                total=ANNOUNCED,
                chunked=False,
                deadline=deadline,
                chunk=MIB,
                give_up=sampler.over_limit,
            )
        except OSError as exc:
            outcomes[index].errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(index,)) for index in range(10)]
    with sampler:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    growth = sampler.peak - baseline
    sent = [round(outcome.bytes / MIB, 1) for outcome in outcomes]
    print(
        f"web memory: {baseline / MIB:.0f} MiB, peak {sampler.peak / MIB:.0f} MiB; MiB sent per client: {sent}"
    )
    assert growth < MEMORY_GROWTH_LIMIT, (
        f"web memory grew {growth / MIB:.0f} MiB; MiB sent per client: {sent}"
    )
    for outcome in outcomes:
        assert not outcome.errors, outcome.errors
        assert outcome.stopped_by_server and outcome.bytes < ANNOUNCED, f"MiB sent per client: {sent}"
        if outcome.answer is not None:  # a reset can overtake the answer in the client's socket
            assert outcome.answer.status in (401, 413), outcome.answer


def test_an_upload_under_the_limit_is_stored_with_bounded_memory(
    served, api_key, user, settings, python_template
):
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed; `make system-deps` installs it")
    from runtime.registry import reset_runtimes
    from sessions_app.services import session_create, session_provision, session_terminate

    # The sandbox is built here, in the served process's data dir, so the server reaches it as its own.
    settings.SANDBOX_RUNTIME = "process"
    settings.DATA_DIR = served.data_dir
    reset_runtimes()
    session = session_provision(session=session_create(owner=user, template=python_template))
    assert session.status == "running", session.status_detail
    try:
        _warm_up(served, api_key)
        size = 80 * MIB
        boundary = "b0undary7f3a"
        preamble = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        epilogue = f"\r\n--{boundary}--\r\n".encode()
        baseline = served.rss()
        with PeakSampler(served, baseline) as sampler, _connect(served) as sock:
            sock.sendall(
                _head(
                    "POST",
                    f"/api/v1/sessions/{session.id}/files/upload?path=big.bin",
                    {
                        "Authorization": f"Bearer {api_key}",
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                        "Content-Length": str(len(preamble) + size + len(epilogue)),
                        "Connection": "close",
                    },
                )
                + preamble
            )
            block = b"\x5a" * MIB
            for _ in range(size // MIB):
                sock.sendall(block)
            sock.sendall(epilogue)
            sock.settimeout(120)
            raw = b""
            while (data := sock.recv(65536)) != b"":
                raw += data
        answer = _parse(raw)
        assert answer is not None and answer.status == 201, raw[:500]
        assert answer.json()["size"] == size
        growth = sampler.peak - baseline
        print(f"web memory: {baseline / MIB:.0f} MiB, peak {sampler.peak / MIB:.0f} MiB")
        assert growth < MEMORY_GROWTH_LIMIT, f"web memory grew {growth / MIB:.0f} MiB for an 80 MiB upload"
        listing = urllib.request.Request(
            f"{served.url}/api/v1/sessions/{session.id}/files", headers={"Authorization": f"Bearer {api_key}"}
        )
        with urllib.request.urlopen(listing, timeout=30) as response:
            files = {entry["name"]: entry for entry in json.load(response)["files"]}
        assert files["big.bin"]["size"] == size
    finally:
        session.refresh_from_db()
        session_terminate(session=session)
        reset_runtimes()
