"""The public REST API, version 1. Every route also answers with a trailing slash (routes.py)."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from sandbox_site.api.health import DetailedHealthView, HealthView
from sandbox_site.api.routes import api_path

urlpatterns = [
    api_path("health", HealthView.as_view(), name="health"),
    api_path("health/detailed", DetailedHealthView.as_view(), name="health-detailed"),
    api_path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("", include("templates_app.api.urls")),
    path("", include("sessions_app.api.urls")),
    path("", include("executions_app.api.urls")),
]
