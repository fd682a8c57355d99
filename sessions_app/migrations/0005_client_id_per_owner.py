"""Client-chosen session ids become unique per owner: `client_id` (what the API shows) beside the internal pk.

Existing rows keep their id as both: their stored workspaces, sandboxes and executions stay where they are.
"""

from __future__ import annotations

from typing import Any

import django.core.validators
from django.conf import settings
from django.db import migrations, models


def copy_ids(apps: Any, schema_editor: Any) -> None:
    sessions = apps.get_model("sessions_app", "SandboxSession")
    sessions.objects.filter(client_id="").update(client_id=models.F("id"))


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0004_workspace_restore_and_installs"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="sandboxsession",
            name="client_id",
            field=models.CharField(
                blank=True,
                help_text="The id its owner knows it by; unique per owner. Blank at create means the internal id.",
                max_length=64,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                        "Ids are 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit.",
                    )
                ],
            ),
        ),
        migrations.RunPython(copy_ids, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="sandboxsession",
            constraint=models.UniqueConstraint(
                fields=("owner", "client_id"), name="session_owner_client_id_uniq"
            ),
        ),
    ]
