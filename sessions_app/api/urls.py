"""Routes of the session and file endpoints: each path maps its methods to a viewset action."""

from __future__ import annotations

from sandbox_site.api.routes import api_path
from sessions_app.api.files import SessionFileViewSet
from sessions_app.api.views import SessionViewSet

urlpatterns = [
    api_path("sessions", SessionViewSet.as_view({"get": "list", "post": "create"}), name="sessions"),
    api_path(
        "sessions/<str:session_id>",
        SessionViewSet.as_view({"get": "retrieve", "delete": "destroy"}),
        name="session-detail",
    ),
    api_path(
        "sessions/<str:session_id>/terminate",
        SessionViewSet.as_view({"post": "terminate"}),
        name="session-terminate",
    ),
    api_path(
        "sessions/<str:session_id>/keepalive",
        SessionViewSet.as_view({"post": "keepalive"}),
        name="session-keepalive",
    ),
    api_path(
        "sessions/<str:session_id>/dependencies/install",
        SessionViewSet.as_view({"post": "install_dependencies"}),
        name="session-dependencies-install",
    ),
    api_path(
        "sessions/<str:session_id>/files",
        SessionFileViewSet.as_view({"get": "listing"}),
        name="session-files",
    ),
    # `files/upload` is also the URL of a workspace file named "upload": reading or deleting it is the file
    # actions' business, documented at files/{path}, so left out of the schema here.
    api_path(
        "sessions/<str:session_id>/files/upload",
        SessionFileViewSet.as_view(
            {"post": "upload", "get": "download", "delete": "destroy"}, undocumented=("get", "delete")
        ),
        {"path": "upload"},
        name="session-file-upload",
    ),
    api_path(
        "sessions/<str:session_id>/files/<path:path>",
        SessionFileViewSet.as_view({"get": "download", "delete": "destroy"}),
        name="session-file",
    ),
]
