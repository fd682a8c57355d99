"""Routes of the execution endpoints, each mapping its methods to a viewset action.

Execute and the execution list are served at /sessions/{id}/... and again at /executions/sessions/{id}/...,
and an execution is read at three paths: those routes name their OpenAPI operations (`operation_ids`, see
sandbox_site/api/viewsets.py), one id per path.
"""

from __future__ import annotations

from executions_app.api.views import ExecutionViewSet, SessionExecutionViewSet
from sandbox_site.api.routes import api_path

execute = SessionExecutionViewSet.as_view({"post": "execute"}, operation_ids={"post": "executions_create"})
execute_sync = SessionExecutionViewSet.as_view(
    {"post": "execute_sync"}, operation_ids={"post": "executions_create_sync"}
)
executions = SessionExecutionViewSet.as_view(
    {"get": "list"}, operation_ids={"get": "sessions_executions_list"}
)

urlpatterns = [
    api_path("sessions/<str:session_id>/execute", execute, name="session-execute"),
    api_path("sessions/<str:session_id>/execute-sync", execute_sync, name="session-execute-sync"),
    api_path("sessions/<str:session_id>/executions", executions, name="session-executions"),
    api_path(
        "executions/sessions/<str:session_id>/execute",
        SessionExecutionViewSet.as_view(
            {"post": "execute"}, operation_ids={"post": "executions_sessions_execute"}
        ),
    ),
    api_path(
        "executions/sessions/<str:session_id>/execute-sync",
        SessionExecutionViewSet.as_view(
            {"post": "execute_sync"}, operation_ids={"post": "executions_sessions_execute_sync"}
        ),
    ),
    api_path(
        "executions/sessions/<str:session_id>/executions",
        SessionExecutionViewSet.as_view(
            {"get": "list"}, operation_ids={"get": "executions_sessions_executions_list"}
        ),
    ),
    api_path(
        "executions/<str:execution_id>",
        ExecutionViewSet.as_view({"get": "retrieve"}, operation_ids={"get": "executions_retrieve"}),
        name="execution-detail",
    ),
    api_path(
        "executions/<str:execution_id>/status",
        ExecutionViewSet.as_view({"get": "retrieve"}, operation_ids={"get": "executions_status"}),
        name="execution-status",
    ),
    api_path(
        "executions/<str:execution_id>/result",
        ExecutionViewSet.as_view({"get": "retrieve"}, operation_ids={"get": "executions_result"}),
        name="execution-result",
    ),
    api_path(
        "executions/<str:execution_id>/output",
        ExecutionViewSet.as_view({"get": "output"}),
        name="execution-output",
    ),
    api_path(
        "executions/<str:execution_id>/cancel",
        ExecutionViewSet.as_view({"post": "cancel"}),
        name="execution-cancel",
    ),
]
