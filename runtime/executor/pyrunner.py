"""Runs Python code in an execution's process: a Lambda-style handler if the code defines one, else a script.

The code runs as module `__main__` from the pseudo-file "<handler>" (registered with linecache so tracebacks
show its lines). The return value goes to fd 3 as JSON, never through stdout, so a handler that prints JSON
cannot forge its result. This module is imported by the zygote before any execution, so a forked child pays
no import cost; it must not import anything lazily from its own package (see _forget_executor_modules).
"""

from __future__ import annotations

import builtins
import io
import json
import linecache
import os
import sys
import time
import traceback
import types
from typing import Any

FILENAME = "<handler>"
RESULT_FD = 3
_CO_VARARGS = 0x04  # inspect.CO_VARARGS, without importing inspect
_THIS_FILE = __file__
_PACKAGE = __package__ or ""
# Filled by warm_up() in the zygote, so that forked children skip the work (each object a child touches
# costs it a copy-on-write page fault).
_stdio: list = []
_own_modules: list[str] = []


def warm_up() -> None:
    """Prepare, once in the zygote, what every child would otherwise build for itself."""
    # FileIO on fd numbers 1 and 2 binds to whatever those numbers are when written to: the child's pipes.
    _stdio[:] = [_unbuffered(1), _unbuffered(2)]
    top = _PACKAGE.split(".")[0]
    _own_modules[:] = [name for name in sys.modules if top and (name == top or name.startswith(top + "."))]


class LambdaContext:
    """The `context` argument, with the attributes AWS Lambda's Python runtime provides."""

    function_version = "$LATEST"
    invoked_function_arn = ""
    log_group_name = ""
    log_stream_name = ""
    identity = None
    client_context = None

    def __init__(self, request_id: str, function_name: str, memory_mb: int, deadline: float) -> None:
        self.aws_request_id = request_id
        self.function_name = function_name
        self.memory_limit_in_mb = memory_mb
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(aws_request_id={self.aws_request_id!r}, function_name={self.function_name!r})"


def run(payload: dict) -> int:
    """Run the execution; returns the process exit code. Never raises."""
    try:
        _reset_stdio()
        _prepare_path(payload)
        _forget_executor_modules()
    except BaseException as exc:  # the process must still report and exit
        return _fail(f"executor could not prepare Python: {type(exc).__name__}: {exc}")
    code = payload["code"]
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    module.__dict__["__file__"] = FILENAME
    sys.modules["__main__"] = module
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(True), FILENAME)
    context = LambdaContext(
        payload["execution_id"], payload["session_id"], payload["memory_mb"], payload["deadline"]
    )
    try:
        exec(compile(code, FILENAME, "exec", dont_inherit=True), module.__dict__)
        handler = _find_handler(module.__dict__, payload.get("entrypoint"))
        value = _call(handler, payload["event"], context) if handler is not None else None
    except SystemExit as exc:
        return _exit_code(exc)
    except _MissingEntrypoint as exc:
        return _fail(str(exc))
    except BaseException as exc:  # user code may raise anything, KeyboardInterrupt included
        _print_traceback(exc)
        return _fail(_describe(exc))
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        message = f"{type(exc).__name__}: return value is not JSON serializable: {exc}"
        sys.stderr.write(message + "\n")
        return _fail(message)
    _write_result(b'{"return_value": ' + encoded.encode("utf-8") + b"}")
    return 0


def finish() -> None:
    """What a normal interpreter exit does: wait for non-daemon threads, run atexit, flush."""
    try:
        threading = sys.modules.get("threading")  # not imported: the code started no thread to wait for
        if threading is not None:
            main = threading.main_thread()
            for thread in threading.enumerate():
                if thread is not main and not thread.daemon:
                    thread.join()
        import atexit

        atexit._run_exitfuncs()
    except BaseException:  # exiting anyway
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # a closed stream: nothing to flush into
            pass


class _MissingEntrypoint(Exception):
    pass


def _unbuffered(fd: int) -> io.TextIOWrapper:
    # Unbuffered, like `python -u`: a print reaches the daemon at once, even without a newline.
    raw: Any = io.FileIO(fd, "w", closefd=False)  # TextIOWrapper takes a raw file, as `python -u` does
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", write_through=True)


def _reset_stdio() -> None:
    stdout, stderr = _stdio if _stdio else (_unbuffered(1), _unbuffered(2))
    sys.stdout = stdout
    sys.stderr = stderr
    # What `python -u` would have made them too, for code that restores the originals.
    setattr(sys, "__stdout__", stdout)  # noqa: B010 - typeshed marks these Final
    setattr(sys, "__stderr__", stderr)  # noqa: B010
    sys.argv = [FILENAME]


def _prepare_path(payload: dict) -> None:
    workspace = payload["workspace"]
    front = [payload["packages"]] if payload.get("packages") else []
    rest = [p for p in sys.path if p not in ("", workspace) and p not in front]
    sys.path[:] = front + [workspace] + rest
    # The zygote never searched these directories (its bootstrap keeps them off its path), but make sure no
    # stale directory listing survives from anywhere: files appear there between executions.
    for path in front + [workspace]:
        sys.path_importer_cache.pop(path, None)


def _forget_executor_modules() -> None:
    """Hide the executor's own package from user code (`import executor` should not find the daemon)."""
    if not _own_modules:
        warm_up()
    for name in _own_modules:
        sys.modules.pop(name, None)


def _find_handler(namespace: dict, entrypoint: str | None):
    if entrypoint:
        handler = namespace.get(entrypoint)
        if handler is None:
            raise _MissingEntrypoint(f"entrypoint {entrypoint!r} is not defined by the code")
        if not callable(handler):
            raise _MissingEntrypoint(f"entrypoint {entrypoint!r} is not callable")
        return handler
    for name in ("handler", "lambda_handler"):
        handler = namespace.get(name)
        if callable(handler):
            return handler
    return None


def _arity(handler) -> int:
    code = getattr(handler, "__code__", None)
    if isinstance(handler, types.FunctionType) and code is not None:  # the common case, cheaply
        return 2 if code.co_flags & _CO_VARARGS else min(code.co_argcount, 2)
    import inspect

    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return 2
    positional = 0
    for param in signature.parameters.values():
        if param.kind == param.VAR_POSITIONAL:
            return 2
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            positional += 1
    return min(positional, 2)


def _call(handler, event, context):
    value = handler(*(event, context)[: _arity(handler)])
    if hasattr(value, "__await__"):
        import asyncio  # the zygote has it loaded; a freshly spawned child imports it only when needed

        async def wait_for(awaitable):
            return await awaitable

        value = asyncio.run(wait_for(value))
    return value


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        if code != 0:
            _write_error(f"SystemExit: {code}")
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return _fail(f"SystemExit: {code}")


def _describe(exc: BaseException) -> str:
    try:
        message = str(exc)
    except BaseException:  # a broken __str__ must not hide the failure itself
        message = "<exception str() failed>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _print_traceback(exc: BaseException) -> None:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _THIS_FILE:
        tb = tb.tb_next  # the runner's own frames are noise to the user
    try:
        traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
    except BaseException:  # a broken __str__ must not hide the failure itself
        sys.stderr.write(f"{type(exc).__name__} (traceback unavailable)\n")


def _fail(message: str) -> int:
    _write_error(message)
    return 1


def _write_error(message: str) -> None:
    _write_result(json.dumps({"error": message}).encode("utf-8"))


def _write_result(data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(RESULT_FD, view) :]
        os.close(RESULT_FD)
    except OSError:
        pass  # the daemon stopped listening (cancelled): nothing left to tell
