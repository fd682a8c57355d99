"""Top-level URL map: admin, the public API under /api/v1, and the console."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from sandbox_site.health import health

admin.site.site_header = "Sandbox Control Plane"
admin.site.site_title = "Sandbox Control Plane"
admin.site.index_title = "Operations"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/health", health, name="health"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
