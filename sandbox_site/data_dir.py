"""The data dir's permissions: 0700 for the directory, 0600 for the SQLite database and the secret key.

The data dir holds the SQLite database (API key hashes, executor tokens, sessions), the generated secret key
and every sandbox's directory; no other local user has any business in it. New installs create it 0700 and
the database 0600 (SQLite gives its -wal and -shm files the database's own mode); existing installs, made
when the directory was 0755 and the database 0644, are fixed at start-up, with a log line naming each change.

The process-wide umask is left alone on purpose: the process runtime prepares directories that the
sandbox's own unprivileged uid must read, and a 077 umask would hide them from it. A 0700 data dir already
keeps every other user out of everything below it, whatever the modes down there.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def create_private_file(path: Path, content: str) -> None:
    """Write a new file that is 0600 from its first byte (no window between write and chmod)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def secure_data_dir(data_dir: Path, sqlite_database: str | None = None) -> list[str]:
    """Make the data dir 0700 and the database, its -wal/-shm and the secret key 0600; return the changes.

    The database file is created empty (0600) when it does not exist yet, so SQLite, which would create it
    with 0644 under the usual umask, only ever opens it. Only paths this process owns are changed.
    """
    changes: list[str] = []
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _restrict(data_dir, DIR_MODE, changes)
    _restrict(data_dir / "secret_key", FILE_MODE, changes)
    if sqlite_database and sqlite_database != ":memory:" and not sqlite_database.startswith("file:"):
        database = Path(sqlite_database)
        if not database.exists() and database.parent.is_dir():
            try:
                os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
            except FileExistsError:
                pass  # another process (the worker, started alongside) made it first
        for suffix in SQLITE_SUFFIXES:
            _restrict(Path(f"{database}{suffix}"), FILE_MODE, changes)
    return changes


def _restrict(path: Path, mode: int, changes: list[str]) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid():
        return  # not ours to change (a symlinked data dir is the operator's choice)
    current = stat.S_IMODE(st.st_mode)
    if current & ~mode:
        os.chmod(path, current & mode)
        changes.append(f"{path}: mode {current:04o} -> {current & mode:04o}")


def secure_at_start() -> None:
    """Called once per process when Django is ready (web server, workers, management commands)."""
    from django.conf import settings

    database = settings.DATABASES.get("default", {})
    sqlite = str(database.get("NAME")) if database.get("ENGINE", "").endswith("sqlite3") else None
    try:
        changes = secure_data_dir(Path(settings.DATA_DIR), sqlite)
    except OSError as exc:
        logger.warning("could not restrict the data dir's permissions: %s", exc)
        return
    for change in changes:
        logger.warning("data dir was readable by other users; restricted %s", change)
