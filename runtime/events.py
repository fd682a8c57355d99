"""What an execution streams back, typed: the executor's NDJSON events (DESIGN.md §5) as frozen dataclasses.

The wire format is parsed here, once, by the executor client; every backend yields these events and the apps
consume them, so no one else reads the executor's JSON. An execution is `ExecutionStarted`, any number of
`OutputChunk`s, then exactly one `ExecutionResult`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, get_args

Stream = Literal["stdout", "stderr"]
ResultStatus = Literal["completed", "failed", "timeout", "crashed", "cancelled"]
Change = Literal["created", "modified", "deleted"]

STREAMS: tuple[Stream, ...] = get_args(Stream)
RESULT_STATUSES: tuple[ResultStatus, ...] = get_args(ResultStatus)
CHANGES: tuple[Change, ...] = get_args(Change)


@dataclass(frozen=True)
class ExecutionStarted:
    """The execution's process is running; `pid` is its id inside the sandbox (None when it never got one)."""

    execution_id: str
    pid: int | None = None


@dataclass(frozen=True)
class OutputChunk:
    """A piece of what the execution printed, in the order it printed it."""

    stream: Stream
    data: str


@dataclass(frozen=True)
class FileChange:
    """A workspace file the execution created, modified or deleted.

    `size` is in bytes as the executor saw it when the execution ended; None for deleted files, and for
    executors older than the size field.
    """

    path: str
    change: Change
    size: int | None = None


@dataclass(frozen=True)
class ExecutionMetrics:
    """What the execution cost, and whether its output was cut (each stream keeps at most the executor's cap;
    `*_bytes` count everything printed, kept or dropped)."""

    duration_ms: float | None = None
    cpu_time_ms: float | None = None
    peak_memory_mb: float | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_bytes: int | None = None
    stderr_bytes: int | None = None


@dataclass(frozen=True)
class ExecutionResult:
    """How the execution ended: always the last event.

    `files` are the workspace changes in the executor's order (created, modified, deleted, each sorted by
    path); `files_truncated` means the workspace was too large to diff, so `files` is empty rather than
    guessed.
    """

    execution_id: str
    status: ResultStatus
    exit_code: int | None = None
    return_value: Any = None
    error: str | None = None
    metrics: ExecutionMetrics = field(default_factory=ExecutionMetrics)
    files: tuple[FileChange, ...] = ()
    files_truncated: bool = False


ExecutionEvent: TypeAlias = ExecutionStarted | OutputChunk | ExecutionResult


def parse_event(raw: Any) -> ExecutionEvent | None:
    """One decoded NDJSON line as a typed event; None for an event type this side does not know (a newer
    executor may add kinds). ValueError when the line breaks the contract."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"an event must be a JSON object, not {type(raw).__name__}")
    kind = raw.get("type")
    if kind in STREAMS:
        return OutputChunk(stream=kind, data=_typed(raw, "data", str, ""))
    if kind == "started":
        return ExecutionStarted(
            execution_id=_typed(raw, "execution_id", str, ""), pid=_typed(raw, "pid", int, None)
        )
    if kind == "result":
        return _parse_result(raw)
    if not isinstance(kind, str):
        raise ValueError("an event must have a string `type`")
    return None


def _parse_result(raw: Mapping[str, Any]) -> ExecutionResult:
    status = raw.get("status")
    if status not in RESULT_STATUSES:
        raise ValueError(f"result status {status!r} is not one of {', '.join(RESULT_STATUSES)}")
    files, files_truncated = _parse_files(raw.get("files"))
    return ExecutionResult(
        execution_id=_typed(raw, "execution_id", str, ""),
        status=status,
        exit_code=_typed(raw, "exit_code", int, None),
        return_value=raw.get("return_value"),
        error=_typed(raw, "error", str, None),
        metrics=ExecutionMetrics(
            duration_ms=_number(raw, "duration_ms"),
            cpu_time_ms=_number(raw, "cpu_time_ms"),
            peak_memory_mb=_number(raw, "peak_memory_mb"),
            stdout_truncated=_typed(raw, "stdout_truncated", bool, False),
            stderr_truncated=_typed(raw, "stderr_truncated", bool, False),
            stdout_bytes=_typed(raw, "stdout_bytes", int, None),
            stderr_bytes=_typed(raw, "stderr_bytes", int, None),
        ),
        files=files,
        files_truncated=files_truncated,
    )


def _parse_files(raw: Any) -> tuple[tuple[FileChange, ...], bool]:
    """`{created: [path], modified: [path], deleted: [path], sizes?: {path: bytes}, truncated?: true}`."""
    if raw is None:
        return (), False
    if not isinstance(raw, Mapping):
        raise ValueError("result `files` must be an object")
    sizes = _typed(raw, "sizes", Mapping, {})
    changes = []
    for change in CHANGES:
        paths = _typed(raw, change, list, [])
        for path in paths:
            if not isinstance(path, str):
                raise ValueError(f"result `files.{change}` must hold paths")
            size = sizes.get(path) if change != "deleted" else None
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                raise ValueError(f"result `files.sizes` has a bad size for {path!r}")
            changes.append(FileChange(path=path, change=change, size=size))
    return tuple(changes), _typed(raw, "truncated", bool, False)


def _typed(raw: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = raw.get(key)
    if value is None:
        return default
    # bool is an int to Python, not to JSON: `"exit_code": true` is as wrong as `"exit_code": "1"`.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"event field `{key}` must be {kind.__name__}, not {type(value).__name__}")
    return value


def _number(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"event field `{key}` must be a number, not {type(value).__name__}")
    return float(value)
