"""The rule for a sandbox's environment variables, in one place: the API, templates and every backend use it.

A sandbox's executor starts with the session's variables (its executions inherit its environment), so no
variable may steer how the executor itself loads or where it finds things: the dynamic linker's `LD_*`,
glibc's module paths, `PATH` and `HOME` (set by the backend), and the executor's token. `PYTHON*` variables
are allowed for executions; the executor ignores them (`python -E`). Names are shell-style identifiers;
values are text without NUL bytes, bounded in size, as are the number of variables one request may set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# What every sandboxed or confined process gets as PATH and LANG, whatever the backend.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LANG = "C.UTF-8"
NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
RESERVED = frozenset({"SANDBOX_EXECUTOR_TOKEN", "HOME", "PATH", "GCONV_PATH", "LOCPATH", "HOSTALIASES"})
RESERVED_PREFIXES = ("LD_",)
# Bounds of what one request (a session's env_vars, a template's default_env_vars) may set.
MAX_VARIABLES = 100
MAX_VALUE_CHARS = 32768


def name_allowed(name: str) -> bool:
    return bool(NAME.match(name)) and name not in RESERVED and not name.startswith(RESERVED_PREFIXES)


def refusal(env: Mapping[str, object], *, max_variables: int | None = MAX_VARIABLES) -> str | None:
    """Why `env` may not be a sandbox's environment, as one sentence; None when it may.

    `max_variables=None` skips the count: a sandbox's environment merges a template's defaults with the
    session's own variables, each bounded where it was accepted.
    """
    if not isinstance(env, Mapping):
        return "variables are an object of NAME: value"
    if max_variables is not None and len(env) > max_variables:
        return f"at most {max_variables} variables"
    bad = sorted(str(name) for name in env if not isinstance(name, str) or not name_allowed(name))
    if bad:
        return f"not allowed as variable names: {', '.join(bad[:5])}"
    for name, value in env.items():
        if not isinstance(value, str):
            return f"variable {name!r} is not text"
        if "\0" in value:
            return f"variable {name!r} contains a NUL byte"
        if len(value) > MAX_VALUE_CHARS:
            return f"variable {name!r} is longer than {MAX_VALUE_CHARS} characters"
    return None


def check_env(env: Mapping[str, str]) -> dict[str, str]:
    """A sandbox's variables as a plain dict; ValueError naming the first problem (backends, at create)."""
    clean = {str(name): str(value) for name, value in env.items()}
    problem = refusal(clean, max_variables=None)
    if problem:
        raise ValueError(f"environment refused: {problem}")
    return clean
