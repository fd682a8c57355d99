"""Structured logs: `LOG_FORMAT=json` writes one JSON object per line, with the ids an operator searches by.

Every record gets the request id (sandbox_site/request_id.py) and whatever ids the code running it has bound
with `log_context` (session, execution, owner), so a worker's line about an execution carries that
execution's id without each call spelling it out; `extra={...}` adds or overrides fields on one line. Web
requests end with one `sandbox.request` line (method, path, status, duration, owner, and the session and
execution ids the request touched), written by `RequestLogMiddleware`, which settings install only for JSON
logs: in plain text uvicorn's access log already says as much.

Nothing here imports Django at module level: uvicorn loads `JsonFormatter` from its log configuration before
Django is set up.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# The ids bound for the code running now (a request, a task, an execution run).
_bound: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context", default={})  # noqa: B039 - never mutated
# The current request's own record of ids bound below it, for its closing line (None outside requests).
_request_ids: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "request_log_ids", default=None
)

CONTEXT_FIELDS = ("session_id", "execution_id", "owner")
# LogRecord's own attributes: anything else on a record came from `extra` and is written out.
# (uvicorn adds `color_message`, its message with terminal colours.)
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
}


class log_context:  # noqa: N801 - used as a function: `with log_context(session_id=...):`
    """Bind ids (session_id, execution_id, owner) to every log record written inside the block.

    A class rather than a generator-based context manager: it runs on every execution, and this is half the
    cost."""

    __slots__ = ("_token", "_values")

    def __init__(self, **ids: Any) -> None:
        self._values = {name: str(value) for name, value in ids.items() if value is not None and value != ""}

    def __enter__(self) -> None:
        self._token = _bound.set({**_bound.get(), **self._values})
        request_ids = _request_ids.get()
        if request_ids is not None:
            request_ids.update(self._values)

    def __exit__(self, *exc_info: object) -> None:
        _bound.reset(self._token)


def bound_ids() -> dict[str, str]:
    return _bound.get()


class LogContextFilter(logging.Filter):
    """Puts the bound ids on each record, as `RequestIdLogFilter` does the request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _bound.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the ids, extra fields, and
    the traceback of an exception as one string."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            entry["request_id"] = request_id
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


request_logger = logging.getLogger("sandbox.request")


class RequestLogMiddleware:
    """One `sandbox.request` line per request: method, path, status, duration_ms, owner (the user's id and
    name, once authenticated), the session and execution ids the request bound, and otherwise the session id
    its URL names (`client_session_id`)."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        started = time.perf_counter()
        ids: dict[str, str] = {}
        token = _request_ids.set(ids)
        try:
            response = self.get_response(request)
        finally:
            _request_ids.reset(token)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        fields: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": duration_ms,
        }
        match = getattr(request, "resolver_match", None)
        if match is not None and "session_id" in match.kwargs and "session_id" not in ids:
            # The id as the URL names it (the owner's choice, when they chose one), not the internal id.
            fields["client_session_id"] = match.kwargs["session_id"]
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            fields["owner"] = str(user.pk)
            fields["user"] = user.get_username()
        fields.update(ids)
        request_logger.info(
            "%s %s %s %.1f ms", request.method, request.path, response.status_code, duration_ms, extra=fields
        )
        return response


def uvicorn_log_config(path: Any) -> str:
    """Write a uvicorn `--log-config` that makes its own lines (start-up, shutdown, errors) JSON too, and
    return its path. Its access log is switched off in JSON mode: `RequestLogMiddleware` writes that line."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "sandbox_site.log_format.JsonFormatter"}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }
    with open(path, "w") as sink:
        json.dump(config, sink)
    return str(path)
