"""Response headers that keep injected markup inert: Content-Security-Policy, nosniff, referrer, framing."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return {part.split(" ", 1)[0]: part.split(" ", 1)[1] for part in policy.split("; ")}


@pytest.mark.parametrize("url", ["/", "/sessions/", "/admin/", "/login/", "/admin/login/"])
def test_console_and_admin_pages_carry_a_strict_policy(client, staff_user, url):
    client.force_login(staff_user)
    response = client.get(url)
    assert response.status_code in (200, 302)
    policy = directives(response)
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_console_pages_have_no_inline_script_style_or_handler(client, user, make_session):
    make_session(user, status="running")
    client.force_login(user)
    for url in ("/", "/sessions/"):
        html = client.get(url).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert "<style" not in html and " style=" not in html, url
        assert not re.search(r"\son[a-z]+=", html), url


def test_api_pages_allow_inline_styles_but_never_inline_scripts(client, api):
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    policy = directives(docs)
    assert policy["script-src"] == "'self'" and "'unsafe-inline'" in policy["style-src"]
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", docs.content.decode())
    assert directives(api.get("/api/v1/sessions"))["frame-ancestors"] == "'none'"
