from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_view

from executions_app.api import views


# The second path family (/executions/sessions/...) serves the same views; distinct classes give each
# operation its own id in the OpenAPI schema.
@extend_schema_view(post=extend_schema(operation_id="executions_sessions_execute"))
class ExecuteAltView(views.ExecuteView):
    pass


@extend_schema_view(post=extend_schema(operation_id="executions_sessions_execute_sync"))
class ExecuteSyncAltView(views.ExecuteSyncView):
    pass


@extend_schema_view(get=extend_schema(operation_id="executions_sessions_executions_list"))
class SessionExecutionsAltView(views.SessionExecutionsView):
    pass


urlpatterns = [
    path("sessions/<str:session_id>/execute", views.ExecuteView.as_view(), name="session-execute"),
    path(
        "sessions/<str:session_id>/execute-sync", views.ExecuteSyncView.as_view(), name="session-execute-sync"
    ),
    path(
        "sessions/<str:session_id>/executions",
        views.SessionExecutionsView.as_view(),
        name="session-executions",
    ),
    path("executions/sessions/<str:session_id>/execute", ExecuteAltView.as_view()),
    path("executions/sessions/<str:session_id>/execute-sync", ExecuteSyncAltView.as_view()),
    path("executions/sessions/<str:session_id>/executions", SessionExecutionsAltView.as_view()),
    path("executions/<str:execution_id>", views.ExecutionDetailView.as_view(), name="execution-detail"),
    path(
        "executions/<str:execution_id>/status", views.ExecutionStatusView.as_view(), name="execution-status"
    ),
    path(
        "executions/<str:execution_id>/result", views.ExecutionResultView.as_view(), name="execution-result"
    ),
    path(
        "executions/<str:execution_id>/output", views.ExecutionOutputView.as_view(), name="execution-output"
    ),
    path(
        "executions/<str:execution_id>/cancel", views.ExecutionCancelView.as_view(), name="execution-cancel"
    ),
]
