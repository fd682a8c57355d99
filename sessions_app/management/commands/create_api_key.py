"""`create_api_key <username> [--staff] [--name N]`: make a key (and the user, if missing); the key is the last line."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from sessions_app.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key for a user (created if missing). Prints the key alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="Make the user staff (sees everything).")
        parser.add_argument("--name", default="default", help="A label for the key.")

    def handle(self, *args, username: str, staff: bool, name: str, **options):
        User = get_user_model()
        if not username or len(username) > 150:
            raise CommandError("username must be 1-150 characters")
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_unusable_password()
            if staff and not user.is_staff:
                user.is_staff = True
            user.save()
            _, raw = ApiKey.objects.create_key(owner=user, name=name)
        self.stderr.write(f"{'Created' if created else 'Using'} user {username!r}; API key {name!r}:")
        self.stdout.write(raw)
