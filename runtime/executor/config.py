"""The daemon's command line, its token, and what it finds out about its sandbox at start-up.

Interpreters are looked up once, on the daemon's own PATH: a sandbox's image does not change under it, and a
request's `env` must not be able to point the daemon at a different `node`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import shutil
import sys

TOKEN_ENV = "SANDBOX_EXECUTOR_TOKEN"
_SHA256_HEX = re.compile(r"\A[0-9a-fA-F]{64}\Z")
DEFAULT_MAX_OUTPUT = 1024 * 1024
LIMIT_NAMES = ("nproc", "fsize", "nofile", "as")


class ConfigError(Exception):
    """The daemon cannot start with these options (the message says why)."""


class Config:
    """Everything the daemon was started with, resolved and checked."""

    def __init__(
        self,
        *,
        token: str = "",
        token_sha256: bytes | None = None,
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
        # Only the SHA-256 of the token is kept: a request is admitted when the hash of its bearer token
        # matches (compared in constant time), so a backend may start the daemon with the hash alone.
        self.token_sha256 = token_sha256 if token_sha256 is not None else hash_token(token)
        if len(self.token_sha256) != 32:
            raise ConfigError("the token hash must be 32 bytes (SHA-256)")
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

    def admits(self, bearer: str) -> bool:
        return hmac.compare_digest(hash_token(bearer), self.token_sha256)

    def languages(self) -> dict[str, bool]:
        return {"python": True, "javascript": self.node is not None, "shell": self.shell is not None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="executor", description="Sandbox code executor daemon")
    parser.add_argument("--socket", help="listen on this Unix socket path")
    parser.add_argument("--tcp", help="also (or instead) listen on HOST:PORT")
    parser.add_argument("--workspace", required=True, help="directory executions run in")
    parser.add_argument("--token-file", help="read the bearer token from this file, then delete it")
    parser.add_argument(
        "--token-sha256",
        metavar="HEX",
        help="admit the bearer token with this SHA-256 (64 hex digits); the token itself is never given",
    )
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
    if args.token_sha256 is not None:
        if not _SHA256_HEX.match(args.token_sha256):
            raise ConfigError("--token-sha256 wants the 64 hex digits of a SHA-256")
        if args.token_file or os.environ.get(TOKEN_ENV):
            raise ConfigError(f"give one of --token-sha256, --token-file, {TOKEN_ENV}")
        token, token_sha256 = "", bytes.fromhex(args.token_sha256)
    else:
        token, token_sha256 = _take_token(args.token_file), None
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
        token_sha256=token_sha256,
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


def hash_token(token: str) -> bytes:
    """The SHA-256 of a bearer token (its UTF-8 bytes), as compared by `Config.admits`."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


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
        raise ConfigError(
            f"no token: set {TOKEN_ENV} or pass --token-file or --token-sha256; refusing to start without one"
        )
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
