"""`run_worker`: the background worker. Writes the schedules, reconciles state once, then runs django-q2.

State sync at start matters after a crash or restart: sandboxes nobody owns any more are removed and
sessions whose sandbox vanished are failed before new work is taken.
"""

from __future__ import annotations

import logging

from django.core.management import call_command
from django.core.management.base import BaseCommand

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Set up schedules, sync sandbox state, then run the django-q2 cluster."

    def handle(self, *args, **options):
        from sessions_app.lifecycle import sessions_sync_state

        call_command("setup_schedules", verbosity=0)
        try:
            counts = sessions_sync_state()
            logger.info("state sync at start: %s", counts)
        except Exception:
            logger.exception("state sync at start failed; the periodic sync will retry")
        call_command("qcluster")
