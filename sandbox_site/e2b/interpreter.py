"""The code interpreter (`E2b-Sandbox-Port: 49999`): `POST /execute` answered with NDJSON events as they
happen, and the context calls.

A cell is one execution (recorded, visible in the API and console) of a small runner (cell_runner.py) that
evaluates the last expression as Jupyter does and carries state between cells of a context. Python only gets
results and carried-over state; JavaScript and bash cells run as plain scripts, each on its own.
"""

from __future__ import annotations

import json
import secrets
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from executions_app.models import Execution, ExecutionStatus
from executions_app.services import ExecutionError
from sandbox_site.e2b import live
from sandbox_site.e2b.envd import SandboxGone, gone_response, running_caller
from sandbox_site.e2b.errors import e2b_error
from sandbox_site.e2b.fs import run_shell
from sandbox_site.e2b.streaming import Relay, relayed
from sandbox_site.e2b.views import e2b_endpoint
from sessions_app.models import SandboxSession

CELL_SOURCE = (Path(__file__).parent / "cell_runner.py").read_text()
CELL_ENTRYPOINT = "__e2b_cell__"
LANGUAGES = {
    None: "python",
    "": "python",
    "python": "python",
    "python3": "python",
    "javascript": "javascript",
    "js": "javascript",
    "nodejs": "javascript",
    "bash": "shell",
    "sh": "shell",
    "shell": "shell",
}
MAX_CODE_BYTES = 1024 * 1024
CELL_TIMEOUT = 3600
WORKSPACE = "/workspace"
EXECUTION_ERROR_STATUS = {"quota_exceeded": 429, "session_not_running": 502}


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@e2b_endpoint(["POST"])
def execute(request: HttpRequest) -> HttpResponse:
    """`POST /execute {code, context_id?, language?, env_vars?}` -> NDJSON: stdout/stderr events as they come,
    then `result` (the last expression's value) or `error`, then `number_of_executions`."""
    try:
        caller = running_caller(request)
    except SandboxGone as exc:
        return gone_response(exc)
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return e2b_error(400, "the request body is not JSON")
    code, language = body.get("code"), body.get("language")
    context_id = body.get("context_id") or "default"
    env_vars = body.get("env_vars") or {}
    if (
        not isinstance(code, str)
        or len(code.encode("utf-8", "surrogatepass")) > MAX_CODE_BYTES
        or "\x00" in code
    ):
        return e2b_error(400, "code must be a string of at most 1 MiB without NUL characters")
    if language not in LANGUAGES:
        return e2b_error(400, f"language {language!r} is not supported here: use python, javascript or bash")
    context_language, _, context_name = str(context_id).partition(":")
    if context_name and language is None and context_language in LANGUAGES:
        language = context_language
    if not isinstance(env_vars, dict):
        return e2b_error(400, "env_vars must be an object of strings")
    ours = LANGUAGES[language]
    try:
        if ours == "python":
            event = {
                "code": code,
                "context": str(context_id),
                "env": {str(k): str(v) for k, v in env_vars.items()},
            }
            execution = live.submit(
                session=caller.session,
                language="python",
                code=CELL_SOURCE,
                event=event,
                entrypoint=CELL_ENTRYPOINT,
                timeout=CELL_TIMEOUT,
            )
        else:
            execution = live.submit(
                session=caller.session,
                language=ours,
                code=_with_env(ours, code, env_vars),
                timeout=CELL_TIMEOUT,
            )
    except ExecutionError as exc:
        if exc.code == "session_not_running":
            return gone_response(SandboxGone(caller.session.pk))
        return e2b_error(EXECUTION_ERROR_STATUS.get(exc.code, 409), exc.message, code=exc.code)

    def work(relay: Relay) -> None:
        def on_output(stream: str, text: str) -> None:
            relay.send(_line({"type": stream, "text": text, "timestamp": _now()}))

        finished = live.run(execution, relay, on_output)
        for line in _final_events(finished, python=ours == "python"):
            relay.send(line)

    response = StreamingHttpResponse(
        relayed(work, name=f"e2b-execute-{execution.id}"), content_type="application/x-ndjson"
    )
    response["Cache-Control"] = "no-store"
    return response


