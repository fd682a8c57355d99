"""Top-level URL map: admin, the public API under /api/v1 with its docs, and the console (the rest)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularSwaggerSplitView

from sandbox_site import views as console
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
    path("favicon.ico", console.favicon),
    path("", console.dashboard, name="dashboard"),
    path("", include("sessions_app.urls")),
    path("", include("executions_app.urls")),
    path("", include("templates_app.urls")),
]


# Console paths get error pages in the console's layout, API paths the API's JSON errors (sandbox_site/views.py).
handler400 = console.error_400
handler403 = console.error_403
handler404 = console.error_404
handler500 = console.error_500
