"""File endpoints of a session: list (recursive by default), upload (multipart, streamed), download
(attachment), delete.

A live session's files are its sandbox's; an ended session's are the copy saved to storage when it ended
(listing and downloads work, uploads and deletes answer 409). Both directions stream in chunks.
"""

from __future__ import annotations

import posixpath

from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpResponseRedirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from runtime import RuntimeFailure
from sandbox_site.api.errors import ApiError
from sandbox_site.api.schema import error_responses
from sandbox_site.api.viewsets import ApiViewSet
from sandbox_site.downloads import download_response
from sessions_app.api.views import session_error
from sessions_app.files import (
    DEFAULT_WALK_LIMIT,
    MAX_UPLOAD_BYTES,
    MAX_WALK_LIMIT,
    BadPath,
    files_delete,
    files_download,
    files_download_url,
    files_list,
    files_upload,
    files_walk,
)
from sessions_app.models import SandboxSession
from sessions_app.services import SessionError
from sessions_app.storage import StorageUnavailable

# Multipart framing adds a few hundred bytes; anything past this cannot be a file within the limit.
MULTIPART_OVERHEAD = 64 * 1024


class FileEntrySerializer(serializers.Serializer):
    name = serializers.CharField()
    path = serializers.CharField()
    container_path = serializers.CharField()
    size = serializers.IntegerField()
    modified_time = serializers.CharField(allow_null=True)
    is_dir = serializers.BooleanField()


class FileListSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    files = FileEntrySerializer(many=True)
    count = serializers.IntegerField(help_text="Entries in `files`.")
    truncated = serializers.BooleanField(help_text="More entries than `limit` were there.")


class FileListQuerySerializer(serializers.Serializer):
    """The listing's query: the original API's `path` and `limit`, and `recursive` (ours; default as there)."""

    path = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        help_text="Workspace-relative directory; the whole workspace when empty.",
    )
    recursive = serializers.BooleanField(
        required=False,
        default=True,
        help_text="true: every file below `path` at any depth, each `name` the path relative to the workspace"
        " (out/a.txt); false: the entries of `path` itself, directories included, `name` the entry's own.",
    )
    limit = serializers.IntegerField(
        required=False, default=DEFAULT_WALK_LIMIT, min_value=1, max_value=MAX_WALK_LIMIT
    )


class UploadResultSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    file_path = serializers.CharField()
    size = serializers.IntegerField()


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField()


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Spools to a temporary file (never memory) and stops once the file passes the size limit."""

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > MAX_UPLOAD_BYTES:
            raise StopUpload(connection_reset=True)
        return super().receive_data_chunk(raw_data, start)


def _fail(exc: Exception) -> ApiError:
    if isinstance(exc, BadPath):
        return ApiError(400, "invalid_path", str(exc))
    if isinstance(exc, FileNotFoundError):
        return ApiError(404, "file_not_found", "no such file in the workspace")
    if isinstance(exc, IsADirectoryError):
        return ApiError(400, "invalid_path", "that path is a directory")
    if isinstance(exc, NotADirectoryError):
        return ApiError(400, "invalid_path", "that path is a file, not a directory")
    if isinstance(exc, SessionError):
        if exc.code == "too_large":
            return ApiError(413, "too_large", exc.message)
        return session_error(exc)
    if isinstance(exc, RuntimeFailure):
        return ApiError(503, "runtime_unavailable", f"the sandbox did not answer: {exc.message}")
    if isinstance(exc, StorageUnavailable):
        return ApiError(503, "storage_unavailable", str(exc))
    raise exc


FILE_ERRORS = (
    BadPath,
    FileNotFoundError,
    SessionError,
    RuntimeFailure,
    IsADirectoryError,
    NotADirectoryError,
    StorageUnavailable,
)
PATH_PARAMETER = OpenApiParameter("path", str, description="Workspace-relative path.")


class SessionFileViewSet(ApiViewSet):
    """A session's workspace files: list, upload, download, delete."""

    # Only an upload has a body.
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="sessions_files_list",
        parameters=[FileListQuerySerializer],
        responses={200: FileListSerializer, **error_responses(400, 401, 404, 409, 503)},
    )
    def listing(self, request: Request, session_id: str) -> Response:
        """The workspace's files: every file below `path` by default, or one directory with recursive=false."""
        # A plain dict: from a QueryDict DRF would read a missing boolean as an unchecked checkbox (false).
        query = FileListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        path, recursive, limit = (query.validated_data[key] for key in ("path", "recursive", "limit"))
        session = SandboxSession.objects.get_visible(request.user, session_id)
        try:
            if recursive:
                files, truncated = files_walk(session=session, path=path, limit=limit)
            else:
                files = files_list(session=session, path=path)
                files, truncated = files[:limit], len(files) > limit
        except FILE_ERRORS as exc:
            raise _fail(exc) from None
        body = {"session_id": session.client_id, "files": files, "count": len(files), "truncated": truncated}
        return Response(body)

    @extend_schema(
        operation_id="sessions_files_upload",
        parameters=[PATH_PARAMETER],
        request={"multipart/form-data": UploadSerializer},
        responses={201: UploadResultSerializer, **error_responses(400, 401, 404, 409, 413, 415, 503)},
    )
    def upload(self, request: Request, session_id: str, path: str = "") -> Response:
        # `path` is the route's (the upload route also serves the file named "upload"); the target is ?path=.
        session = SandboxSession.objects.get_visible(request.user, session_id)
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD:
            raise ApiError(413, "too_large", f"files are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
        request._request.upload_handlers = [LimitedUploadHandler(request._request)]
        upload = request.FILES.get("file")
        if upload is None:
            if request.FILES or request.data is None:
                raise ApiError(413, "too_large", "the upload was stopped at the size limit")
            raise ApiError(
                400, "validation_error", "send the file as multipart field 'file'", {"file": ["required"]}
            )
        target = request.query_params.get("path", "")
        if not target or target.endswith("/"):
            target = posixpath.join(target, posixpath.basename(upload.name or "upload"))
        try:
            result = files_upload(session=session, path=target, fileobj=upload.file, size=upload.size or 0)
        except FILE_ERRORS as exc:
            raise _fail(exc) from None
        finally:
            upload.close()
        return Response({"session_id": session.client_id, **result}, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="sessions_files_download",
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            302: OpenApiResponse(
                description="A presigned storage URL (stored files over SANDBOX_PRESIGN_OVER)"
            ),
            **error_responses(400, 401, 404, 409, 503),
        },
    )
    def download(self, request: Request, session_id: str, path: str):
        session = SandboxSession.objects.get_visible(request.user, session_id)
        try:
            url = files_download_url(session=session, path=path)
            if url:
                return HttpResponseRedirect(url)
            chunks = files_download(session=session, path=path)
            first = next(chunks, b"")
        except FILE_ERRORS as exc:
            raise _fail(exc) from None

        return download_response(request, first, chunks, path)

    @extend_schema(
        operation_id="sessions_files_delete",
        responses={204: None, **error_responses(400, 401, 404, 409, 503)},
    )
    def destroy(self, request: Request, session_id: str, path: str) -> Response:
        session = SandboxSession.objects.get_visible(request.user, session_id)
        try:
            files_delete(session=session, path=path)
        except FILE_ERRORS as exc:
            raise _fail(exc) from None
        return Response(status=status.HTTP_204_NO_CONTENT)
