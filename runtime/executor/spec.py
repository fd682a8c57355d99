"""An execution request as POST /execute receives it: checked field by field, turned into the child's payload.

The control plane enforces the product's bounds (DESIGN.md 5a); the executor only refuses what it cannot run
(wrong types, unknown language, an entrypoint that is not an identifier, a malformed environment), with
generous ceilings so a settings override upstream never hits a second, hidden limit here.
"""

from __future__ import annotations

import json
import math
import re
import time

from .config import Config

LANGUAGES = ("python", "javascript", "shell")
MAX_TIMEOUT = 86_400.0
MAX_CODE_CHARS = 16 * 1024 * 1024
# bash gets its script with -c up to this size; beyond, from a file (one argv string is capped at 128 KiB).
INLINE_SCRIPT_MAX = 100_000
# $SANDBOX_EVENT is set only when the event fits comfortably in one environment string.
EVENT_ENV_MAX = 64 * 1024
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


class BadRequest(ValueError):
    """The request cannot be run as given (400); the message says which field and why."""


class ExecutionSpec:
    """One checked execution request."""

    def __init__(
        self,
        execution_id: str,
        language: str,
        code: str,
        event: object,
        timeout: float,
        env: dict[str, str],
        entrypoint: str | None,
    ) -> None:
        self.execution_id = execution_id
        self.language = language
        self.code = code
        self.event = event
        self.timeout = timeout
        self.env = env
        self.entrypoint = entrypoint

    @classmethod
    def parse(cls, body: object) -> ExecutionSpec:
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        execution_id = body.get("execution_id")
        if not isinstance(execution_id, str) or not _ID.match(execution_id):
            raise BadRequest("execution_id must be 1-128 characters of letters, digits and ._:-")
        language = body.get("language")
        if language not in LANGUAGES:
            raise BadRequest(f"language must be one of {', '.join(LANGUAGES)}")
        code = body.get("code")
        if not isinstance(code, str) or not code:
            raise BadRequest("code must be a non-empty string")
        if len(code) > MAX_CODE_CHARS or "\x00" in code:
            raise BadRequest("code is too long or contains a NUL character")
        timeout = body.get("timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout):
            raise BadRequest("timeout must be a number of seconds")
        if not 0 < timeout <= MAX_TIMEOUT:
            raise BadRequest(f"timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
        env = body.get("env") or {}
        if not isinstance(env, dict) or not all(_env_ok(k, v) for k, v in env.items()):
            raise BadRequest("env must map names (no '=' or NUL) to strings (no NUL)")
        entrypoint = body.get("entrypoint") or None
        if entrypoint is not None and (
            not isinstance(entrypoint, str) or not entrypoint.isidentifier() or not entrypoint.isascii()
        ):
            raise BadRequest("entrypoint must be an identifier")
        event = body.get("event")
        return cls(
            execution_id, language, code, {} if event is None else event, float(timeout), env, entrypoint
        )

    def child_env(self, config: Config) -> dict[str, str]:
        env = dict(config.base_env)
        if config.packages:
            existing = env.get("PYTHONPATH")
            env["PYTHONPATH"] = config.packages + (":" + existing if existing else "")
        env.update(self.env)
        env["SANDBOX_EXECUTION_ID"] = self.execution_id
        if self.language == "shell":
            event = json.dumps(self.event)
            if len(event) <= EVENT_ENV_MAX:
                env["SANDBOX_EVENT"] = event
        return env

    def payload(self, config: Config, runner_js: str, script_path: str | None) -> dict:
        """What the child reads from its payload fd (child.py, pyrunner.py, runner.js)."""
        return {
            "execution_id": self.execution_id,
            "session_id": config.session_id,
            "language": self.language,
            "code": self.code,
            "event": self.event,
            "entrypoint": self.entrypoint,
            "memory_mb": config.memory_mb,
            "deadline": time.time() + self.timeout,
            "workspace": config.workspace,
            "packages": config.packages,
            "env": self.child_env(config),
            "limits": config.limits,
            "cpu_seconds": math.ceil(self.timeout) + 1,
            "node": config.node,
            "runner_js": runner_js,
            "shell": config.shell,
            "script_path": script_path,
        }

    def missing_interpreter(self, config: Config) -> str | None:
        if self.language == "javascript" and config.node is None:
            return "javascript is not available in this sandbox: node not found"
        if self.language == "shell" and config.shell is None:
            return "shell is not available in this sandbox: bash not found"
        return None


def _env_ok(name: object, value: object) -> bool:
    return (
        isinstance(name, str)
        and isinstance(value, str)
        and bool(name)
        and "=" not in name
        and "\x00" not in name
        and "\x00" not in value
    )
