"""One error shape for every API failure: {"error", "message", "detail", "request_id"}.

DRF's own exceptions, our domain errors and Django's 404/500 for /api/ paths all end up here, so a client
parses one format whatever went wrong. A 500 never carries internals.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from sandbox_site.host_paths import public_data, public_text
from sandbox_site.request_id import current_request_id

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """A domain error with an explicit HTTP status and machine code.

    `retry_after` (seconds) becomes a Retry-After header: a 429 or 503 that a later retry may get past.
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        detail: Any = None,
        *,
        retry_after: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message, code)
        self.status_code = status_code
        self.error_code = code
        self.message = message
        self.extra_detail = detail
        self.extra = extra
        self.retry_after = retry_after


_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "sync_timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "quota_exceeded",
    503: "runtime_unavailable",
}


def error_body(status_code: int, code: str, message: str, detail: Any = None, **extra: Any) -> dict[str, Any]:
    # Messages often carry runtime text (a sandbox that did not answer): no host paths in what clients see.
    return {
        "error": code,
        "message": public_text(message),
        "detail": public_data(detail),
        "request_id": current_request_id(),
        **extra,
    }


def _message_of(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    return "The request is not valid; see detail."


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, ApiError):
        body = error_body(exc.status_code, exc.error_code, exc.message, exc.extra_detail, **exc.extra)
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return Response(body, status=exc.status_code, headers=headers)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body(413, "too_large", "The request body is too large."), status=413)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
        return Response(
            error_body(
                500, "internal_error", "Something went wrong on our side; the request id identifies it."
            ),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    code = _CODES.get(response.status_code, "error")
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        message = "The request is not valid; see detail."
        if (
            isinstance(detail, dict)
            and list(detail) == ["non_field_errors"]
            and len(detail["non_field_errors"]) == 1
        ):
            message = str(detail["non_field_errors"][0])
    else:
        message = _message_of(detail.get("detail") if isinstance(detail, dict) else detail)
        detail = None
    if isinstance(exc, exceptions.Throttled):
        code = "rate_limited"
    response.data = error_body(response.status_code, code, message, detail)
    return response


def is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def json_error(request: HttpRequest, status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(status_code, code, message), status=status_code)