def _with_env(language: str, code: str, env_vars: dict[str, Any]) -> str:
    """A JavaScript or bash cell with the run's environment variables set first; a bash cell reads no input
    (its stdin would otherwise be the execution's event)."""
    if language == "shell":
        exports = "".join(
            f"export {k}={shlex.quote(str(v))}\n" for k, v in env_vars.items() if str(k).isidentifier()
        )
        return "exec </dev/null\n" + exports + code
    assignments = "".join(
        f"process.env[{json.dumps(str(k))}] = {json.dumps(str(v))};\n" for k, v in env_vars.items()
    )
    return assignments + code


def _final_events(execution: Execution, *, python: bool) -> list[bytes]:
    lines: list[bytes] = []
    outcome = execution.return_value if python and isinstance(execution.return_value, dict) else {}
    if outcome.get("result"):
        lines.append(_line({"type": "result", **outcome["result"]}))
    if outcome.get("error"):
        lines.append(_line({"type": "error", **outcome["error"]}))
    elif execution.status == ExecutionStatus.TIMEOUT:
        message = f"the execution ran past its {execution.timeout} s limit and was stopped"
        lines.append(_line({"type": "error", "name": "TimeoutError", "value": message, "traceback": message}))
    elif execution.status != ExecutionStatus.COMPLETED:
        name = {"crashed": "Crashed", "cancelled": "Cancelled"}.get(execution.status, "Error")
        value = execution.error_message or f"the execution ended {execution.status}"
        if not python and execution.exit_code not in (None, 0):
            name, value = "ExitCodeError", f"exited with code {execution.exit_code}"
        lines.append(
            _line({"type": "error", "name": name, "value": value, "traceback": execution.stderr or value})
        )
    count = outcome.get("count") or Execution.objects.filter(session_id=execution.session_id).count()
    lines.append(_line({"type": "number_of_executions", "execution_count": count}))
    return lines


# --- contexts ----------------------------------------------------------------------------------------------


def _context(context_id: str, language: str, cwd: str) -> dict[str, str]:
    return {"id": context_id, "language": language, "cwd": cwd}


@e2b_endpoint(["GET", "POST"])
def contexts(request: HttpRequest) -> HttpResponse:
    """`POST /contexts {language?, cwd?}` creates a context (its id names its saved state); `GET` lists the
    default one and those with saved state."""
    try:
        caller = running_caller(request)
    except SandboxGone as exc:
        return gone_response(exc)
    if request.method == "GET":
        return JsonResponse(_listed_contexts(caller.session), safe=False)
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return e2b_error(400, "the request body is not JSON")
    language = body.get("language") or "python"
    if language not in LANGUAGES:
        return e2b_error(400, f"language {language!r} is not supported here: use python, javascript or bash")
    cwd = body.get("cwd") or WORKSPACE
    if cwd not in (WORKSPACE, "/home/user"):
        return e2b_error(400, f"contexts run in {WORKSPACE}; another working directory is not supported")
    context_id = (
        f"{language}:{secrets.token_hex(8)}" if LANGUAGES[language] != "python" else secrets.token_hex(8)
    )
    return JsonResponse(_context(context_id, language, WORKSPACE))


def _listed_contexts(session: SandboxSession) -> list[dict[str, str]]:
    names = run_shell(session, 'ls /tmp/.e2b-contexts 2>/dev/null | sed -n "s/\\.pickle$//p"').split()
    found = ["default", *[n for n in names if n != "default"]]
    return [_context(name, "python", WORKSPACE) for name in found]


@e2b_endpoint(["DELETE", "POST"])
def context(request: HttpRequest, context_id: str, action: str = "") -> HttpResponse:
    """`DELETE /contexts/{id}` and `POST /contexts/{id}/restart`: both forget the context's saved state."""
    try:
        caller = running_caller(request)
    except SandboxGone as exc:
        return gone_response(exc)
    if request.method == "POST" and action != "restart":
        return e2b_error(404, f"no such context call {action!r}")
    safe = "".join(c for c in context_id if c.isalnum() or c in "-_") or "default"
    run_shell(caller.session, 'rm -f -- "/tmp/.e2b-contexts/$1.pickle"', safe)
    return HttpResponse(status=204) if request.method == "DELETE" else JsonResponse({})
