"""envd's process service (Connect-RPC): `Start` streams a command's output live and ends with its exit
code; `List` and `SendSignal` (kill) act on the sandbox's running commands.

A command is a shell execution, recorded as every execution is. Its E2B pid is derived from the execution id
(stable, so `List` and `SendSignal` need no state of their own and work from any server process). What envd
offers and an execution cannot - input to a running command (`SendInput`, `StreamInput`, `CloseStdin`),
attaching to a running command (`Connect`), terminals (`Update`, PTY) - answers `unimplemented`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import shlex
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from executions_app.models import Execution, ExecutionStatus
from executions_app.services import ExecutionError, execution_cancel
from sandbox_site.e2b import connect as rpc
from sandbox_site.e2b import live
from sandbox_site.e2b.envd import SandboxGone, gone_response, running_caller
from sandbox_site.e2b.streaming import Relay, relayed
from sandbox_site.e2b.views import e2b_endpoint
from sessions_app.models import SandboxSession

WORKSPACE = "/workspace"
DEFAULT_TIMEOUT = 3600
KEEPALIVE = rpc.envelope({"event": {"keepalive": {}}})


def pid_of(execution_id: str) -> int:
    """A stable, positive 31-bit pid for an execution."""
    return int.from_bytes(hashlib.sha256(execution_id.encode()).digest()[:4], "big") % 2_000_000_000 + 1000


def command_script(config: dict[str, Any]) -> str:
    """The bash script for envd's ProcessConfig {cmd, args, envs, cwd}."""
    cmd = str(config.get("cmd") or "")
    args = [str(a) for a in config.get("args") or []]
    if os.path.basename(cmd) in ("bash", "sh") and "-c" in args and args.index("-c") + 1 < len(args):
        script = args[args.index("-c") + 1]
    else:
        script = shlex.join([cmd, *args]) if cmd else ""
    # E2B's commands get no input unless asked for it (which is not supported here): not our shell's event.
    lines = ["exec </dev/null"]
    envs = config.get("envs") or {}
    if isinstance(envs, dict):
        lines += [f"export {k}={shlex.quote(str(v))}" for k, v in envs.items() if str(k).isidentifier()]
    cwd = str(config.get("cwd") or "")
    if cwd.startswith("/home/user"):
        cwd = WORKSPACE + cwd[len("/home/user") :]
    if cwd and cwd != WORKSPACE:
        lines.append(f"cd {shlex.quote(cwd)} || exit 1")
    return "\n".join([*lines, script])


def _timeout(request: HttpRequest) -> int:
    raw = request.headers.get("Connect-Timeout-Ms", "")
    if raw.isdigit() and int(raw) > 0:
        return max(1, min(live.MAX_TIMEOUT, math.ceil(int(raw) / 1000)))
    return DEFAULT_TIMEOUT


def _stream_error(error: rpc.ConnectError) -> HttpResponse:
    return HttpResponse(rpc.end_of_stream(error), content_type=rpc.STREAM_CONTENT_TYPE)


@e2b_endpoint(["POST"])
def process(request: HttpRequest, method: str) -> HttpResponse:
    streaming = request.content_type == rpc.STREAM_CONTENT_TYPE
    try:
        caller = running_caller(request)
    except SandboxGone as exc:
        return gone_response(exc)
    try:
        if method == "Start":
            return _start(request, caller.session)
        if method == "List":
            return rpc.unary_response({"processes": _processes(caller.session)})
        if method == "SendSignal":
            return rpc.unary_response(_send_signal(caller.session, rpc.unary_request(request.body)))
        raise rpc.ConnectError(
            "unimplemented",
            f"process.Process/{method} is not supported here: commands take no input once started, "
            "and running commands cannot be attached to or given a terminal",
        )
    except rpc.ConnectError as exc:
        return _stream_error(exc) if streaming else rpc.unary_error(exc)


def _start(request: HttpRequest, session: SandboxSession) -> HttpResponse:
    message = rpc.stream_request(request.body)
    if message.get("pty"):
        raise rpc.ConnectError("unimplemented", "terminals (PTY) are not supported here")
    config = message.get("process") or {}
    if not isinstance(config, dict) or not config.get("cmd"):
        raise rpc.ConnectError("invalid_argument", "process.cmd is required")
    try:
        execution = live.submit(
            session=session, language="shell", code=command_script(config), timeout=_timeout(request)
        )
    except ExecutionError as exc:
        code = "resource_exhausted" if exc.code == "quota_exceeded" else "unavailable"
        raise rpc.ConnectError(code, exc.message) from None
    pid = pid_of(execution.id)

    def work(relay: Relay) -> None:
        relay.send(rpc.envelope({"event": {"start": {"pid": pid}}}))

        def on_output(stream: str, text: str) -> None:
            data = base64.b64encode(text.encode("utf-8", "surrogateescape")).decode()
            relay.send(rpc.envelope({"event": {"data": {stream: data}}}))

        finished = live.run(execution, relay, on_output)
        if finished.status == ExecutionStatus.TIMEOUT:
            relay.send(
                rpc.end_of_stream(
                    rpc.ConnectError(
                        "deadline_exceeded",
                        f"the command ran past its {finished.timeout} s limit and was stopped",
                    )
                )
            )
            return
        if finished.status in (ExecutionStatus.CANCELLED, ExecutionStatus.CRASHED):
            end = {
                "exitCode": -1,
                "exited": False,
                "status": "signal: killed",
                "error": finished.error_message or f"the command was {finished.status}",
            }
        else:
            code = finished.exit_code if finished.exit_code is not None else -1
            end = {"exitCode": code, "exited": True, "status": f"exit status {code}"}
        relay.send(rpc.envelope({"event": {"end": end}}))
        relay.send(rpc.end_of_stream())

    stream = relayed(work, name=f"e2b-process-{execution.id}", heartbeat=lambda: KEEPALIVE)
    return StreamingHttpResponse(stream, content_type=rpc.STREAM_CONTENT_TYPE)


def _running_commands(session: SandboxSession) -> list[Execution]:
    running = Execution.objects.filter(session=session, status=ExecutionStatus.RUNNING, language="shell")
    return list(running.select_related("session").order_by("created_at"))


def _processes(session: SandboxSession) -> list[dict[str, Any]]:
    return [
        {
            "pid": pid_of(e.id),
            "tag": e.id,
            "config": {"cmd": "/bin/bash", "args": ["-l", "-c", e.code], "envs": {}, "cwd": WORKSPACE},
        }
        for e in _running_commands(session)
    ]


def _send_signal(session: SandboxSession, message: dict[str, Any]) -> dict[str, Any]:
    selector = message.get("process") or {}
    pid, tag = selector.get("pid"), selector.get("tag")
    for execution in _running_commands(session):
        if (pid is not None and pid_of(execution.id) == int(pid)) or (tag and execution.id == tag):
            execution_cancel(execution=execution)
            return {}
    raise rpc.ConnectError("not_found", f"no running process {pid if pid is not None else tag!r}")
