"""The first moments of an execution's process: own session, stdio, limits and environment, then its language.

Runs in a process forked by the zygote (`start`) or spawned fresh by the daemon (`main_from_fds`). Either way
the process ends up with exactly these descriptors and nothing else:

    0 stdin (/dev/null, or the event for shell)   1 stdout pipe   2 stderr pipe
    3 result pipe (one JSON document: {"return_value": ...} or {"error": "..."})
    4 payload (a memfd with the execution's JSON payload; JavaScript's runner reads it again)
"""

from __future__ import annotations

import json
import os
import signal
import sys

RESULT_FD = 3
PAYLOAD_FD = 4

_RLIMITS = {"nproc": "RLIMIT_NPROC", "fsize": "RLIMIT_FSIZE", "nofile": "RLIMIT_NOFILE", "as": "RLIMIT_AS"}


def start(fds: list[int]) -> None:
    """In a fresh fork of the zygote: become a session leader, put fds in place, run. Never returns."""
    try:
        os.setsid()
    except OSError:
        pass
    # The fork inherited the zygote's non-dumpable flag. The execution holds nothing secret (the zygote never
    # had the token), and tools it runs on itself (a profiler reading /proc/<pid>/ of its parent, gdb -p)
    # expect an ordinary process; a spawned child gets the same from exec.
    from .prctl import set_dumpable

    set_dumpable(True)
    _place(fds)
    _run()


def main_from_fds() -> None:
    """Entry point of a freshly spawned child; posix_spawn already did setsid and placed fds 0-4."""
    _run()


def _place(fds: list[int]) -> None:
    # Move every fd above the target range first: a received fd may itself be numbered 0-4, and dup2-ing
    # straight into place could overwrite one that has not been moved yet.
    import fcntl

    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds]
    for fd in fds:
        os.close(fd)
    for target, fd in enumerate(high):
        os.dup2(fd, target)
        os.close(fd)


def _close_from(lowest: int) -> None:
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        import resource

        os.closerange(lowest, min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536))
        return
    for name in names:
        fd = int(name)
        if fd >= lowest:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own directory fd, already closed


def _read_payload() -> dict:
    parts = []
    # Sized to the memfd (plus one byte to see its end): a fixed 1 MiB buffer would be mapped and unmapped
    # for every execution.
    size = max(os.fstat(PAYLOAD_FD).st_size + 1, 4096)
    while True:
        chunk = os.read(PAYLOAD_FD, size)
        if not chunk:
            break
        parts.append(chunk)
    return json.loads(b"".join(parts))


def apply_limits(limits: dict[str, int], cpu_seconds: int) -> None:
    import resource

    def lower(which: int, soft: int, hard: int) -> None:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            pass  # a limit we may not set is one the sandbox already holds tighter

    for name, value in limits.items():
        lower(getattr(resource, _RLIMITS[name]), value, value)
    # SIGXCPU at the soft limit, SIGKILL one second later in case the code catches SIGXCPU.
    lower(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)


def _set_environ(env: dict[str, str]) -> None:
    # Change only what differs: the zygote's environment is the daemon's, so the difference is a handful
    # of variables, and every os.environ assignment is a putenv/unsetenv.
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def report_error(message: str) -> None:
    try:
        os.write(RESULT_FD, json.dumps({"error": message}).encode())
    except OSError:
        pass


def _run() -> None:
    code = 127
    try:
        _close_from(PAYLOAD_FD + 1)
        payload = _read_payload()
        os.chdir(payload["workspace"])
        env = payload["env"]
        _set_environ(env)
        apply_limits(payload["limits"], payload["cpu_seconds"])
        language = payload["language"]
        if language != "javascript":
            # Only node's runner needs fds 3 and 4 across exec; elsewhere processes the code starts (a
            # background `sleep &`) must not hold the result pipe open.
            os.set_inheritable(RESULT_FD, False)
            os.close(PAYLOAD_FD)
        if language == "python":
            from . import pyrunner

            code = pyrunner.run(payload)  # never raises: it reports its own failures on fd 3
            pyrunner.finish()
        else:
            _exec(payload, env)
    except BaseException as exc:  # nothing above us may see an exception: we must _exit
        report_error(f"executor could not start the execution: {type(exc).__name__}: {exc}")
    finally:
        os._exit(code)


def _exec(payload: dict, env: dict) -> None:
    # Python ignores SIGPIPE and SIGXFSZ; programs we exec must get the defaults back (as subprocess does).
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    if payload["language"] == "javascript":
        os.lseek(PAYLOAD_FD, 0, os.SEEK_SET)
        argv = [payload["node"], payload["runner_js"]]
    else:
        shell = payload["shell"]
        name = os.path.basename(shell)
        if payload.get("script_path"):
            argv = [shell, payload["script_path"]]
        else:
            argv = [shell, "-c", payload["code"], name]
    try:
        os.execve(argv[0], argv, env)
    except OSError as exc:
        report_error(f"could not start {argv[0]}: {exc.strerror or exc}")
        sys.stderr.write(f"could not start {argv[0]}: {exc}\n")
