"""The MCP tools: sessions, executions and files through the same services, serializers and visibility
rule as the REST API (/api/v1), so a tool call is accepted or refused exactly as the equivalent request.

Each tool is a thin async shell: the work runs in a thread (the ORM and the services are synchronous), for the
owner the transport names (`owner_of`, called in that thread), and a domain error becomes a tool error in the
API's error shape (errors.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import anyio
from channels.db import database_sync_to_async
from django.db import connection
from mcp.server.mcpserver import Context, MCPServer
from rest_framework.renderers import JSONRenderer

from executions_app.api.serializers import ExecuteSerializer, ExecutionSerializer
from executions_app.models import Execution, ExecutionOutputChunk
from executions_app.services import execution_cancel, execution_run_here, execution_submit
from sandbox_site.mcp_server.errors import DOMAIN_ERRORS, as_tool_error, tool_error, validated
from sessions_app.api.files import FileListQuerySerializer
from sessions_app.api.serializers import SessionCreateSerializer, SessionSerializer
from sessions_app.files import files_download, files_list, files_upload, files_walk
from sessions_app.models import SandboxSession, SessionStatus
from sessions_app.services import session_open, session_terminate
from templates_app.api.serializers import SandboxTemplateSerializer
from templates_app.models import SandboxTemplate

# Live output is stored in batches at most 0.1 s apart (executions_app/output.py); polling at that pace
# passes each batch on as soon as it is stored.
OUTPUT_POLL_SECONDS = 0.1
# A download travels inside one JSON-RPC answer (base64 for binary); bigger files go through the REST API.
MAX_DOWNLOAD_BYTES = 8 * 1024 * 1024

OwnerOf = Callable[[Context], Any]

INSTRUCTIONS = """Run untrusted Python, JavaScript or shell code in isolated sandboxes.
Start with list_templates, open a sandbox with create_session, run code with execute (a Python
`handler(event, context)` gets `event` and its return value comes back as return_value; code without a
handler runs as a script), move files with upload / download / list_files, and end with terminate."""


def _plain(data: Any) -> Any:
    """Serializer output as plain JSON types (dates as ISO strings, decimals as the API renders them)."""
    return json.loads(JSONRenderer().render(data))


# Tool calls block their thread for long (create_session waits for the sandbox, execute for the code): they get
# threads of their own, not the event loop's small default pool, which the API's front door also uses for its
# credential checks. Per-owner caps on sessions and running executions bound what one tenant can hold.
_TOOL_THREADS = ThreadPoolExecutor(max_workers=128, thread_name_prefix="mcp-tool")


def _releasing(function: Callable[..., Any], *args: Any) -> Any:
    try:
        return function(*args)
    finally:
        # An idle pool thread holds no database connection (as the execution stream pool's threads).
        connection.close()


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run a tool's synchronous ORM/service work in a tool thread; a domain error becomes a tool error."""
    try:
        return await database_sync_to_async(_releasing, thread_sensitive=False, executor=_TOOL_THREADS)(
            function, *args
        )
    except DOMAIN_ERRORS as exc:
        raise as_tool_error(exc) from None


def _templates(owner: Any) -> dict[str, Any]:
    templates = SandboxTemplate.objects.order_by("id")
    if not owner.is_staff:
        templates = templates.active()
    return {"templates": _plain(SandboxTemplateSerializer(templates, many=True).data)}


