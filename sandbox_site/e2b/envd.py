"""envd, the service E2B runs in every sandbox (`E2b-Sandbox-Port: 49983`): health, file transfer
(`/files`) and the Connect-RPC filesystem service, onto the session's file services.

A sandbox that is gone, never existed, or is not the caller's gets what E2B's proxy answers for a missing
sandbox: 502 "The sandbox ... was not found" (the SDK raises SandboxNotRunningException), the same whichever.
"""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Callable
from typing import IO, Any, cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.multipartparser import MultiPartParser, MultiPartParserError

from runtime import RuntimeFailure
from sandbox_site.e2b import connect as rpc
from sandbox_site.e2b import fs
from sandbox_site.e2b.auth import E2BAuthError, SandboxCaller, sandbox_caller
from sandbox_site.e2b.errors import e2b_error
from sandbox_site.e2b.paths import absolute, workspace_relative
from sandbox_site.e2b.streaming import Relay, relayed
from sandbox_site.e2b.views import e2b_endpoint
from sessions_app.files import BadPath, files_delete, files_download, files_upload
from sessions_app.models import SessionStatus
from sessions_app.services import SessionError

SPOOL_BYTES = 4 * 1024 * 1024


class SandboxGone(Exception):
    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"The sandbox {sandbox_id} was not found")


def running_caller(request: HttpRequest) -> SandboxCaller:
    """The authorised caller of a running sandbox, else SandboxGone (or E2BAuthError 400/401)."""
    sandbox_id = request.META.get("HTTP_E2B_SANDBOX_ID", "")
    try:
        caller = sandbox_caller(request.META)
    except E2BAuthError as exc:
        if exc.status == 404:
            raise SandboxGone(sandbox_id) from None
        raise
    if caller.session.status != SessionStatus.RUNNING:
        raise SandboxGone(sandbox_id)
    return caller


def gone_response(exc: SandboxGone) -> HttpResponse:
    return e2b_error(502, str(exc), code="sandbox_not_found")


@e2b_endpoint(["GET"])
def health(request: HttpRequest) -> HttpResponse:
    """204 while the named sandbox runs (502 once it is gone); 204 with no sandbox named (our liveness)."""
    if not request.META.get("HTTP_E2B_SANDBOX_ID"):
        return HttpResponse(status=204)
    try:
        running_caller(request)
    except SandboxGone as exc:
        return gone_response(exc)
    return HttpResponse(status=204)


@e2b_endpoint(["GET", "POST"])
def files(request: HttpRequest) -> HttpResponse:
    """`GET /files?path=` downloads; `POST /files` uploads (multipart `file` parts, or an octet-stream body
    with `?path=`) and answers `[{name, type, path}]`."""
    try:
        caller = running_caller(request)
        if request.method == "GET":
            return _download(caller, request.GET.get("path", ""))
        return _upload(caller, request)
    except SandboxGone as exc:
        return gone_response(exc)
    except FileNotFoundError:
        return e2b_error(404, f"path {request.GET.get('path', '')!r} not found")
    except SessionError:
        return gone_response(SandboxGone(request.META.get("HTTP_E2B_SANDBOX_ID", "")))
    except RuntimeFailure as exc:
        return e2b_error(503, exc.message)


def _download(caller: SandboxCaller, path: str) -> HttpResponse:
    relative = workspace_relative(path, allow_root=False)
    chunks = files_download(session=caller.session, path=relative)
    first = next(chunks, b"")  # a missing file raises here, before the answer starts

    def work(relay: Relay) -> None:
        relay.send(first)
        for chunk in chunks:
            if relay.cancelled.is_set():
                break
            relay.send(chunk)

    # Relayed rather than handed to Django as an iterator: under ASGI Django reads a plain iterator to its end
    # before sending anything, which would hold a whole file (up to 100 MiB) in memory.
    response = StreamingHttpResponse(
        relayed(work, name="e2b-download", bounded=True), content_type="application/octet-stream"
    )
    response["Content-Disposition"] = f'attachment; filename="{relative.rsplit("/", 1)[-1]}"'
    return response


class _PathKeepingParser(MultiPartParser):
    """Django keeps only the base name of an uploaded file's name; envd's multipart names are paths (checked
    by `workspace_relative` like every other path)."""

    def sanitize_file_name(self, file_name: str) -> str | None:
        return file_name.replace("\x00", "") or None


