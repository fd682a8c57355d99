"""Fixtures shared by every app's tests: users and sessions on the real test database."""

from __future__ import annotations

import itertools

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
def python_template(db):
    from templates_app.models import SandboxTemplate

    return SandboxTemplate.objects.get(pk="python-basic")


@pytest.fixture
def make_session(db, python_template):
    from sessions_app.models import SandboxSession

    def make(owner, **fields):
        fields.setdefault("template", python_template)
        return SandboxSession.objects.create(owner=owner, **fields)

    return make
