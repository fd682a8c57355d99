"""prctl(2) through ctypes (standard library only): whether /proc/<pid>/mem and environ of a process may be
read, and whether it may be ptraced, by other processes of the same uid.

Sandboxed code runs as the same uid as the executor daemon (which holds the token) and the zygote (whose
memory every Python execution starts from). A non-dumpable process's /proc entries belong to root, and the
kernel refuses ptrace and /proc/<pid>/mem to processes of the same uid that lack CAP_SYS_PTRACE: leftover
processes of an earlier execution cannot read the token or tamper with the zygote.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

PR_SET_DUMPABLE = 4
PR_SET_PDEATHSIG = 1

# Looked up once: the zygote resolves it before forking, so an execution's process makes one system call
# instead of loading libc through ctypes again (a few hundred microseconds of a fresh fork's time).
_prctl: list[Callable[..., int] | None] = []


def prctl(option: int, arg: int) -> bool:
    """prctl(option, arg, 0, 0, 0); True when the kernel took it, False off Linux or without libc."""
    if not _prctl:
        _prctl.append(_load())
    call = _prctl[0]
    if call is None:
        return False
    try:
        return call(option, arg, 0, 0, 0) == 0
    except Exception:
        return False


def set_dumpable(dumpable: bool) -> bool:
    """True when the kernel took it; False off Linux or when libc cannot be loaded."""
    return prctl(PR_SET_DUMPABLE, int(dumpable))


def _load() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except Exception:
        return None
