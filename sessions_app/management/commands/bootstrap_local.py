"""First-run set-up for the embedded default: an admin user and an API key, printed once."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from sessions_app.models import ApiKey


class Command(BaseCommand):
    help = "Create the admin user and an API key if no superuser exists yet, and print both. Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("An admin user exists already; nothing to do.")
            return
        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            user = User.objects.create_superuser(username=username, email="", password=password)
            _, raw = ApiKey.objects.create_key(owner=user, name="first-run")
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "=" * 64,
                    "  First run: save these, they are shown only once.",
                    f"  Admin login:  {username} / {password}",
                    f"  API key:      {raw}",
                    "=" * 64,
                    "",
                ]
            )
        )