def _create_session(owner: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    data = validated(SessionCreateSerializer(data=arguments))
    template = SandboxTemplate.objects.filter(pk=data["template_id"]).first()
    if template is None:
        raise tool_error("template_not_found", f"no template {data['template_id']!r}")
    session = session_open(owner=owner, template=template, **SessionCreateSerializer.service_arguments(data))
    if session.status == SessionStatus.FAILED:
        raise tool_error("runtime_unavailable", f"the sandbox could not be created: {session.status_detail}")
    return _plain(SessionSerializer(session).data)


def _terminate(owner: Any, session_id: str) -> dict[str, Any]:
    session = session_terminate(
        session=SandboxSession.objects.get_visible(owner, session_id), reason="user_request"
    )
    return _plain(SessionSerializer(session).data)


def _submit(owner: Any, session_id: str, body: dict[str, Any]) -> Execution:
    session = SandboxSession.objects.get_visible(owner, session_id)
    # Recorded already claimed (running, this process's lease) and run right here, as execute-sync does.
    return execution_submit(session=session, **validated(ExecuteSerializer(data=body)), run_here=True)


def _output_after(execution_id: str, after: int) -> list[tuple[int, str, str]]:
    chunks = ExecutionOutputChunk.objects.filter(execution_id=execution_id, seq__gt=after).order_by("seq")
    return list(chunks.values_list("seq", "stream", "data"))


def _cancel(execution_id: str) -> None:
    execution_cancel(execution=Execution.objects.select_related("session").get(pk=execution_id))


async def _run_streaming(ctx: Context, execution: Execution) -> dict[str, Any]:
    """Run the claimed execution in a thread; pass its output on as progress notifications while it runs.

    Output is read back from the stored chunks (persisted first, as every live reader does), so what the
    client is sent is exactly what the execution's record holds. `report_progress` does nothing when the
    client asked for no progress. A call cancelled by the client cancels the execution in its sandbox.
    """
    runner = asyncio.ensure_future(_in_thread(execution_run_here, execution))
    after, delivered = 0, 0
    try:
        while True:
            done, _ = await asyncio.wait({runner}, timeout=OUTPUT_POLL_SECONDS)
            # A short read, polled: the shared pool and its threads' kept connections serve it.
            chunks = await database_sync_to_async(_output_after, thread_sensitive=False)(execution.id, after)
            for seq, stream, data in chunks:
                after = seq
                delivered += 1
                await ctx.report_progress(delivered, None, data if stream == "stdout" else f"[stderr] {data}")
            if done:
                break
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _in_thread(_cancel, execution.id)
            await asyncio.wait({runner})
        raise
    finished = runner.result()
    return _plain(ExecutionSerializer(finished).data)


def _list_files(owner: Any, session_id: str, query: dict[str, Any]) -> dict[str, Any]:
    """As GET /api/v1/sessions/{id}/files: every file below `path`, or one directory with recursive=false."""
    session = SandboxSession.objects.get_visible(owner, session_id)
    parsed = validated(FileListQuerySerializer(data=query))
    path, recursive, limit = parsed["path"], parsed["recursive"], parsed["limit"]
    if recursive:
        files, truncated = files_walk(session=session, path=path, limit=limit)
    else:
        files = files_list(session=session, path=path)
        files, truncated = files[:limit], len(files) > limit
    return {"session_id": session.client_id, "files": files, "count": len(files), "truncated": truncated}


def _upload(owner: Any, session_id: str, path: str, content: str, encoding: str) -> dict[str, Any]:
    session = SandboxSession.objects.get_visible(owner, session_id)
    if encoding == "base64":
        try:
            raw = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise tool_error(
                "validation_error", "content is not valid base64", {"content": ["invalid base64"]}
            ) from None
    else:
        raw = content.encode("utf-8", errors="surrogatepass")
    result = files_upload(session=session, path=path, fileobj=io.BytesIO(raw), size=len(raw))
    return {"session_id": session.client_id, **result}


def _download(owner: Any, session_id: str, path: str, encoding: str) -> dict[str, Any]:
    session = SandboxSession.objects.get_visible(owner, session_id)
    buffer = bytearray()
    for chunk in files_download(session=session, path=path):
        buffer += chunk
        if len(buffer) > MAX_DOWNLOAD_BYTES:
            raise tool_error(
                "too_large",
                f"downloads through MCP are limited to {MAX_DOWNLOAD_BYTES // (1024 * 1024)} MiB; "
                f"use GET /api/v1/sessions/{session.client_id}/files/{path}",
            )
    data = bytes(buffer)
    answer = {"session_id": session.client_id, "path": path, "size": len(data)}
    if encoding != "base64":
        try:
            return {**answer, "encoding": "text", "content": data.decode("utf-8")}
        except UnicodeDecodeError:
            if encoding == "text":
                raise tool_error(
                    "validation_error", "the file is not UTF-8 text; ask for encoding 'base64'"
                ) from None
    return {**answer, "encoding": "base64", "content": base64.b64encode(data).decode("ascii")}


def build_server(*, owner_of: OwnerOf) -> MCPServer:
    """The MCP server with every tool; `owner_of(ctx)` names the user a call acts for (the API key's owner),
    or raises a tool error. It is called in the call's worker thread, so it may query the database.

    stdio checks the key the process was started with on every call (a revoked key stops working at once, as
    over HTTP); HTTP reads the owner its front door authenticated for the request (http.py).
    """
    server: MCPServer = MCPServer("sandbox-control-plane", instructions=INSTRUCTIONS)

    async def for_owner(ctx: Context, function: Callable[..., Any], *args: Any) -> Any:
        return await _in_thread(lambda: function(owner_of(ctx), *args))

    @server.tool()
    async def list_templates(ctx: Context) -> dict[str, Any]:
        """The templates a session can be created from (id, language runtime, default resources)."""
        return await for_owner(ctx, _templates)

    @server.tool()
    async def create_session(
        ctx: Context,
        template_id: str,
        id: str | None = None,
        timeout: int | None = None,
        cpu: str | float | None = None,
        memory: str | int | None = None,
        disk: str | int | None = None,
        env_vars: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        dependencies: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Create a sandbox session from a template and wait until it runs (or report why it could not).

        `timeout` is the idle timeout in seconds; cpu ("0.5", "500m"), memory and disk ("512Mi", "1Gi")
        default to the template's; `dependencies` are Python packages [{"name", "version"?}] installed
        into the session. The answer is the session; use its `id` in the other tools.
        """
        given = {
            "template_id": template_id,
            "id": id,
            "timeout": timeout,
            "cpu": cpu,
            "memory": memory,
            "disk": disk,
            "env_vars": env_vars,
            "metadata": metadata,
            "dependencies": dependencies,
        }
        arguments = {name: value for name, value in given.items() if value is not None}
        return await for_owner(ctx, _create_session, arguments)

    @server.tool()
    async def execute(
        ctx: Context,
        session_id: str,
        code: str,
        language: Literal["python", "javascript", "shell"] = "python",
        event: dict[str, Any] | None = None,
        timeout: int = 30,
        entrypoint: str = "",
    ) -> dict[str, Any]:
        """Run code in a session and answer with its result: status, stdout, stderr, exit_code,
        return_value, error_message, metrics and changed files (artifacts).

        Code defining `handler(event, context)` (JavaScript: `exports.handler`) is called with `event` and
        its JSON return value comes back as `return_value`; other code runs as a script. Shell code gets
        the event on stdin. Output is streamed as progress notifications while the code runs (stderr lines
        prefixed "[stderr] ") when the client asks for progress. `timeout` is in seconds (1-3600).
        """
        body: dict[str, Any] = {"code": code, "language": language, "timeout": timeout}
        if event is not None:
            body["event"] = event
        if entrypoint:
            body["entrypoint"] = entrypoint
        execution = await for_owner(ctx, _submit, session_id, body)
        return await _run_streaming(ctx, execution)

    @server.tool()
    async def upload(
        ctx: Context,
        session_id: str,
        path: str,
        content: str,
        encoding: Literal["text", "base64"] = "text",
    ) -> dict[str, Any]:
        """Write a file into the session's workspace (`path` relative to /workspace; directories are
        created). `content` is UTF-8 text, or base64 for binary data with encoding "base64"."""
        return await for_owner(ctx, _upload, session_id, path, content, encoding)

    @server.tool()
    async def download(
        ctx: Context,
        session_id: str,
        path: str,
        encoding: Literal["auto", "text", "base64"] = "auto",
    ) -> dict[str, Any]:
        """Read a file of the session's workspace (also after the session ended: its saved copy).
        "auto" answers UTF-8 text as text and anything else as base64; `encoding` in the answer says which."""
        return await for_owner(ctx, _download, session_id, path, encoding)

    @server.tool()
    async def list_files(
        ctx: Context, session_id: str, path: str = "", recursive: bool = True, limit: int | None = None
    ) -> dict[str, Any]:
        """List the session's workspace files (also after the session ended: its saved copy).

        By default every file below `path` (relative to /workspace; empty for all) at any depth, each `name`
        the workspace-relative path (out/a.txt); with recursive=false the entries of `path` itself,
        directories included. At most `limit` entries (default 1000); `truncated` says the limit cut it.
        """
        query: dict[str, Any] = {"path": path, "recursive": recursive}
        if limit is not None:
            query["limit"] = limit
        return await for_owner(ctx, _list_files, session_id, query)

    @server.tool()
    async def terminate(ctx: Context, session_id: str) -> dict[str, Any]:
        """End a session and remove its sandbox (its files stay downloadable). Ending an ended session
        changes nothing."""
        return await for_owner(ctx, _terminate, session_id)

    return server
