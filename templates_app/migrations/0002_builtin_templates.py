"""Create the built-in templates. The rows are spelled out here, not imported, so the migration never drifts."""

from __future__ import annotations

from django.db import migrations

# No runtime_type: at this migration it was the sandbox backend, blank by default; 0005 made it the language
# runtime and set the built-in templates' (the test suite's fixture runs both functions on today's model).
DEFAULTS = {
    "default_cpu_cores": 1,
    "default_memory_mb": 512,
    "default_disk_mb": 1024,
    "default_timeout_sec": 300,
    "default_env_vars": {},
    "warm_pool_size": 0,
    "is_active": True,
}

BUILTIN = [
    ("python-basic", "Python", "Python 3 with the standard library.", []),
    ("nodejs-basic", "Node.js", "Node.js from Debian's packages, plus Python 3.", []),
    (
        "python-datascience",
        "Python data science",
        "Python 3 with numpy, pandas, matplotlib and scipy.",
        ["numpy", "pandas", "matplotlib", "scipy"],
    ),
]


def create_builtin(apps, schema_editor):
    SandboxTemplate = apps.get_model("templates_app", "SandboxTemplate")
    for template_id, name, description, packages in BUILTIN:
        SandboxTemplate.objects.get_or_create(
            id=template_id,
            defaults={
                **DEFAULTS,
                "name": name,
                "description": description,
                "image_url": f"sandbox-template-{template_id}:latest",
                "pre_installed_packages": packages,
            },
        )


def remove_builtin(apps, schema_editor):
    SandboxTemplate = apps.get_model("templates_app", "SandboxTemplate")
    SandboxTemplate.objects.filter(id__in=[row[0] for row in BUILTIN], sessions__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("templates_app", "0001_initial")]

    operations = [migrations.RunPython(create_builtin, remove_builtin)]
