"""The daemon's command line, its token, and what it finds out about its sandbox at start-up.

Interpreters are looked up once, on the daemon's own PATH: a sandbox's image does not change under it, and a
request's `env` must not be able to point the daemon at a different `node`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

TOKEN_ENV = "SANDBOX_EXECUTOR_TOKEN"
DEFAULT_MAX_OUTPUT = 1024 * 1024
LIMIT_NAMES = ("nproc", "fsize", "nofile", "as")


class ConfigError(Exception):
    """The daemon cannot start with these options (the message says why)."""


class Config:
    """Everything the daemon was started with, resolved and checked."""

    def __init__(
        self,
        *,
        token: str,
        workspace: str,
        socket_path: str | None = None,
        tcp: tuple[str, int] | None = None,
        session_id: str = "",
        memory_mb: int = 0,
        packages: str | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
        limits: dict[str, int] | None = None,
        use_zygote: bool = True,
    ) -> None:
        self.token = token
        self.workspace = workspace
        self.socket_path = socket_path
        self.tcp = tcp
        self.session_id = session_id
        self.memory_mb = memory_mb
        self.packages = packages
        self.max_output = max_output
        self.limits = dict(limits or {})
        self.use_zygote = use_zygote
        self.python = sys.executable
        self.node = shutil.which("node") or shutil.which("nodejs")
        self.shell = shutil.which("bash") or shutil.which("sh")
        # What children inherit: the daemon's environment as it was started, minus the token.
        self.base_env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}

    def languages(self) -> dict[str, bool]:
        return {"python": True, "javascript": self.node is not None, "shell": self.shell is not None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="executor", description="Sandbox code executor daemon")
    parser.add_argument("--socket", help="listen on this Unix socket path")
    parser.add_argument("--tcp", help="also (or instead) listen on HOST:PORT")
    parser.add_argument("--workspace", required=True, help="directory executions run in")
    parser.add_argument("--token-file", help="read the bearer token from this file, then delete it")
    parser.add_argument("--session-id", default="", help="reported to handlers as the function name")
    parser.add_argument("--memory-mb", type=int, default=None, help="memory limit reported to handlers")
    parser.add_argument("--packages", help="directory put first on sys.path of Python executions")
    parser.add_argument("--max-output", type=int, default=DEFAULT_MAX_OUTPUT, help="bytes kept per stream")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE", help="per-child rlimit")
    parser.add_argument("--no-zygote", action="store_true", help="spawn every execution fresh (slower)")
    return parser


def parse_config(argv: list[str] | None = None) -> Config:
    args = _parser().parse_args(argv)
    if not args.socket and not args.tcp:
        raise ConfigError("give --socket PATH or --tcp HOST:PORT (or both)")
    token = _take_token(args.token_file)
    if args.max_output < 0:
        raise ConfigError("--max-output must be zero or more")
    workspace = os.path.realpath(args.workspace)
    try:
        os.makedirs(workspace, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot use workspace {args.workspace}: {exc}") from exc
    packages = os.path.realpath(args.packages) if args.packages else None
    memory_mb = args.memory_mb if args.memory_mb is not None else _cgroup_memory_mb()
    return Config(
        token=token,
        workspace=workspace,
        socket_path=args.socket,
        tcp=_parse_tcp(args.tcp) if args.tcp else None,
        session_id=args.session_id,
        memory_mb=memory_mb,
        packages=packages,
        max_output=args.max_output,
        limits=_parse_limits(args.limit),
        use_zygote=not args.no_zygote,
    )


def _take_token(token_file: str | None) -> str:
    """Read the token and remove every trace of it that a child could see: the file and the variable."""
    token = os.environ.pop(TOKEN_ENV, "")
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {token_file}: {exc}") from exc
        try:
            os.unlink(token_file)
        except OSError:
            pass  # a read-only mount: the sandbox's own view of it is the process backend's business
    if not token:
        raise ConfigError(f"no token: set {TOKEN_ENV} or pass --token-file; refusing to start without one")
    return token


def _parse_tcp(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--tcp wants HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _parse_limits(items: list[str]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in LIMIT_NAMES:
            raise ConfigError(
                f"--limit wants NAME=VALUE with NAME one of {', '.join(LIMIT_NAMES)}, got {item!r}"
            )
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"--limit {name} needs a whole number, got {value!r}") from None
        if number <= 0:
            raise ConfigError(f"--limit {name} must be positive")
        limits[name] = number
    return limits


def _cgroup_memory_mb() -> int:
    """The sandbox's memory limit as its cgroup says, or 0 when there is none to read."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as fh:
                raw = fh.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < (1 << 50):  # v1 reports "no limit" as a huge number
            return int(raw) // (1024 * 1024)
    return 0
