"""The periodic lifecycle schedules, by name; `setup_schedules` writes them (idempotently)."""

from __future__ import annotations

import math

from django.conf import settings


def desired_schedules() -> dict[str, dict[str, object]]:
    """Schedule name -> fields. Intervals are whole minutes: django-q2's scheduler wakes every 30 s."""

    def minutes(seconds: int) -> int:
        return max(1, math.ceil(seconds / 60))

    return {
        "sessions.sweep": {
            "func": "sessions_app.tasks.sessions_sweep_task",
            "minutes": minutes(settings.SANDBOX_SWEEP_INTERVAL),
        },
        "sessions.probe": {
            "func": "sessions_app.tasks.sessions_probe_task",
            "minutes": minutes(settings.SANDBOX_HEALTH_INTERVAL),
        },
        "sessions.state_sync": {
            "func": "sessions_app.tasks.sessions_sync_state_task",
            "minutes": minutes(settings.SANDBOX_SYNC_INTERVAL),
        },
        "sessions.warm_pool_refill": {
            "func": "sessions_app.tasks.warm_pool_refill_task",
            "minutes": minutes(settings.SANDBOX_SWEEP_INTERVAL),
        },
        "executions.expire_leases": {
            "func": "executions_app.tasks.execution_expire_leases_task",
            "minutes": minutes(settings.SANDBOX_SWEEP_INTERVAL),
        },
    }