def _upload(caller: SandboxCaller, request: HttpRequest) -> HttpResponse:
    content_type = request.META.get("CONTENT_TYPE", "")
    written: list[dict[str, Any]] = []
    if content_type.startswith("multipart/form-data"):
        try:
            parser = _PathKeepingParser(request.META, request, request.upload_handlers, request.encoding)
            _, uploads = parser.parse()
        except MultiPartParserError as exc:
            return e2b_error(400, f"the multipart body cannot be read: {exc}")
        parts = uploads.getlist("file")
        if not parts:
            return e2b_error(400, "no `file` part in the multipart body")
        single_path = request.GET.get("path") if len(parts) == 1 else None
        for part in parts:
            target = workspace_relative(single_path or part.name or "", allow_root=False)
            written.append(_store(caller, target, part, part.size))
    else:
        path = request.GET.get("path", "")
        if not path:
            return e2b_error(400, "the path parameter is required for an octet-stream upload")
        target = workspace_relative(path, allow_root=False)
        body: IO[bytes] = request  # type: ignore[assignment]
        if request.META.get("HTTP_CONTENT_ENCODING", "").lower() == "gzip":
            body = cast(IO[bytes], gzip.GzipFile(fileobj=request, mode="rb"))  # type: ignore[arg-type]
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            limit = settings.SANDBOX_MAX_UPLOAD_REQUEST_BYTES
            try:
                # Counted as it is written: a small gzip body may inflate past the limit.
                while chunk := body.read(64 * 1024):
                    spool.write(chunk)
                    if spool.tell() > limit:
                        return e2b_error(413, f"files are limited to {limit} bytes")
            except (OSError, EOFError) as exc:
                return e2b_error(400, f"the body cannot be read: {exc}")
            size = spool.tell()
            spool.seek(0)
            written.append(_store(caller, target, spool, size))
    return JsonResponse(written, safe=False)


def _store(caller: SandboxCaller, target: str, fileobj: IO[bytes], size: int) -> dict[str, Any]:
    result = files_upload(session=caller.session, path=target, fileobj=fileobj, size=size)
    stored = str(result.get("file_path", target))
    return {"name": stored.rsplit("/", 1)[-1], "type": "file", "path": absolute(stored)}


# --- filesystem.Filesystem (Connect, unary) --------------------------------------------------------------


def _path(message: dict[str, Any], name: str = "path") -> str:
    value = message.get(name, "")
    if not isinstance(value, str):
        raise rpc.ConnectError("invalid_argument", f"{name} must be a string")
    try:
        return workspace_relative(value)
    except BadPath as exc:
        raise rpc.ConnectError("invalid_argument", str(exc)) from None


def _stat(caller: SandboxCaller, message: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"entry": fs.stat(caller.session, _path(message))}
    except FileNotFoundError:
        raise rpc.ConnectError("not_found", f"path {message.get('path')!r} not found") from None


def _list_dir(caller: SandboxCaller, message: dict[str, Any]) -> dict[str, Any]:
    depth = message.get("depth") or 1
    if not isinstance(depth, int) or depth < 1:
        raise rpc.ConnectError("invalid_argument", "depth must be a positive integer")
    try:
        return {"entries": fs.list_dir(caller.session, _path(message), min(depth, 16))}
    except FileNotFoundError:
        raise rpc.ConnectError("not_found", f"directory {message.get('path')!r} not found") from None
    except NotADirectoryError:
        raise rpc.ConnectError("invalid_argument", f"{message.get('path')!r} is not a directory") from None


def _make_dir(caller: SandboxCaller, message: dict[str, Any]) -> dict[str, Any]:
    relative = _path(message)
    try:
        fs.make_dir(caller.session, relative)
    except FileExistsError:
        raise rpc.ConnectError("already_exists", f"{message.get('path')!r} already exists") from None
    return {"entry": fs.stat(caller.session, relative)}


def _move(caller: SandboxCaller, message: dict[str, Any]) -> dict[str, Any]:
    source, destination = _path(message, "source"), _path(message, "destination")
    if not source or not destination:
        raise rpc.ConnectError("invalid_argument", "the workspace itself cannot be moved")
    try:
        fs.move(caller.session, source, destination)
    except FileNotFoundError:
        raise rpc.ConnectError("not_found", f"path {message.get('source')!r} not found") from None
    return {"entry": fs.stat(caller.session, destination)}


def _remove(caller: SandboxCaller, message: dict[str, Any]) -> dict[str, Any]:
    relative = _path(message)
    if not relative:
        raise rpc.ConnectError("invalid_argument", "the workspace itself cannot be removed")
    try:
        files_delete(session=caller.session, path=relative)
    except FileNotFoundError:
        raise rpc.ConnectError("not_found", f"path {message.get('path')!r} not found") from None
    return {}


FILESYSTEM_METHODS: dict[str, Callable[[SandboxCaller, dict[str, Any]], dict[str, Any]]] = {
    "Stat": _stat,
    "ListDir": _list_dir,
    "MakeDir": _make_dir,
    "Move": _move,
    "Remove": _remove,
}


@e2b_endpoint(["POST"])
def filesystem(request: HttpRequest, method: str) -> HttpResponse:
    """`POST /filesystem.Filesystem/<Method>`: the unary methods; watching is not supported."""
    try:
        caller = running_caller(request)
        call = FILESYSTEM_METHODS.get(method)
        if call is None:
            raise rpc.ConnectError(
                "unimplemented", f"filesystem.Filesystem/{method} (directory watching) is not supported here"
            )
        return rpc.unary_response(call(caller, rpc.unary_request(request.body)))
    except SandboxGone as exc:
        return gone_response(exc)
    except rpc.ConnectError as exc:
        return rpc.unary_error(exc)
    except BadPath as exc:
        return rpc.unary_error(rpc.ConnectError("invalid_argument", str(exc)))
    except SessionError as exc:
        return rpc.unary_error(rpc.ConnectError("unavailable", exc.message))
    except (RuntimeFailure, fs.ShellFailed) as exc:
        return rpc.unary_error(rpc.ConnectError("internal", str(exc)))
