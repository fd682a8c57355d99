"""Usage samples: the health probe stores each reading, and only the newest few per session are kept."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from sessions_app.lifecycle import sessions_probe
from sessions_app.models import USAGE_SAMPLES_KEPT, SessionUsageSample

pytestmark = pytest.mark.django_db


def test_the_probe_stores_a_usage_sample_of_each_running_session(fake_runtime, running_session):
    sessions_probe()
    sessions_probe()
    samples = list(SessionUsageSample.objects.filter(session=running_session))
    assert len(samples) == 2
    assert all(sample.memory_mb == 24.0 for sample in samples)
    running_session.refresh_from_db()
    assert running_session.running_at is not None


def test_only_the_newest_samples_of_a_session_are_kept(make_session, user):
    session, other = make_session(user, status="running"), make_session(user, status="running")
    start = timezone.now() - timedelta(hours=2)
    SessionUsageSample.objects.record(session_id=other.pk, cpu_percent=1.0, memory_mb=1.0, at=start)
    for minute in range(USAGE_SAMPLES_KEPT + 5):
        SessionUsageSample.objects.record(
            session_id=session.pk,
            cpu_percent=float(minute),
            memory_mb=10.0 + minute,
            at=start + timedelta(minutes=minute),
        )
    kept = list(SessionUsageSample.objects.filter(session=session).values_list("cpu_percent", flat=True))
    assert kept == [float(minute) for minute in range(5, USAGE_SAMPLES_KEPT + 5)]
    assert SessionUsageSample.objects.filter(session=other).count() == 1
    # A probe that could not read usage stores nothing.
    SessionUsageSample.objects.record(session_id=other.pk, cpu_percent=None, memory_mb=None)
    assert SessionUsageSample.objects.filter(session=other).count() == 1
