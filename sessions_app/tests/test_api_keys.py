from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from sessions_app.models import ApiKey, hash_api_key


@pytest.mark.django_db
def test_a_key_is_stored_only_as_a_hash(user):
    key, raw = ApiKey.objects.create_key(owner=user, name="ci")
    assert raw.startswith("scp_") and len(raw) > 30
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.hashed_key == hash_api_key(raw)
    assert raw not in (stored.hashed_key, stored.prefix, stored.name)
    assert raw.startswith(stored.prefix)


@pytest.mark.django_db
def test_authenticate_finds_the_key_and_records_use(user):
    key, raw = ApiKey.objects.create_key(owner=user)
    found = ApiKey.objects.authenticate(raw)
    assert found == key and found.owner == user
    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ["", "scp_wrong", "Bearer x", "x" * 500])
def test_authenticate_refuses_unknown_keys(user, raw):
    ApiKey.objects.create_key(owner=user)
    assert ApiKey.objects.authenticate(raw) is None


@pytest.mark.django_db
def test_a_revoked_key_or_inactive_owner_no_longer_authenticates(user, other_user):
    key, raw = ApiKey.objects.create_key(owner=user)
    key.revoke()
    assert ApiKey.objects.authenticate(raw) is None
    _, raw2 = ApiKey.objects.create_key(owner=other_user)
    other_user.is_active = False
    other_user.save()
    assert ApiKey.objects.authenticate(raw2) is None


@pytest.mark.django_db
def test_create_api_key_creates_the_user_and_prints_the_key_last():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "alice", "--name", "laptop", stdout=out, stderr=err)
    last_line = out.getvalue().strip().splitlines()[-1]
    alice = get_user_model().objects.get(username="alice")
    assert not alice.is_staff and not alice.has_usable_password()
    assert ApiKey.objects.authenticate(last_line).owner == alice
    assert ApiKey.objects.get(owner=alice).name == "laptop"


@pytest.mark.django_db
def test_create_api_key_staff_flag_and_existing_user(user):
    out = io.StringIO()
    call_command("create_api_key", user.username, "--staff", stdout=out, stderr=io.StringIO())
    user.refresh_from_db()
    assert user.is_staff
    assert ApiKey.objects.authenticate(out.getvalue().strip().splitlines()[-1]).owner == user


@pytest.mark.django_db
def test_bootstrap_local_runs_once():
    first, second = io.StringIO(), io.StringIO()
    call_command("bootstrap_local", stdout=first)
    call_command("bootstrap_local", stdout=second)
    assert "Admin login:  admin / " in first.getvalue()
    raw = first.getvalue().split("API key:")[1].split()[0]
    assert ApiKey.objects.authenticate(raw).owner.is_superuser
    assert "nothing to do" in second.getvalue()
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
