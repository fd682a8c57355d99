"""The Connect-RPC wire format envd speaks, JSON codec only (the SDK's `useBinaryFormat: false`).

Unary calls: `POST /<service>/<Method>`, `Content-Type: application/json`, the request message as the body,
the response message as the body; an error is an HTTP error status with `{"code": "<connect code>",
"message": ...}`. Server streams: `Content-Type: application/connect+json`, request and response messages
each in an envelope (1 flag byte, 4-byte big-endian length, the JSON); the answer is always HTTP 200 and ends
with an end-of-stream envelope (flag 0x02) holding `{}` or `{"error": {...}}`.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from django.http import HttpResponse

STREAM_CONTENT_TYPE = "application/connect+json"
END_STREAM = 0x02
COMPRESSED = 0x01

# Connect's codes and the HTTP statuses of unary errors (connectrpc.com/docs/protocol#error-codes).
HTTP_STATUS = {
    "canceled": 499,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "unauthenticated": 401,
}
# Our HTTP-ish failures onto Connect codes.
CODE_OF_STATUS = {
    400: "invalid_argument",
    401: "unauthenticated",
    404: "not_found",
    409: "already_exists",
    413: "resource_exhausted",
    429: "resource_exhausted",
    501: "unimplemented",
    503: "unavailable",
}


class ConnectError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def unary_request(body: bytes) -> dict[str, Any]:
    """The JSON request message of a unary call; ConnectError when it is not a JSON object."""
    try:
        message = json.loads(body or b"{}")
    except ValueError:
        raise ConnectError("invalid_argument", "the request body is not JSON") from None
    if not isinstance(message, dict):
        raise ConnectError("invalid_argument", "the request message must be a JSON object")
    return message


def stream_request(body: bytes) -> dict[str, Any]:
    """The (single) enveloped request message of a server-streaming call."""
    if len(body) < 5:
        raise ConnectError("invalid_argument", "the request is not an enveloped Connect message")
    flags, length = struct.unpack(">BI", body[:5])
    if flags & COMPRESSED:
        raise ConnectError("unimplemented", "compressed messages are not supported")
    return unary_request(body[5 : 5 + length])


def envelope(message: dict[str, Any], flags: int = 0) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(data)) + data


def end_of_stream(error: ConnectError | None = None) -> bytes:
    if error is None:
        return envelope({}, END_STREAM)
    return envelope({"error": {"code": error.code, "message": error.message}}, END_STREAM)


def unary_response(message: dict[str, Any]) -> HttpResponse:
    return HttpResponse(json.dumps(message, separators=(",", ":")), content_type="application/json")


def unary_error(error: ConnectError) -> HttpResponse:
    body = json.dumps({"code": error.code, "message": error.message})
    return HttpResponse(body, status=HTTP_STATUS.get(error.code, 500), content_type="application/json")


def code_for_status(status: int) -> str:
    return CODE_OF_STATUS.get(status, "internal")
