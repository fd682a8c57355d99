"""Session endpoints of /api/v1 (DESIGN.md §6). Views parse, call one service, render."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models.fields.json import KeyTransform
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from sandbox_site.api.errors import ApiError
from sandbox_site.api.pagination import EnvelopePagination
from sandbox_site.api.schema import error_responses
from sessions_app.api.serializers import (
    DependencyInstallSerializer,
    SessionCreateSerializer,
    SessionSerializer,
)
from sessions_app.models import SandboxSession, SessionStatus
from sessions_app.services import (
    SessionError,
    session_create,
    session_delete,
    session_keepalive,
    session_request_dependencies,
    session_start,
    session_terminate,
    session_wait_started,
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


def owned_session(request: Request, session_id: str, *, lock: bool = False) -> SandboxSession:
    """The session if the caller may see it; another owner's id is a 404 exactly like a missing one.

    Ids are per owner (`SandboxSessionQuerySet.identified`): "build-1" is the caller's own "build-1".
    """
    session = SandboxSession.objects.select_related("template").identified(request.user, session_id)
    if session is None:
        raise ApiError(404, "session_not_found", f"no session {session_id!r}")
    return session


class SessionListCreateView(APIView):
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
    def get(self, request: Request) -> Response:
        sessions = SandboxSession.objects.for_owner(request.user).select_related("template")
        status_filter = request.query_params.get("status")
        if status_filter:
            if status_filter not in SessionStatus.values:
                raise ApiError(400, "validation_error", f"unknown status {status_filter!r}")
            sessions = sessions.filter(status=status_filter)
        if request.query_params.get("template_id"):
            sessions = sessions.filter(template_id=request.query_params["template_id"])
        metadata_filters = [
            (n.removeprefix("metadata."), v)
            for n, v in request.query_params.items()
            if n.startswith("metadata.")
        ]
        for index, (key, value) in enumerate(metadata_filters):
            # KeyTransform takes the key literally: a "__" or a lookup name inside it is not parsed.
            alias = f"metadata_filter_{index}"
            sessions = sessions.alias(**{alias: KeyTransform(key, "metadata")}).filter(**{alias: value})
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(sessions, request, view=self)
        return paginator.get_paginated_response(SessionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="sessions_create",
        request=SessionCreateSerializer,
        responses={201: SessionSerializer, **error_responses(400, 401, 404, 409, 429, 503)},
    )
    def post(self, request: Request) -> Response:
        serializer = SessionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        template = SandboxTemplate.objects.filter(pk=data["template_id"]).first()
        if template is None:
            raise ApiError(404, "template_not_found", f"no template {data['template_id']!r}")
        try:
            with transaction.atomic():
                session = session_create(
                    owner=request.user, template=template, **SessionCreateSerializer.service_arguments(data)
                )
        except SessionError as exc:
            raise session_error(exc) from None
        session = session_start(session=session)
        # Agents expect a usable session back, as from E2B or Lambda: wait (bounded) for the worker that
        # builds it. A session still `creating` after the wait is returned as such; poll it.
        session = session_wait_started(session=session, timeout=settings.SANDBOX_CREATE_WAIT)
        if session.status == SessionStatus.FAILED:
            raise ApiError(
                503,
                "runtime_unavailable",
                f"the sandbox could not be created: {session.status_detail}",
                session_id=session.client_id,
            )
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class SessionDetailView(APIView):
    @extend_schema(
        operation_id="sessions_retrieve", responses={200: SessionSerializer, **error_responses(401, 404)}
    )
    def get(self, request: Request, session_id: str) -> Response:
        return Response(SessionSerializer(owned_session(request, session_id)).data)

    @extend_schema(operation_id="sessions_destroy", responses={204: None, **error_responses(401, 404)})
    def delete(self, request: Request, session_id: str) -> Response:
        session_delete(session=owned_session(request, session_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionTerminateView(APIView):
    @extend_schema(
        operation_id="sessions_terminate",
        request=None,
        responses={200: SessionSerializer, **error_responses(401, 404)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = session_terminate(session=owned_session(request, session_id), reason="user_request")
        return Response(SessionSerializer(session).data)


class SessionKeepaliveView(APIView):
    @extend_schema(
        operation_id="sessions_keepalive",
        request=None,
        responses={200: SessionSerializer, **error_responses(401, 404, 409)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        try:
            session = session_keepalive(session=owned_session(request, session_id))
        except SessionError as exc:
            raise session_error(exc) from None
        return Response(SessionSerializer(session).data)


class SessionDependenciesView(APIView):
    @extend_schema(
        operation_id="sessions_dependencies_install",
        request=DependencyInstallSerializer,
        responses={202: SessionSerializer, **error_responses(400, 401, 404, 409)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = owned_session(request, session_id)
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
