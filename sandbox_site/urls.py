"""Top-level URL map: admin, the public API under /api/v1 with its docs, and the console (the rest)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views import defaults
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularSwaggerSplitView

from sandbox_site import views as console
from sandbox_site.api.errors import is_api_path, json_error
from sandbox_site.api.root import ApiRootView
from sandbox_site.api.routes import api_path
from sandbox_site.metrics.views import metrics_view

admin.site.site_header = "Sandbox Control Plane"
admin.site.site_title = "Sandbox Control Plane"
admin.site.index_title = "Operations"

urlpatterns = [
    path("admin/", admin.site.urls),
    api_path("api/v1", ApiRootView.as_view(), name="api-root"),
    path("api/v1/", include("sandbox_site.api.urls")),
    # The E2B SDKs' control API and in-sandbox services (E2B_API_URL and E2B_SANDBOX_URL point here).
    path("e2b/", include("sandbox_site.e2b.urls")),
    # The split view serves its start-up script as a file, not inline: the Content-Security-Policy allows it.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("docs", RedirectView.as_view(url="/api/docs/", permanent=False)),
    path("api-auth/", include("rest_framework.urls")),
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True, next_page="dashboard"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    # Prometheus: for the token, the allowed addresses and staff only (sandbox_site/metrics/access.py).
    path("metrics", metrics_view, name="metrics"),
    path("", console.dashboard, name="dashboard"),
    path("", include("sessions_app.urls")),
    path("", include("executions_app.urls")),
    path("", include("templates_app.urls")),
]


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request):
        return json_error(request, 404, "not_found", f"no API endpoint at {request.path}")
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if is_api_path(request):
        return json_error(
            request, 500, "internal_error", "Something went wrong on our side; the request id identifies it."
        )
    return defaults.server_error(request)
