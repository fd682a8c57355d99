"""Session endpoints of /api/v1 (DESIGN.md §6). Views parse, call one service, render."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from sandbox_site.api.errors import ApiError
from sandbox_site.api.pagination import EnvelopePagination
from sandbox_site.api.schema import error_responses
from sandbox_site.api.viewsets import ApiViewSet
from sessions_app.api.serializers import (
    DependencyInstallSerializer,
    SessionCreateSerializer,
    SessionSerializer,
)
from sessions_app.models import SandboxSession, SessionStatus
from sessions_app.services import (
    SessionError,
    session_delete,
    session_keepalive,
    session_open,
    session_request_dependencies,
    session_terminate,
)
from templates_app.models import SandboxTemplate

SESSION_ERROR_STATUS = {
    "duplicate_id": 409,
    "template_inactive": 409,
    "session_not_running": 409,
    "install_in_progress": 409,
    "restore_source_not_found": 404,
    "restore_source_live": 409,
    "quota_exceeded": 429,
    "capacity_exhausted": 503,
}


def session_error(exc: SessionError) -> ApiError:
    return ApiError(
        SESSION_ERROR_STATUS.get(exc.code, 400), exc.code, exc.message, retry_after=exc.retry_after
    )


class SessionViewSet(ApiViewSet):
    """Sessions: list, create (and wait), read, terminate, keep alive, install dependencies, delete."""

    pagination_class = EnvelopePagination

    @extend_schema(
        operation_id="sessions_list",
        parameters=[
            OpenApiParameter("status", str, enum=list(SessionStatus.values)),
            OpenApiParameter("template_id", str),
            OpenApiParameter(
                "metadata.<key>", str, description="Filter on a metadata value, e.g. metadata.team=blue"
            ),
        ],
        responses={200: SessionSerializer(many=True), **error_responses(400, 401)},
    )
    def list(self, request: Request) -> Response:
        status_filter = request.query_params.get("status", "")
        if status_filter and status_filter not in SessionStatus.values:
            raise ApiError(400, "validation_error", f"unknown status {status_filter!r}")
        sessions = (
            SandboxSession.objects.visible_to(request.user)
            .select_related("template")
            .matching(
                status=status_filter,
                template_id=request.query_params.get("template_id", ""),
                metadata=[
                    (name.removeprefix("metadata."), value)
                    for name, value in request.query_params.items()
                    if name.startswith("metadata.")
                ],
            )
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(sessions, request, view=self)
        return paginator.get_paginated_response(SessionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="sessions_create",
        request=SessionCreateSerializer,
        responses={201: SessionSerializer, **error_responses(400, 401, 404, 409, 429, 503)},
    )
    def create(self, request: Request) -> Response:
        serializer = SessionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        template = SandboxTemplate.objects.filter(pk=data["template_id"]).first()
        if template is None:
            raise ApiError(404, "template_not_found", f"no template {data['template_id']!r}")
        try:
            session = session_open(
                owner=request.user, template=template, **SessionCreateSerializer.service_arguments(data)
            )
        except SessionError as exc:
            raise session_error(exc) from None
        if session.status == SessionStatus.FAILED:
            raise ApiError(
                503,
                "runtime_unavailable",
                f"the sandbox could not be created: {session.status_detail}",
                session_id=session.client_id,
            )
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="sessions_retrieve", responses={200: SessionSerializer, **error_responses(401, 404)}
    )
    def retrieve(self, request: Request, session_id: str) -> Response:
        return Response(SessionSerializer(SandboxSession.objects.get_visible(request.user, session_id)).data)

    @extend_schema(operation_id="sessions_destroy", responses={204: None, **error_responses(401, 404)})
    def destroy(self, request: Request, session_id: str) -> Response:
        session_delete(session=SandboxSession.objects.get_visible(request.user, session_id))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="sessions_terminate",
        request=None,
        responses={200: SessionSerializer, **error_responses(401, 404)},
    )
    def terminate(self, request: Request, session_id: str) -> Response:
        session = session_terminate(
            session=SandboxSession.objects.get_visible(request.user, session_id), reason="user_request"
        )
        return Response(SessionSerializer(session).data)

    @extend_schema(
        operation_id="sessions_keepalive",
        request=None,
        responses={200: SessionSerializer, **error_responses(401, 404, 409)},
    )
    def keepalive(self, request: Request, session_id: str) -> Response:
        try:
            session = session_keepalive(session=SandboxSession.objects.get_visible(request.user, session_id))
        except SessionError as exc:
            raise session_error(exc) from None
        return Response(SessionSerializer(session).data)

    @extend_schema(
        operation_id="sessions_dependencies_install",
        request=DependencyInstallSerializer,
        responses={202: SessionSerializer, **error_responses(400, 401, 404, 409)},
    )
    def install_dependencies(self, request: Request, session_id: str) -> Response:
        session = SandboxSession.objects.get_visible(request.user, session_id)
        serializer = DependencyInstallSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            session = session_request_dependencies(
                session=session,
                dependencies=serializer.validated_data["dependencies"],
                index_url=serializer.validated_data.get("python_package_index_url"),
                ca_bundle=serializer.validated_data.get("python_package_ca_bundle"),
            )
        except SessionError as exc:
            raise session_error(exc) from None
        return Response(SessionSerializer(session).data, status=status.HTTP_202_ACCEPTED)
