"""`runtime_type` becomes the language runtime, as in the API this product replaces; the sandbox backend it
used to hold moves, values unchanged, to `sandbox_backend`.

Existing templates get a language runtime from what they are: one whose id or image names Node.js is
`nodejs20`, every other `python3.11` (all images hold Python 3).
"""

from __future__ import annotations

from django.db import migrations, models

import templates_app.models


def guess_language_runtime(apps, schema_editor):
    SandboxTemplate = apps.get_model("templates_app", "SandboxTemplate")
    for template in SandboxTemplate.objects.all():
        names = f"{template.id} {template.image_url}".lower()
        runtime = "nodejs20" if "node" in names else "python3.11"
        if template.runtime_type != runtime:
            SandboxTemplate.objects.filter(pk=template.pk).update(runtime_type=runtime)


class Migration(migrations.Migration):
    dependencies = [("templates_app", "0004_env_and_runtime_validators")]

    operations = [
        migrations.RenameField("sandboxtemplate", "runtime_type", "sandbox_backend"),
        migrations.AlterField(
            model_name="sandboxtemplate",
            name="sandbox_backend",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "Default (SANDBOX_RUNTIME)"),
                    ("process", "Process (bubblewrap)"),
                    ("docker", "Docker"),
                    ("kubernetes", "Kubernetes"),
                ],
                default="",
                help_text="Where its sandboxes run: process, docker or kubernetes; blank uses SANDBOX_RUNTIME.",
                max_length=20,
                validators=[templates_app.models.validate_runtime_name],
            ),
        ),
        migrations.AddField(
            model_name="sandboxtemplate",
            name="runtime_type",
            field=models.CharField(
                choices=[
                    ("python3.11", "Python 3.11"),
                    ("nodejs20", "Node.js (nodejs20)"),
                    ("java17", "Java 17 (not available)"),
                    ("go1.21", "Go 1.21 (not available)"),
                ],
                default="python3.11",
                help_text="The language runtime (python3.11, nodejs20; java17 and go1.21 are not available).",
                max_length=20,
            ),
        ),
        migrations.RunPython(guess_language_runtime, migrations.RunPython.noop),
    ]
