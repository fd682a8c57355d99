"""The console fixes an operator's walk asked for, in real Chromium (Playwright) against `manage.py serve`.

One server and one browser for the module (the fixtures of test_browser.py, instantiated here once): the
dependency badge follows the install without a reload, the executions list and its filters, keyboard focus
and ticked boxes survive the 5 s / 3 s refreshes, bulk terminate, the phone menu, the API key's copy button,
error pages inside the console, and an unfinished run's pane without JavaScript.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from sandbox_site.testing import wait_until
from sandbox_site.tests import test_browser as shared
from sandbox_site.tests.test_browser import BASE_DIR, csp_violations, log_in, shoot

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - depends on the machine
    pass

# The shared fixtures, instantiated for this module: one server and one browser for all its tests.
site = shared.site
browser = shared.browser
artifacts = shared.artifacts
pytestmark = shared.pytestmark
DOCS_SHOTS = {"executions"}


def shoot_for_docs(page: Page, artifacts: Path, name: str) -> None:
    shoot(page, artifacts, name)
    if name in DOCS_SHOTS and os.environ.get("SANDBOX_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(artifacts / f"{name}.png", BASE_DIR / "docs" / "screenshots" / f"{name}.png")


def set_install_status(site, session_id: str, status: str) -> None:
    """What the worker writes when an install starts or ends, written straight into the site's SQLite
    database (a `manage.py shell` per change would cost seconds)."""
    with sqlite3.connect(site.data_dir / "sandbox.sqlite3", timeout=30) as database:
        database.execute(
            "UPDATE sessions_app_sandboxsession SET dependency_install_status = ? WHERE id = ?",
            (status, session_id),
        )


def create_session(page: Page, site) -> str:
    page.goto(f"{site.url}/sessions/new/")
    # Python by default, as the code runner and the API.
    expect(page.locator("select[name=template_id]")).to_have_value("python-basic")
    page.click("button:has-text('Create session')")
    expect(page.locator("[data-session-status]")).to_have_attribute(
        "data-session-status", "running", timeout=30_000
    )
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def settled(page: Page, *, timeout: float) -> None:
    """Wait for the swap armed by `next_settle` (polling from here: the page's CSP forbids eval)."""
    wait_until(
        lambda: page.evaluate("() => window.__settled === true"),
        timeout=timeout,
        interval=0.2,
        what="the next refresh of the fragment",
    )


def next_settle(page: Page, target: str) -> None:
    """Arm a flag that the next htmx swap of #target sets once it has settled."""
    page.evaluate(
        """(id) => { window.__settled = false;
            document.addEventListener('htmx:afterSettle', (e) => {
              if (e.target.id === id) window.__settled = true; }, {once: false}); }""",
        target,
    )


def test_refreshes_keep_focus_and_the_dependency_badge_follows_the_install(site, browser, artifacts):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    violations = csp_violations(page)
    page.set_default_timeout(15_000)
    log_in(page, site, "alice")
    session_id = create_session(page, site)
    session_url = page.url

    # An install the worker reports as running, then finished: the badge follows without a reload by hand.
    set_install_status(site, session_id, "installing")
    page.reload()
    badge = page.locator("[data-dependency-status]")
    expect(badge).to_have_attribute("data-dependency-status", "installing")
    set_install_status(site, session_id, "completed")
    expect(badge).to_have_attribute("data-dependency-status", "completed", timeout=15_000)
    expect(page.locator("#timeline")).to_contain_text("sandbox ready")

    # Keyboard focus on the session panel's button and on a dashboard tile survives their refreshes.
    dashboard = context.new_page()
    violations += csp_violations(dashboard)
    dashboard.goto(f"{site.url}/")
    page.focus("#session-status button:has-text('Keep alive')")
    dashboard.focus("#dashboard a.tile[href$='status=running']")
    next_settle(page, "session-status")
    next_settle(dashboard, "dashboard")
    settled(page, timeout=12)
    settled(dashboard, timeout=12)
    assert page.evaluate("document.activeElement.textContent.trim()") == "Keep alive"
    assert page.evaluate("document.activeElement.closest('#session-status') !== null")
    assert dashboard.evaluate("document.activeElement.getAttribute('href')").endswith("status=running")
    shoot(dashboard, artifacts, "dashboard-limits")
    page.goto(session_url)
    shoot(page, artifacts, "session-timeline")
    context.close()
    assert violations == [], violations[:6]


def test_executions_list_bulk_terminate_phone_menu_copy_and_error_pages(site, browser, artifacts):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    page = context.new_page()
    violations = csp_violations(page)
    page.set_default_timeout(15_000)
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, site, "alice")
    session_id = create_session(page, site)
    runner = page.locator("#runner")
    runner.locator("textarea[name=code]").fill("print('listed')\n")
    runner.locator("button[type=submit]").click()
    expect(page.locator("#run-output [data-execution-status]")).to_have_attribute(
        "data-execution-status", "completed", timeout=20_000
    )
    execution_id = page.locator("#run-output .pane-head a").inner_text().strip()

    # The executions list, from the menu, with its filters swapping the table.
    page.click("nav.mainnav >> text=Executions")
    expect(page.locator("h1")).to_have_text("Executions")
    table = page.locator("#execution-table")
    expect(table).to_contain_text(execution_id)
    page.select_option("select[name=status]", "failed")
    expect(table).not_to_contain_text(execution_id)
    page.select_option("select[name=status]", "completed")
    expect(table).to_contain_text(execution_id)
    shoot_for_docs(page, artifacts, "executions")

    # Bulk terminate: a ticked box stays ticked across the table's 3 s refresh, then the button ends it.
    page.goto(f"{site.url}/sessions/")
    box = page.locator(f"#session-table input[type=checkbox][value='{session_id}']")
    box.check()
    next_settle(page, "session-table")
    settled(page, timeout=10)
    expect(box).to_be_checked()
    page.click("button:has-text('Terminate selected')")
    expect(page.locator(".messages")).to_contain_text("Terminated 1 session")
    expect(page.locator(f"#session-table input[value='{session_id}']")).to_have_count(0)
    row = page.locator("#session-table tr", has_text=session_id)
    expect(row).to_contain_text("terminated")

    # A new key's Copy button puts the secret on the clipboard.
    page.click("nav.mainnav >> text=API keys")
    page.fill("input[name=name]", "copied")
    page.click("button:has-text('Create key')")
    secret = page.locator("[data-secret]").inner_text().strip()
    page.click("button[data-copy='#new-key-secret']")
    expect(page.locator("button[data-copy='#new-key-secret']")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # A missing page is a console page with the menu.
    missing = page.goto(f"{site.url}/sessions/no-such-session/")
    assert missing is not None and missing.status == 404
    expect(page.locator("nav.mainnav")).to_be_visible()
    expect(page.locator("h1")).to_contain_text("Page not found")

    # On a phone every menu item is on screen, none cut off at the edge.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=context.storage_state())
    phone_page = phone.new_page()
    violations += csp_violations(phone_page)
    phone_page.goto(f"{site.url}/")
    links = phone_page.locator("nav.mainnav a")
    assert links.count() >= 6
    for index in range(links.count()):
        box_ = links.nth(index).bounding_box()
        assert box_ is not None
        assert box_["x"] >= 0 and box_["x"] + box_["width"] <= 390, links.nth(index).inner_text()
        hit = phone_page.evaluate(
            "([x, y]) => document.elementFromPoint(x, y)?.closest('nav.mainnav a')?.textContent",
            [box_["x"] + box_["width"] / 2, box_["y"] + box_["height"] / 2],
        )
        assert hit == links.nth(index).inner_text()
    shoot(phone_page, artifacts, "phone-dashboard")
    phone.close()
    context.close()
    assert violations == [], violations[:6]


def test_without_javascript_an_unfinished_run_offers_a_reload_not_a_spinner(site, browser, artifacts):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    log_in(page, site, "bob")
    page.goto(f"{site.url}/sessions/new/")
    page.click("button:has-text('Create session')")
    status = page.locator("[data-session-status]")
    for _ in range(100):
        if status.get_attribute("data-session-status") == "running":
            break
        page.wait_for_timeout(300)
        page.reload()
    page.click("text=Run code and see this session's executions")
    page.locator("textarea[name=code]").fill("import time\ntime.sleep(4)\nprint('slow')\n")
    page.locator("textarea[name=event]").fill("")
    page.click("#runner button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Execution")
    state = page.locator("[data-stream-state]")
    expect(state).not_to_contain_text("connecting")
    expect(state.locator("a", has_text="reload")).to_be_visible()
    shoot(page, artifacts, "no-js-unfinished-execution")
    context.close()
