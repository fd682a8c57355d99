"""Routes of the template endpoints (a collection and its items), spelled out like the other apps' routes so
each also answers with a trailing slash (sandbox_site/api/routes.py)."""

from __future__ import annotations

from sandbox_site.api.routes import api_path
from templates_app.api.views import SandboxTemplateViewSet

urlpatterns = [
    api_path(
        "templates", SandboxTemplateViewSet.as_view({"get": "list", "post": "create"}), name="template-list"
    ),
    api_path(
        "templates/<str:pk>",
        SandboxTemplateViewSet.as_view(
            {"get": "retrieve", "put": "update", "patch": "partial_update", "delete": "destroy"}
        ),
        name="template-detail",
    ),
]
