"""Execution endpoints of /api/v1: execute (async and sync), read, output, cancel, list per session."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from executions_app.api.serializers import (
    ExecuteSerializer,
    ExecutionAcceptedSerializer,
    ExecutionSerializer,
    OutputChunkSerializer,
    OutputPageSerializer,
)
from executions_app.models import Execution, ExecutionStatus
from executions_app.services import (
    ExecutionError,
    execution_cancel,
    execution_run,
    execution_run_here,
    execution_start,
    execution_submit,
)
from sandbox_site.api.errors import ApiError
from sandbox_site.api.pagination import EnvelopePagination
from sandbox_site.api.schema import error_responses
from sandbox_site.api.viewsets import ApiViewSet
from sessions_app.models import SandboxSession

OUTPUT_PAGE = 500
EXECUTION_ERROR_STATUS = {"quota_exceeded": 429}
# Seconds beyond an execution's own timeout within which its result surely arrives (the client's read margin
# plus slack); a sync wait at least this long needs no separate thread.
INLINE_MARGIN = 15


def _submitted(request: Request, session_id: str, start: Callable[..., Execution]) -> Execution:
    """Validate an execute body and pass it to `start`: execution_start, or execution_submit (sync runs)."""
    session = SandboxSession.objects.get_visible(request.user, session_id)
    serializer = ExecuteSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    try:
        return start(session=session, **serializer.validated_data)
    except ExecutionError as exc:
        raise ApiError(EXECUTION_ERROR_STATUS.get(exc.code, 409), exc.code, exc.message) from None


def _run_in_thread(execution_id: str) -> None:
    try:
        execution_run(execution_id)
    finally:
        close_old_connections()


class SessionExecutionViewSet(ApiViewSet):
    """Executions of one session: execute (async and sync) and list. Served at /sessions/{id}/... and again
    at /executions/sessions/{id}/..., so the routes name the operations (sandbox_site/api/viewsets.py)."""

    pagination_class = EnvelopePagination

    @extend_schema(
        request=ExecuteSerializer,
        responses={201: ExecutionAcceptedSerializer, **error_responses(400, 401, 404, 409, 429)},
    )
    def execute(self, request: Request, session_id: str) -> Response:
        execution = _submitted(request, session_id, execution_start)
        body = {
            "execution_id": execution.id,
            "session_id": execution.session.client_id,
            "status": execution.status,
            "created_at": execution.created_at,
        }
        return Response(ExecutionAcceptedSerializer(body).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=ExecuteSerializer,
        parameters=[
            OpenApiParameter("sync_timeout", int, description="Seconds to wait (1-3600, default 300).")
        ],
        responses={200: ExecutionSerializer, **error_responses(400, 401, 404, 408, 409, 429)},
    )
    def execute_sync(self, request: Request, session_id: str) -> Response:
        raw = request.query_params.get("sync_timeout", "300")
        if not raw.isdigit() or not 1 <= int(raw) <= 3600:
            raise ApiError(
                400,
                "validation_error",
                "sync_timeout must be an integer from 1 to 3600",
                {"sync_timeout": ["out of range"]},
            )
        wait = int(raw)

        def submit(**fields: Any) -> Execution:
            # The executor ends the run by its own timeout well before this wait would: it runs right here,
            # so it is recorded already claimed. Otherwise its own thread claims it, and the wait can end
            # first. Not queued either way.
            inline = wait >= fields["timeout"] + INLINE_MARGIN
            return execution_submit(**fields, run_here=inline)

        execution = _submitted(request, session_id, submit)
        if execution.status == ExecutionStatus.RUNNING:
            finished = execution_run_here(execution)
            if finished.is_finished:
                return Response(ExecutionSerializer(finished).data)
        else:
            # The run gets its own thread so the wait can end first: the execution goes on and stays
            # retrievable under its id.
            runner = threading.Thread(
                target=_run_in_thread, args=(execution.id,), name=f"run-{execution.id}", daemon=True
            )
            runner.start()
            runner.join(timeout=int(raw))
        execution.refresh_from_db()
        if not execution.is_finished:
            raise ApiError(
                408,
                "sync_timeout",
                f"the execution did not finish within {raw} s; it goes on, fetch it by execution_id",
                execution_id=execution.id,
            )
        return Response(ExecutionSerializer(execution).data)

    @extend_schema(
        parameters=[OpenApiParameter("status", str)],
        responses={200: ExecutionSerializer(many=True), **error_responses(400, 401, 404)},
    )
    def list(self, request: Request, session_id: str) -> Response:
        session = SandboxSession.objects.get_visible(request.user, session_id)
        executions = (
            Execution.objects.filter(session=session).select_related("session").order_by("-created_at", "-id")
        )
        if request.query_params.get("status"):
            executions = executions.filter(status=request.query_params["status"])
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(executions, request, view=self)
        return paginator.get_paginated_response(ExecutionSerializer(page, many=True).data)


class ExecutionViewSet(ApiViewSet):
    """One execution: read (also at /status and /result, named by their routes), its output, cancel."""

    @extend_schema(responses={200: ExecutionSerializer, **error_responses(401, 404)})
    def retrieve(self, request: Request, execution_id: str) -> Response:
        return Response(ExecutionSerializer(Execution.objects.get_visible(request.user, execution_id)).data)

    @extend_schema(
        operation_id="executions_output",
        parameters=[OpenApiParameter("after", int, description="Return chunks with seq greater than this.")],
        responses={200: OutputPageSerializer, **error_responses(400, 401, 404)},
    )
    def output(self, request: Request, execution_id: str) -> Response:
        execution = Execution.objects.get_visible(request.user, execution_id)
        raw = request.query_params.get("after", "0")
        if not raw.isdigit() or int(raw) > 2**31:
            raise ApiError(
                400, "validation_error", "after must be a non-negative integer", {"after": ["invalid"]}
            )
        chunks = list(execution.chunks.filter(seq__gt=int(raw)).order_by("seq")[: OUTPUT_PAGE + 1])
        has_more = len(chunks) > OUTPUT_PAGE
        chunks = chunks[:OUTPUT_PAGE]
        body = {
            "execution_id": execution.id,
            "status": execution.status,
            "finished": execution.is_finished,
            "chunks": OutputChunkSerializer(chunks, many=True).data,
            "next_after": chunks[-1].seq if chunks else int(raw),
            "has_more": has_more,
        }
        return Response(body)

    @extend_schema(
        operation_id="executions_cancel",
        request=None,
        responses={200: ExecutionSerializer, **error_responses(401, 404)},
    )
    def cancel(self, request: Request, execution_id: str) -> Response:
        execution = execution_cancel(execution=Execution.objects.get_visible(request.user, execution_id))
        execution.refresh_from_db()
        return Response(ExecutionSerializer(execution).data)
