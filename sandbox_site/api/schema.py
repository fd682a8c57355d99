"""OpenAPI pieces shared by every app's API: the error body and the error responses of an operation."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

_DESCRIPTIONS = {
    400: "The request is not valid.",
    401: "No API key, or an unknown or revoked one.",
    403: "The caller may not do this.",
    404: "Not found (or owned by someone else).",
    408: "The synchronous wait ended first; the execution goes on.",
    409: "The resource is in the wrong state, or already exists.",
    413: "Too large.",
    415: "Unsupported content type.",
    429: "Over quota.",
    503: "The runtime or a dependency is unavailable.",
}


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="Machine-readable code, e.g. session_not_found.")
    message = serializers.CharField(help_text="A human sentence.")
    detail = serializers.JSONField(allow_null=True, help_text="Field errors, or null.")
    request_id = serializers.CharField()


class SyncTimeoutSerializer(ErrorSerializer):
    execution_id = serializers.CharField()


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    responses = {}
    for code in codes:
        serializer = SyncTimeoutSerializer if code == 408 else ErrorSerializer
        responses[code] = OpenApiResponse(serializer, description=_DESCRIPTIONS.get(code, "Error."))
    return responses
