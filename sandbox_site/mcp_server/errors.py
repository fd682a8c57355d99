"""Tool errors in the API's error shape: a failed tool call answers `isError` with a JSON text
`{"error", "message", "detail"}`, the body the REST API would have answered with, never a protocol crash."""

from __future__ import annotations

import json
from typing import Any

# DRF's views before our errors module: errors imports them, and their parser setting imports errors back.
import rest_framework.views  # noqa: F401
from mcp.server.mcpserver.exceptions import ToolError
from rest_framework import serializers

from executions_app.services import ExecutionError
from sandbox_site.api.errors import ApiError
from sandbox_site.host_paths import public_data, public_text
from sessions_app.api.files import FILE_ERRORS
from sessions_app.api.files import _fail as file_api_error
from sessions_app.api.views import session_error
from sessions_app.models import NotVisible
from sessions_app.services import SessionError


def tool_error(code: str, message: str, detail: Any = None) -> ToolError:
    body = {"error": code, "message": public_text(message), "detail": public_data(detail)}
    return ToolError(json.dumps(body, ensure_ascii=False))


def validated(serializer: serializers.Serializer) -> dict[str, Any]:
    """The serializer's validated data, or the API's 400 as a tool error."""
    if not serializer.is_valid():
        raise tool_error("validation_error", "The request is not valid; see detail.", serializer.errors)
    return dict(serializer.validated_data)


def as_tool_error(exc: Exception) -> ToolError:
    """The tool error for a domain error the REST API answers 4xx/503; other exceptions are re-raised."""
    if isinstance(exc, ApiError):
        return tool_error(exc.error_code, exc.message, exc.extra_detail)
    if isinstance(exc, NotVisible):
        return tool_error(exc.code, exc.message)
    if isinstance(exc, SessionError):
        api_error = session_error(exc)
        return tool_error(api_error.error_code, api_error.message)
    if isinstance(exc, ExecutionError):
        return tool_error(exc.code, exc.message)
    if isinstance(exc, FILE_ERRORS):
        api_error = file_api_error(exc)
        return tool_error(api_error.error_code, api_error.message)
    raise exc


# What a tool call may fail with and still be the caller's (or the sandbox's) problem rather than ours.
DOMAIN_ERRORS: tuple[type[Exception], ...] = (
    ApiError,
    NotVisible,
    SessionError,
    ExecutionError,
    *FILE_ERRORS,
)
