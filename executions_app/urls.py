"""Console routes of executions (the REST API's are in executions_app/api/urls.py)."""

from __future__ import annotations

from django.urls import path

from executions_app import views

app_name = "executions"

urlpatterns = [
    path("sessions/<str:session_id>/executions/", views.session_executions, name="session"),
    path("sessions/<str:session_id>/executions/run/", views.execution_create, name="create"),
    path("executions/", views.execution_list, name="list"),
    path("executions/<str:execution_id>/", views.execution_detail, name="detail"),
    path("executions/<str:execution_id>/result/", views.execution_result, name="result"),
    path("executions/<str:execution_id>/cancel/", views.execution_cancel_view, name="cancel"),
]
