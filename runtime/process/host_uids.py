"""Host uids for process-backend sessions: one unprivileged uid (and gid of the same number) per live session.

Why per session: code that gets out of its sandbox's namespaces (a kernel bug, a mistake in the mount set)
is then an ordinary unprivileged user that owns nothing but its own session's files, cannot signal or
ptrace another session's processes and cannot read their /proc entries. Never uid 0, so nothing a sandbox
does is done as host root (a uid-0 sandbox could, for one, write /proc/sys/kernel/core_pattern and have the
kernel run a program of its choice as root).

Allocation is a claim on a lock file: `<dir>/<uid>`, created with O_CREAT|O_EXCL and holding the session
id. O_EXCL is atomic on local file systems, so the web process and every worker can allocate at the same
time without talking to each other, and the claims outlive a control-plane restart. The search starts at a
point derived from the session id (so a retried create usually gets the same uid back) and walks the range.
A claim is released only once the session's processes are gone (teardown kills its cgroup first), so two
live sessions never share a uid.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re

DEFAULT_RANGE = (200_000, 299_999)
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class UidRangeError(ValueError):
    """A uid range setting that cannot be used (malformed, reversed, or touching system uids)."""


def parse_range(text: str) -> tuple[int, int]:
    """Parse "200000-299999" into (200000, 299999); ranges touching uid 0 or host accounts are refused."""
    match = _RANGE.match(text or "")
    if not match:
        raise UidRangeError(f"uid range {text!r} is not FIRST-LAST, e.g. 200000-299999")
    first, last = int(match.group(1)), int(match.group(2))
    if first > last:
        raise UidRangeError(f"uid range {text!r} ends before it starts")
    # Below 65536 live the host's own accounts (and nobody, 65534); above 2^32-2 uids do not exist.
    if first < 65536 or last > 0xFFFFFFFE:
        raise UidRangeError(f"uid range {text!r} must lie within 65536-4294967294")
    return first, last


class UidAllocator:
    """Claims and releases per-session host uids under `directory` (made 0700 on first use)."""

    def __init__(self, directory: str, uid_range: tuple[int, int] = DEFAULT_RANGE) -> None:
        self.directory = directory
        self.first, self.last = uid_range

    def claim(self, session_id: str) -> int:
        """A uid no other live session holds, recorded as this session's; OSError when the range is full."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        size = self.last - self.first + 1
        start = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big") % size
        for step in range(size):
            uid = self.first + (start + step) % size
            try:
                fd = os.open(self._path(uid), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(session_id)
            return uid
        raise OSError(errno.EAGAIN, f"every host uid in {self.first}-{self.last} is taken by a live session")

    def owner(self, uid: int) -> str | None:
        """The session holding `uid`, None when it is free."""
        try:
            with open(self._path(uid), encoding="ascii") as fh:
                return fh.read().strip()
        except (OSError, ValueError):
            return None

    def release(self, uid: int, session_id: str) -> None:
        """Give `uid` back, if `session_id` holds it (a stale call must not free another session's uid)."""
        if self.owner(uid) == session_id:
            try:
                os.unlink(self._path(uid))
            except FileNotFoundError:
                pass

    def find(self, session_id: str) -> list[int]:
        """Every uid `session_id` holds: for a create that died before recording its uid."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [int(name) for name in names if name.isdigit() and self.owner(int(name)) == session_id]

    def _path(self, uid: int) -> str:
        return os.path.join(self.directory, str(uid))


def drop_command(uid: int, gid: int) -> list[str]:
    """The argv prefix that runs the rest as `uid`:`gid` with no supplementary groups and no way back up.

    setpriv (util-linux) is exec'd by the session's supervisor shell after the shell joined the sandbox's
    cgroups as root. Going from root to a non-zero uid clears every capability; --no-new-privs also keeps a
    setuid binary from regaining any (bubblewrap is not setuid here; it makes its namespaces unprivileged).
    """
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--no-new-privs",
        "--",
    ]
