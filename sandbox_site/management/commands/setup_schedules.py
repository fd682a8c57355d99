"""`setup_schedules`: create or update the lifecycle schedules by name. Idempotent; the worker runs it on start."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule

from sandbox_site.schedules import desired_schedules


class Command(BaseCommand):
    help = "Create or update the periodic lifecycle schedules (idempotent)."

    def handle(self, *args, **options):
        with transaction.atomic():
            for name, fields in desired_schedules().items():
                schedule, created = Schedule.objects.update_or_create(
                    name=name,
                    defaults={
                        "func": fields["func"],
                        "schedule_type": Schedule.MINUTES,
                        "minutes": fields["minutes"],
                        "repeats": -1,
                    },
                )
                if created or schedule.next_run is None:
                    Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now())
                if options["verbosity"] >= 1:  # run_worker asks for 0: its log stays one format
                    self.stdout.write(
                        f"{'created' if created else 'updated'} {name}: every {fields['minutes']} min"
                    )
