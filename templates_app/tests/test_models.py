from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db.models import ProtectedError

from templates_app.models import SandboxTemplate

BUILTIN = {"python-basic", "nodejs-basic", "python-datascience"}


@pytest.mark.django_db
def test_migrate_creates_the_three_builtin_templates():
    templates = {t.id: t for t in SandboxTemplate.objects.filter(id__in=BUILTIN)}
    assert set(templates) == BUILTIN
    for template_id, template in templates.items():
        assert template.image_url == f"sandbox-template-{template_id}:latest"
        assert float(template.default_cpu_cores) == 1.0
        assert template.default_memory_mb == 512
        assert template.default_disk_mb == 1024
        assert template.default_timeout_sec == 300
        assert template.is_active
    assert set(templates["python-datascience"].pre_installed_packages) == {
        "numpy",
        "pandas",
        "matplotlib",
        "scipy",
    }


@pytest.mark.django_db
def test_active_excludes_deactivated_templates():
    SandboxTemplate.objects.filter(pk="nodejs-basic").update(is_active=False)
    assert "nodejs-basic" not in set(SandboxTemplate.objects.active().values_list("id", flat=True))


@pytest.mark.django_db
@pytest.mark.parametrize("bad_id", ["Python", "-x", "a b", "x" * 65, "../etc"])
def test_it_refuses_malformed_template_ids(bad_id):
    template = SandboxTemplate(id=bad_id, name="n", image_url="img")
    with pytest.raises(ValidationError) as error:
        template.full_clean()
    assert "id" in error.value.message_dict


@pytest.mark.django_db
def test_it_refuses_resources_out_of_bounds():
    template = SandboxTemplate(
        id="tiny", name="n", image_url="img", default_memory_mb=16, default_cpu_cores=9
    )
    with pytest.raises(ValidationError) as error:
        template.full_clean()
    assert {"default_memory_mb", "default_cpu_cores"} <= set(error.value.message_dict)


@pytest.mark.django_db
def test_a_template_in_use_cannot_be_deleted(make_session, user, python_template):
    make_session(user)
    with pytest.raises(ProtectedError):
        python_template.delete()
