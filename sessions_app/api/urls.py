from __future__ import annotations

from django.urls import path

from sessions_app.api import files, views

urlpatterns = [
    path("sessions", views.SessionListCreateView.as_view(), name="sessions"),
    path("sessions/<str:session_id>", views.SessionDetailView.as_view(), name="session-detail"),
    path(
        "sessions/<str:session_id>/terminate", views.SessionTerminateView.as_view(), name="session-terminate"
    ),
    path(
        "sessions/<str:session_id>/keepalive", views.SessionKeepaliveView.as_view(), name="session-keepalive"
    ),
    path(
        "sessions/<str:session_id>/dependencies/install",
        views.SessionDependenciesView.as_view(),
        name="session-dependencies-install",
    ),
    path("sessions/<str:session_id>/files", files.SessionFilesView.as_view(), name="session-files"),
    path(
        "sessions/<str:session_id>/files/upload",
        files.SessionFileUploadView.as_view(),
        name="session-file-upload",
    ),
    path("sessions/<str:session_id>/files/<path:path>", files.SessionFileView.as_view(), name="session-file"),
]
