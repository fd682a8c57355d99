"""Admission control for new sessions: per-owner quotas and the host's memory, checked race-free.

Two limits keep one tenant from taking the machine and the machine from promising more than it has:

- per owner: at most SANDBOX_MAX_SESSIONS_PER_KEY live sessions, and their memory limits together at most
  SANDBOX_MAX_SESSION_MEMORY_PER_OWNER (429 `quota_exceeded`);
- globally: the memory limits of every live session (creating or running) stay within host memory times
  SANDBOX_MEMORY_OVERCOMMIT (503 `capacity_exhausted` with Retry-After: capacity comes back as sessions end).

The checks run inside the creating transaction, under locks, so concurrent creates in several processes
cannot all pass a check that only one of them should pass: MariaDB takes row locks (the owner's row, then
one well-known row every create locks: the content type row of SandboxSession, which exists wherever the
schema does, so no extra table or migration is needed); SQLite's IMMEDIATE transactions already serialise
every writer. The lock order is always owner, then global, so two creates never deadlock.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models import Count, Sum

from sessions_app.models import SandboxSession


class AdmissionRefused(Exception):
    """A create the limits do not allow; `code` is the API's machine code, `retry_after` seconds or None."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def format_mib(mib: float) -> str:
    return f"{mib / 1024:g} GiB" if mib >= 1024 else f"{mib:g} MiB"


@lru_cache(maxsize=1)
def _mem_total_mib() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def host_memory_mib() -> int:
    """Memory the sandboxes may use: SANDBOX_HOST_MEMORY, else this host's MemTotal (0: unknown)."""
    return settings.SANDBOX_HOST_MEMORY or _mem_total_mib()


def capacity_mib() -> int:
    """The most memory (MiB) all live sessions' limits may add up to; 0 means no global limit is known."""
    return int(host_memory_mib() * settings.SANDBOX_MEMORY_OVERCOMMIT)


def _live_memory(sessions: Any) -> int:
    return int(sessions.live().aggregate(total=Sum("memory_mb"))["total"] or 0)


def admit_session(*, owner: Any, memory_mb: int) -> None:
    """Raise AdmissionRefused unless a new session of `memory_mb` fits every limit. Call inside the
    transaction that inserts the session, so the locks taken here last until its commit."""
    # Serialises the creates of one owner: two requests racing for the owner's last slot cannot both get it.
    get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
    owned = (
        SandboxSession.objects.filter(owner_id=owner.pk).live().aggregate(n=Count("pk"), mb=Sum("memory_mb"))
    )
    live, used = owned["n"], int(owned["mb"] or 0)
    limit = settings.SANDBOX_MAX_SESSIONS_PER_KEY
    if live >= limit:
        raise AdmissionRefused("quota_exceeded", f"you have {live} live sessions; the limit is {limit}")
    owner_limit = settings.SANDBOX_MAX_SESSION_MEMORY_PER_OWNER
    if used + memory_mb > owner_limit:
        raise AdmissionRefused(
            "quota_exceeded",
            f"your live sessions have {format_mib(used)} of memory; {format_mib(memory_mb)} more would pass "
            f"your limit of {format_mib(owner_limit)}",
        )
    capacity = capacity_mib()
    if not capacity:
        return
    # Serialises every create on MariaDB (see the module docstring): the sum read next stays true until the
    # new row commits.
    # SQLite needs no lock row: its IMMEDIATE transaction already holds the only write lock.
    if connection.vendor != "sqlite":
        lock_row = {"app_label": SandboxSession._meta.app_label, "model": SandboxSession._meta.model_name}
        if ContentType.objects.select_for_update().filter(**lock_row).first() is None:
            # A freshly flushed database may lack the row: create it, then lock it like everyone else.
            ContentType.objects.get_or_create(**lock_row)
            ContentType.objects.select_for_update().filter(**lock_row).first()
    total = _live_memory(SandboxSession.objects.all())
    if total + memory_mb > capacity:
        raise AdmissionRefused(
            "capacity_exhausted",
            f"the platform is at capacity: live sessions hold {format_mib(total)} of memory and the limit is "
            f"{format_mib(capacity)} ({format_mib(host_memory_mib())} x {settings.SANDBOX_MEMORY_OVERCOMMIT:g}"
            " overcommit); try again when sessions end",
            retry_after=settings.SANDBOX_CAPACITY_RETRY_AFTER,
        )
