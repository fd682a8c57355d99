"""Console routes of sessions and API keys (the REST API's are in sessions_app/api/urls.py)."""

from __future__ import annotations

from django.urls import path

from sessions_app import views

app_name = "sessions"

urlpatterns = [
    path("sessions/", views.session_list, name="list"),
    path("sessions/new/", views.session_create_view, name="create"),
    path("sessions/terminate/", views.session_bulk_terminate, name="bulk-terminate"),
    path("sessions/<str:session_id>/", views.session_detail, name="detail"),
    path("sessions/<str:session_id>/status/", views.session_status, name="status"),
    path("sessions/<str:session_id>/terminate/", views.session_terminate_view, name="terminate"),
    path("sessions/<str:session_id>/keepalive/", views.session_keepalive_view, name="keepalive"),
    path("sessions/<str:session_id>/files/", views.session_files, name="files"),
    path("sessions/<str:session_id>/files/upload/", views.file_upload, name="file-upload"),
    path("sessions/<str:session_id>/files/download/", views.file_download, name="file-download"),
    path("sessions/<str:session_id>/files/delete/", views.file_delete, name="file-delete"),
    path("api-keys/", views.api_keys, name="api-keys"),
    path("api-keys/<int:key_id>/revoke/", views.api_key_revoke, name="api-key-revoke"),
]
