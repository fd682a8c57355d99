"""Console pages of templates: everyone reads active ones; only staff create, edit and (de)activate, with the
API serializer's rules."""

from __future__ import annotations

import pytest
from django.urls import reverse

from templates_app.models import SandboxTemplate

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _templates(builtin_templates):
    """The built-in templates, also after a transactional test elsewhere has flushed the tables."""


NEW_TEMPLATE = {
    "id": "ruby-lite",
    "name": "Ruby (lite)",
    "description": "small",
    "image_url": "sandbox-template-ruby:latest",
    "runtime_type": "python3.11",
    "sandbox_backend": "",
    "default_cpu_cores": "0.5",
    "default_memory_mb": "256",
    "default_disk_mb": "512",
    "default_timeout_sec": "120",
    "warm_pool_size": "2",
    "is_active": "on",
    "default_env_vars": "LANG=C.UTF-8",
    "pre_installed_packages": "rake\nrspec",
}


def test_users_see_active_templates_only_and_no_staff_actions(client, user):
    SandboxTemplate.objects.filter(pk="nodejs-basic").update(is_active=False)
    client.force_login(user)
    body = client.get(reverse("templates:list")).content.decode()
    assert "python-basic" in body and "nodejs-basic" not in body
    assert reverse("templates:create") not in body and "Deactivate" not in body


def test_only_staff_may_change_templates(client, user):
    client.force_login(user)
    assert client.get(reverse("templates:create")).status_code == 403
    assert client.post(reverse("templates:create"), NEW_TEMPLATE).status_code == 403
    assert (
        client.post(reverse("templates:set-active", args=["python-basic"]), {"active": "false"}).status_code
        == 403
    )
    assert client.get(reverse("templates:edit", args=["python-basic"])).status_code == 403
    assert SandboxTemplate.objects.get(pk="python-basic").is_active
    client.logout()
    response = client.get(reverse("templates:create"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_staff_create_a_template(client, staff_user):
    client.force_login(staff_user)
    response = client.post(reverse("templates:create"), NEW_TEMPLATE)
    assert response.status_code == 302
    template = SandboxTemplate.objects.get(pk="ruby-lite")
    assert template.default_env_vars == {"LANG": "C.UTF-8"}
    assert template.pre_installed_packages == ["rake", "rspec"]
    assert (template.default_memory_mb, template.warm_pool_size, template.is_active) == (256, 2, True)
    duplicate = client.post(reverse("templates:create"), NEW_TEMPLATE)
    assert duplicate.status_code == 400 and "exists already" in duplicate.content.decode()


def test_the_template_form_refuses_what_the_api_refuses(client, staff_user):
    client.force_login(staff_user)
    bad = {**NEW_TEMPLATE, "id": "Bad Id", "default_memory_mb": "9", "default_env_vars": "1X=y"}
    response = client.post(reverse("templates:create"), bad, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 200 and 'id="template-form"' in body and "<html" not in body
    assert "This value does not match the required pattern." in body
    assert "greater than or equal to 64" in body
    assert "1X" in body
    assert not SandboxTemplate.objects.filter(name="Ruby (lite)").exists()


def test_staff_edit_a_template_but_not_its_id(client, staff_user):
    client.force_login(staff_user)
    edit = {**NEW_TEMPLATE, "id": "python-basic", "name": "Python 3", "image_url": "img:2"}
    response = client.post(reverse("templates:edit", args=["python-basic"]), {**edit, "id": "renamed"})
    assert response.status_code == 302
    template = SandboxTemplate.objects.get(pk="python-basic")
    assert (template.name, template.image_url) == ("Python 3", "img:2")
    assert not SandboxTemplate.objects.filter(pk="renamed").exists()
    assert client.get(reverse("templates:edit", args=["missing"])).status_code == 404


def test_staff_deactivate_and_reactivate(client, staff_user):
    client.force_login(staff_user)
    response = client.post(
        reverse("templates:set-active", args=["python-basic"]),
        {"active": "false"},
        headers={"HX-Request": "true"},
    )
    assert 'id="template-table"' in response.content.decode()
    assert not SandboxTemplate.objects.get(pk="python-basic").is_active
    client.post(reverse("templates:set-active", args=["python-basic"]), {"active": "true"})
    assert SandboxTemplate.objects.get(pk="python-basic").is_active
