"""Password logins are throttled per username and address (django-axes); API keys are not affected."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

WRONG = "not-the-password"
RIGHT = "pw-123456789"  # conftest's users
ATTACKER = "203.0.113.7"


def login(client: Client, url: str, username: str, password: str, address: str = ATTACKER):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("url", ["/admin/login/", "/login/"])
def test_six_wrong_passwords_then_the_right_one_is_refused(staff_user, url):
    client = Client()
    statuses = [login(client, url, staff_user.username, WRONG).status_code for _ in range(6)]
    assert statuses[:4] == [200] * 4  # the form again, with its error
    assert statuses[4:] == [429, 429]
    refused = login(client, url, staff_user.username, RIGHT)
    assert refused.status_code == 429
    assert b"Too many failed logins" in refused.content
    assert not logged_in(client)


def test_another_user_or_another_address_is_not_locked_out(staff_user, user):
    for _ in range(6):
        login(Client(), "/admin/login/", staff_user.username, WRONG)
    other_user = Client()
    response = login(other_user, "/login/", user.username, RIGHT)
    assert response.status_code == 302 and logged_in(other_user)
    elsewhere = Client()
    response = login(elsewhere, "/admin/login/", staff_user.username, RIGHT, address="198.51.100.9")
    assert response.status_code == 302 and logged_in(elsewhere)


def test_a_success_before_the_limit_clears_the_count(user):
    client = Client()
    for _ in range(4):
        login(client, "/login/", user.username, WRONG)
    assert login(client, "/login/", user.username, RIGHT).status_code == 302
    client.logout()
    for _ in range(4):
        assert login(client, "/login/", user.username, WRONG).status_code == 200
    assert login(client, "/login/", user.username, RIGHT).status_code == 302


def test_api_keys_still_work_for_a_locked_out_user(user, make_api_client):
    for _ in range(6):
        login(Client(), "/login/", user.username, WRONG)
    api = make_api_client(user)
    assert api.get("/api/v1/sessions", REMOTE_ADDR=ATTACKER).status_code == 200


def test_the_lockout_limit_is_a_setting(settings, user):
    settings.AXES_FAILURE_LIMIT = 2
    client = Client()
    assert login(client, "/login/", user.username, WRONG).status_code == 200
    assert login(client, "/login/", user.username, WRONG).status_code == 429
