"""E2B-shaped error answers: E2B's `{code, message}` with our `error`, `detail` and `request_id` beside it.

The SDK reads `code` (an int, the HTTP status) and `message`; our own clients read `error` and `request_id`
as everywhere else in the product. Connect-RPC answers (envd) carry a string `code` instead: see connect.py.
"""

from __future__ import annotations

from typing import Any

# DRF's views before our errors module: errors imports them, and their parser setting imports errors back.
import rest_framework.views  # noqa: F401
from django.http import JsonResponse

from sandbox_site.api.errors import error_body

MACHINE_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    429: "quota_exceeded",
    501: "not_supported",
    503: "unavailable",
}


def e2b_error(status: int, message: str, *, code: str = "", detail: Any = None) -> JsonResponse:
    body = error_body(status, code or MACHINE_CODES.get(status, "error"), message, detail)
    body["code"] = status
    return JsonResponse(body, status=status)
