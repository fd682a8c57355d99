"""The console in real Chromium (Playwright), against a live `manage.py serve` (uvicorn + worker) started here.

The servers run the embedded default: SQLite in a temporary data dir, the in-process channel layer, the ORM
broker and real bubblewrap sandboxes, with the worker in its own process. So the live output in these tests
travels worker -> database -> websocket consumer -> browser, the path a laptop install uses.

Screenshots of every page go to $BROWSER_ARTIFACTS (default: a pytest temporary directory, printed at the
end). With SANDBOX_UPDATE_SCREENSHOTS=1 the dashboard, session and execution shots are also copied into
docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox_site.testing import wait_until

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]

BASE_DIR = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "browser-pw-2231"
DOCS_SHOTS = {"dashboard", "session-detail", "execution-detail"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        sync_playwright is None, reason="playwright is not installed (pip install playwright)"
    ),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM), reason="Chromium is not installed (apt-get install chromium)"
    ),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"),
]

FIVE_LINES = """import time

def handler(event, context):
    for i in range(5):
        print(f"line {i}", flush=True)
        time.sleep(0.3)
    return {"lines": 5, "name": event["name"]}
"""


@dataclass
class LiveSite:
    url: str
    data_dir: Path
    env: dict[str, str]

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200

    wait_until(
        answers,
        timeout=timeout,
        interval=0.1,
        ignoring=(OSError,),
        what=f"{url} to answer",
        context=lambda: log.read_text()[-3000:],
    )


def reload_until(page: Page, check: Callable[[], bool], *, what: str) -> None:
    """Reload the page until `check` holds: without JavaScript nothing on the page polls."""

    def holds() -> bool:
        if check():
            return True
        page.reload()
        return False

    wait_until(holds, interval=0.3, what=what)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        # One SIGTERM (django-q2's cluster can hang when signalled twice; `serve` passes it on once to each
        # of its children and kills them itself after its grace period), then SIGKILL.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Iterator[Path]:
    directory = Path(os.environ.get("BROWSER_ARTIFACTS") or tmp_path_factory.mktemp("browser-artifacts"))
    directory.mkdir(parents=True, exist_ok=True)
    yield directory
    print(f"\nbrowser screenshots: {directory}")


@pytest.fixture(scope="module")
def site() -> Iterator[LiveSite]:
    # Short path under /tmp: sandboxes' Unix sockets live below it, and socket paths are capped at 108 bytes.
    data_dir = Path(tempfile.mkdtemp(prefix="scp-web-", dir="/tmp"))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "SANDBOX_RUNTIME", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        SANDBOX_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="sandbox_site.settings",
        SANDBOX_WORKERS="2",
        SANDBOX_WEB_WORKERS="2",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    port = _free_port()
    live = LiveSite(url=f"http://127.0.0.1:{port}", data_dir=data_dir, env=env)
    live.manage("migrate", "--noinput", "-v0")
    live.manage("collectstatic", "--noinput", "-v0")
    live.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user('alice', password='{PASSWORD}'); "
        f"User.objects.create_user('bob', password='{PASSWORD}'); "
        f"User.objects.create_superuser('ops', password='{PASSWORD}')",
    )
    log = data_dir / "servers.log"
    with open(log, "ab") as sink:
        # `manage.py serve`, as `make run`: two uvicorn web processes and the worker.
        web = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=BASE_DIR,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for(f"{live.url}/api/v1/health", web, log)
        yield live
    finally:
        try:
            live.manage(
                "shell",
                "-c",
                "from sessions_app.models import SandboxSession; from sessions_app.services import session_terminate\n"
                "for s in SandboxSession.objects.live(): session_terminate(session=s, reason='test_teardown')",
            )
        finally:
            _stop(web)
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


def shoot(page: Page, artifacts: Path, name: str) -> None:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if name in DOCS_SHOTS and os.environ.get("SANDBOX_UPDATE_SCREENSHOTS") == "1":
        target = BASE_DIR / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)


def csp_violations(page: Page) -> list[str]:
    """Collects what the Content-Security-Policy blocks on this page (Chromium reports each on the console)."""
    found: list[str] = []
    page.on(
        "console",
        lambda message: found.append(message.text) if "Content Security Policy" in message.text else None,
    )
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => console.error("
        "`Content Security Policy violation: ${e.violatedDirective} ${e.blockedURI} at ${e.sourceFile}:"
        "${e.lineNumber} ${e.sample}`))"
    )
    return found


def log_in(page: Page, site: LiveSite, username: str) -> None:
    page.goto(f"{site.url}/")
    expect(page).to_have_url(f"{site.url}/login/?next=/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")


def test_a_user_runs_code_watches_it_stream_moves_files_and_ends_the_session(
    site, browser, artifacts, tmp_path
):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    violations = csp_violations(page)
    page.set_default_timeout(15_000)
    page.on("dialog", lambda dialog: dialog.accept())

    first = page.goto(f"{site.url}/sessions/")
    assert first is not None and "frame-ancestors 'none'" in first.headers["content-security-policy"]
    expect(page).to_have_url(f"{site.url}/login/?next=/sessions/")
    shoot(page, artifacts, "login")
    log_in(page, site, "alice")

    # Create a session through the form.
    page.click("nav.mainnav >> text=New session")
    page.select_option("select[name=template_id]", "python-basic")
    page.fill("textarea[name=env_vars]", "GREETING=hello")
    page.fill("textarea[name=metadata]", "team=console")
    shoot(page, artifacts, "session-create")
    page.click("button:has-text('Create session')")
    expect(page.locator("h1")).to_contain_text("Session")
    expect(page.locator("[data-session-status]")).to_have_attribute(
        "data-session-status", "running", timeout=30_000
    )
    session_url = page.url
    session_id = session_url.rstrip("/").rsplit("/", 1)[-1]

    # Run code that prints five lines 0.3 s apart: the first must show before the execution ends.
    runner = page.locator("#runner")
    expect(runner).to_be_visible()
    runner.locator("select[name=language]").select_option("python")
    runner.locator("textarea[name=code]").fill(FIVE_LINES)
    runner.locator("textarea[name=event]").fill('{"name": "browser"}')
    runner.locator("button[type=submit]").click()
    pane = page.locator("#run-output .output-pane")
    output = pane.locator("[data-output]")
    expect(output).to_contain_text("line 0", timeout=20_000)
    first_seen = output.inner_text()
    assert "line 4" not in first_seen, f"all output arrived at once, not live: {first_seen!r}"
    expect(pane).not_to_have_attribute("data-finished", "")
    expect(pane.locator("[data-execution-status]")).not_to_have_attribute(
        "data-execution-status", "completed"
    )
    shoot(page, artifacts, "session-streaming")
    expect(output).to_contain_text("line 4", timeout=15_000)
    assert [line for line in output.inner_text().splitlines() if line] == [f"line {i}" for i in range(5)]
    return_value = pane.locator("[data-return-value]")
    expect(return_value).to_contain_text('"lines": 5')
    expect(return_value).to_contain_text('"name": "browser"')
    expect(pane.locator("[data-execution-status]")).to_have_attribute("data-execution-status", "completed")
    expect(page.locator("#execution-history")).to_contain_text("completed")
    shoot(page, artifacts, "session-detail")

    # A failing run shows its error, and lands in the history and on the dashboard as a failure.
    runner.locator("textarea[name=code]").fill("raise ValueError('no such customer')\n")
    runner.locator("button[type=submit]").click()
    expect(pane.locator("[data-error]")).to_contain_text("ValueError: no such customer", timeout=15_000)
    expect(pane.locator("[data-output]")).to_contain_text("Traceback")
    expect(page.locator("#execution-history")).to_contain_text("failed")

    # The first execution's own page shows the stored output and the result.
    page.locator("#execution-history tbody tr").last.locator("a").click()
    execution_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    expect(page.locator("h1")).to_contain_text(execution_id)
    expect(page.locator("[data-output]")).to_contain_text("line 4")
    expect(page.locator("[data-return-value]")).to_contain_text('"lines": 5')
    shoot(page, artifacts, "execution-detail")

    # Upload a file into the workspace, see it listed, download it again.
    page.goto(session_url)
    upload = tmp_path / "notes.txt"
    upload.write_text("uploaded from the browser\n")
    page.set_input_files("#files input[type=file]", str(upload))
    page.click("#files button:has-text('Upload')")
    expect(page.locator("#files")).to_contain_text("Uploaded notes.txt")
    link = page.locator("#files table a:has-text('notes.txt')")
    expect(link).to_be_visible()
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_text() == "uploaded from the browser\n"
    assert download.value.suggested_filename == "notes.txt"
    shoot(page, artifacts, "session-files")

    # Terminate: the page reloads with the new status and no runner.
    page.click("button:has-text('Terminate')")
    expect(page.locator("[data-session-status]")).to_have_attribute("data-session-status", "terminated")
    expect(page.locator("#runner")).to_have_count(0)
    shoot(page, artifacts, "session-terminated")

    # The other pages, for the record.
    page.click("nav.mainnav >> text=Sessions")
    expect(page.locator("#session-table")).to_contain_text(session_id)
    shoot(page, artifacts, "sessions")
    page.click("nav.mainnav >> text=Templates")
    expect(page.locator("#template-table")).to_contain_text("python-basic")
    shoot(page, artifacts, "templates")
    page.click("nav.mainnav >> text=API keys")
    page.fill("input[name=name]", "browser agent")
    page.click("button:has-text('Create key')")
    expect(page.locator("[data-secret]")).to_contain_text("scp_")
    shoot(page, artifacts, "api-keys")
    page.click("nav.mainnav >> text=Dashboard")
    expect(page.locator("#dashboard")).to_contain_text("2 in total")
    expect(page.locator("#dashboard")).to_contain_text("no such customer")
    shoot(page, artifacts, "dashboard")

    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=context.storage_state())
    phone_page = phone.new_page()
    violations += csp_violations(phone_page)
    phone_page.goto(session_url)
    expect(phone_page.locator("[data-session-status]")).to_be_visible()
    shoot(phone_page, artifacts, "phone-session-detail")
    phone.close()

    # A second user sees none of it: not in lists, 404 on the pages, refused on the websocket.
    other = browser.new_context(viewport={"width": 1280, "height": 900})
    bob = other.new_page()
    violations += csp_violations(bob)
    log_in(bob, site, "bob")
    expect(bob.locator("#dashboard")).to_contain_text("0 in total")
    bob.goto(f"{site.url}/sessions/")
    expect(bob.locator("#session-table")).to_contain_text("No sessions match")
    for url in (session_url, f"{site.url}/executions/{execution_id}/"):
        response = bob.goto(url)
        assert response is not None and response.status == 404, url
    refusal = bob.evaluate(
        """(id) => new Promise((resolve) => {
            const socket = new WebSocket(`ws://${location.host}/ws/executions/${id}/`);
            const messages = [];
            socket.onmessage = (event) => messages.push(JSON.parse(event.data));
            socket.onclose = (event) => resolve({code: event.code, messages});
        })""",
        execution_id,
    )
    assert refusal["code"] == 4404
    assert [m["type"] for m in refusal["messages"]] == ["error"]
    other.close()
    context.close()
    assert violations == [], violations[:6]


def test_the_admin_and_the_api_docs_work_under_the_content_security_policy(site, browser, artifacts):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    violations = csp_violations(page)
    page.set_default_timeout(15_000)
    page.goto(f"{site.url}/admin/login/")
    page.fill("input[name=username]", "ops")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.goto(f"{site.url}/admin/sessions_app/sandboxsession/")
    expect(page.locator("#changelist")).to_be_visible()
    docs = page.goto(f"{site.url}/api/docs/")
    assert docs is not None and "script-src 'self'" in docs.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()  # rendered by its scripts
    shoot(page, artifacts, "api-docs")
    context.close()
    assert violations == [], violations[:6]


def test_without_javascript_every_page_and_action_still_works_as_links_and_forms(site, browser, artifacts):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    log_in(page, site, "alice")
    for name in ("Sessions", "Templates", "API keys", "Dashboard"):
        page.click(f"nav.mainnav >> text={name}")
        expect(page.locator("h1")).to_contain_text(name)

    # A plain form post creates the session; without the page's poll, reloading shows it running.
    page.click("nav.mainnav >> text=New session")
    page.click("button:has-text('Create session')")
    status = page.locator("[data-session-status]")
    reload_until(
        page, lambda: status.get_attribute("data-session-status") == "running", what="the session to run"
    )
    expect(status).to_have_attribute("data-session-status", "running")
    session_url = page.url

    # The runner is a page of its own without JavaScript; a plain post lands on the execution's page.
    page.click("text=Run code and see this session's executions")
    page.locator("textarea[name=code]").fill("print('no script needed')\n")
    page.locator("textarea[name=event]").fill("")
    page.click("#runner button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Execution")
    result = page.locator("[data-execution-status]")
    reload_until(
        page,
        lambda: result.get_attribute("data-execution-status") == "completed",
        what="the execution to complete",
    )
    expect(page.locator("[data-output]")).to_contain_text("no script needed")
    shoot(page, artifacts, "no-js-execution-detail")

    page.goto(session_url)
    page.click("button:has-text('Terminate')")
    expect(page.locator("[data-session-status]")).to_have_attribute("data-session-status", "terminated")
    context.close()


def test_the_api_in_a_browser_has_an_index_takes_trailing_slashes_and_is_in_the_menu(
    site, browser, artifacts
):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    violations = csp_violations(page)
    page.set_default_timeout(15_000)
    index = page.goto(f"{site.url}/api/v1/")
    assert index is not None and index.status == 200 and "text/html" in index.headers["content-type"]
    expect(page.locator(f"a[href='{site.url}/api/v1/sessions']").first).to_be_visible()
    log_in(page, site, "alice")
    page.locator("nav.mainnav").get_by_role("link", name="API", exact=True).click()
    expect(page).to_have_url(f"{site.url}/api/v1")
    page.locator(f"a[href='{site.url}/api/v1/templates']").first.click()
    expect(page.locator(".response-info")).to_contain_text("python-basic")
    listing = page.goto(f"{site.url}/api/v1/sessions/")
    assert listing is not None and listing.status == 200
    expect(page.locator(".response-info")).to_contain_text('"items"')
    shoot(page, artifacts, "api-browsable")
    page.get_by_role("button", name="Log out").click()  # a plain form: DRF's own link needs inline script
    expect(page).to_have_url(f"{site.url}/api/v1")
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    context.close()
    assert violations == [], violations[:6]
