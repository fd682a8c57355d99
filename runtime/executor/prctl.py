"""prctl(2) through ctypes (standard library only): whether /proc/<pid>/mem and environ of a process may be
read, and whether it may be ptraced, by other processes of the same uid.

Sandboxed code runs as the same uid as the executor daemon (which holds the token) and the zygote (whose
memory every Python execution starts from). A non-dumpable process's /proc entries belong to root, and the
kernel refuses ptrace and /proc/<pid>/mem to processes of the same uid that lack CAP_SYS_PTRACE: leftover
processes of an earlier execution cannot read the token or tamper with the zygote.
"""

from __future__ import annotations

import sys

PR_SET_DUMPABLE = 4


def set_dumpable(dumpable: bool) -> bool:
    """True when the kernel took it; False off Linux or when libc cannot be loaded."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0) == 0
    except Exception:
        return False
