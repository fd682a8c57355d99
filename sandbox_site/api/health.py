"""Health endpoints: `/health` (the process answers) and `/health/detailed` (real checks of every part)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sandbox_site import __version__
from sandbox_site.health import STARTED_AT
from sandbox_site.host_paths import public_text
from sessions_app.sandboxes import runtime_named

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_storage() -> None:
    from sessions_app.storage import ensure_bucket

    ensure_bucket()  # a missing bucket is created, as at start; an unreachable store fails here
    name = default_storage.save(f"health/{uuid.uuid4().hex}", ContentFile(b"ok"))
    try:
        with default_storage.open(name) as handle:
            if handle.read() != b"ok":
                raise RuntimeError("storage returned different bytes than were written")
    finally:
        default_storage.delete(name)


def check_runtime() -> None:
    runtime_named(settings.SANDBOX_RUNTIME).check()


def check_broker() -> None:
    if settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    else:
        from django_q.models import OrmQ

        OrmQ.objects.using(settings.Q_CLUSTER["orm"]).exists()


CHECKS = {
    "database": check_database,
    "storage": check_storage,
    "runtime": check_runtime,
    "broker": check_broker,
}


def pool_and_session_counts() -> dict[str, Any]:
    """Warm sandboxes are counted apart from sessions: they belong to nobody until claimed."""
    from django.db.models import Count

    from sessions_app.models import SandboxSession, WarmSandbox
    from templates_app.models import SandboxTemplate

    ready = dict(
        WarmSandbox.objects.ready()
        .values_list("template_id")
        .annotate(n=Count("id"))
        .values_list("template_id", "n")
    )
    pools = {
        t.id: {"size": t.warm_pool_size, "ready": ready.get(t.id, 0)}
        for t in SandboxTemplate.objects.filter(warm_pool_size__gt=0)
    }
    sessions = dict(
        SandboxSession.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )
    return {"warm_pools": pools, "sessions": sessions}


def run_checks() -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            check()
        except Exception as exc:  # every failure mode is reported, none is raised
            message = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
            # Public endpoint: the runtime's errors name sockets and the data dir; the log keeps them.
            logger.warning("health check %s failed: %s", name, message)
            results[name] = {"status": "unhealthy", "error": public_text(message)[:500]}
        else:
            results[name] = {"status": "healthy"}
        results[name]["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
    return results


HealthSerializer = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(),
        "version": serializers.CharField(),
        "uptime": serializers.FloatField(),
    },
)


class HealthView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(operation_id="health", responses={200: HealthSerializer})
    def get(self, request: Request) -> Response:
        return Response(
            {"status": "healthy", "version": __version__, "uptime": round(time.monotonic() - STARTED_AT, 3)}
        )


class DetailedHealthView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="health_detailed",
        responses={
            200: inline_serializer(
                "DetailedHealth",
                {
                    "status": serializers.CharField(),
                    "version": serializers.CharField(),
                    "uptime": serializers.FloatField(),
                    "runtime": serializers.CharField(),
                    "checks": serializers.DictField(child=serializers.DictField()),
                    "failing": serializers.ListField(child=serializers.CharField()),
                    "warm_pools": serializers.DictField(child=serializers.DictField()),
                    "sessions": serializers.DictField(child=serializers.IntegerField()),
                },
            ),
            503: inline_serializer(
                "DetailedHealthFailing",
                {
                    "status": serializers.CharField(),
                    "version": serializers.CharField(),
                    "uptime": serializers.FloatField(),
                    "runtime": serializers.CharField(),
                    "checks": serializers.DictField(child=serializers.DictField()),
                    "failing": serializers.ListField(child=serializers.CharField()),
                },
            ),
        },
    )
    def get(self, request: Request) -> Response:
        checks = run_checks()
        failing = [name for name, result in checks.items() if result["status"] != "healthy"]
        body = {
            "status": "unhealthy" if failing else "healthy",
            "version": __version__,
            "uptime": round(time.monotonic() - STARTED_AT, 3),
            "runtime": settings.SANDBOX_RUNTIME,
            "checks": checks,
            "failing": failing,
        }
        if "database" not in failing:
            body.update(pool_and_session_counts())
        return Response(body, status=503 if failing else 200)
